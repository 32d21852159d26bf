"""A fiche with its full details for work on its calls (transcribing, auditing), for a user or for the
system: the one way every app gets it, with the user's scope checked on what we hold before any CRM
call or cache write."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

from accounts.grants import Action
from accounts.permissions import can_access
from core.exceptions import DomainRuleError
from core.limits import LimitBusy, throttle_crm_requests
from core.locks import LockNotAcquired
from fiches.clients import crm
from fiches.exceptions import CrmUnavailable, FicheNotFound, fiche_refused
from fiches.models import FicheCache
from fiches.selectors import fiche_in_scope
from fiches.services.details import fiche_ensure_details

if TYPE_CHECKING:
    from accounts.models import User


def fiche_with_details(
    *, fiche_id: str, user: User | None = None, key: str = "fiches", action: Action = "read"
) -> FicheCache:
    """The fiche with its full details (fetched from the CRM when not cached, under the user's CRM
    throttle). With a ``user``, it must be in their ``key`` scope for ``action``, checked on what we
    hold before any CRM call or cache write (``fiches.selectors.fiche_in_scope``: only a user with ALL
    scope may make us fetch an uncached fiche; for anyone else it is refused exactly as a foreign one),
    and again after a fetch (the CRM may have moved it). ``user=None``: the system's own work (a batch,
    an automation run, an audit's orchestrator) whose scope was checked when it was asked for.
    404 ``fiche_not_found`` after a CRM miss; 503 when the CRM is down and nothing is cached."""
    fiche_id = str(fiche_id).strip()
    if user is not None:
        row = fiche_in_scope(user, key, fiche_id, action=action)
    else:
        row = FicheCache.objects.filter(fiche_id=fiche_id).first()
    if row is None or row.details_fetched_at is None:
        if user is not None:
            throttle_crm_requests(user)
        try:
            row = fiche_ensure_details(fiche_id=fiche_id, wait=settings.CRM_TIMEOUT_SECONDS + 5, rate_wait=5.0).row
        except crm.CrmNotFound:
            raise FicheNotFound(
                f"Fiche {fiche_id} does not exist in the CRM.", details={"fiche_id": fiche_id}
            ) from None
        except (crm.CrmError, LockNotAcquired, LimitBusy) as exc:
            if row is None:
                raise CrmUnavailable(details={"fiche_id": fiche_id, "reason": str(exc)}) from None
            # The sales list gave its recordings; go on with those.
        if user is not None and not can_access(user, key, row, action=action):
            raise fiche_refused(row.fiche_id, key)
    return row


def require_not_erased(fiche: FicheCache, *, lock: bool = True) -> None:
    """422 ``fiche_erased`` when the prospect's personal data was erased on request (``privacy.erasure``): the
    sale is never transcribed, audited or discussed again. With ``lock`` (inside a transaction), the flag is
    read under the fiche's row lock: a request racing an erasure waits for it, then sees it."""
    rows = FicheCache.objects.filter(pk=fiche.pk)
    if lock:
        rows = rows.select_for_update(no_key=True)
    if rows.values_list("erased_at", flat=True).first() is not None:
        raise DomainRuleError(
            "The personal data of this sale was erased on request: it cannot be transcribed, audited or "
            "discussed again.",
            code="fiche_erased",
            details={"fiche_id": fiche.fiche_id},
        )
