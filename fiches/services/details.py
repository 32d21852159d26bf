"""Fiche details: from the cache when complete, else from the CRM by id (one fetch per fiche at
a time, forced refreshes throttled per fiche), persisted, and returned in the gateway's shape."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone

from accounts.permissions import can_access
from core.limits import LimitBusy, throttle_crm_requests
from core.locks import LockNotAcquired, redis_lock
from fiches import selectors
from fiches.clients import crm
from fiches.exceptions import CrmBusy, CrmUnavailable, FicheBusy, FicheNotFound, fiche_refused
from fiches.models import FicheCache
from fiches.services.cache import fiche_details_persist
from fiches.services.revalidation import crm_rate_limiter

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("fiches.details")


def _cooldown() -> timedelta:
    return timedelta(milliseconds=settings.FICHE_FORCE_REFRESH_COOLDOWN_MS)


def next_refresh_allowed_at(row: FicheCache | None) -> datetime | None:
    if row is None or row.details_fetched_at is None:
        return None
    return row.details_fetched_at + _cooldown()


@dataclass(frozen=True)
class DetailsOutcome:
    row: FicheCache
    fetched: bool  # the CRM was called and the result persisted
    refresh_skipped: bool = False  # a forced refresh inside the cooldown


def fiche_ensure_details(
    *, fiche_id: str, force_refresh: bool = False, wait: float = 0.0, rate_wait: float = 1.0
) -> DetailsOutcome:
    """Make sure the fiche's full details are cached; fetch them from the CRM when missing, or when
    forced and outside the cooldown. One fetch per fiche at a time (Redis lock; ``wait`` seconds),
    within the global CRM rate like every CRM call (waiting up to ``rate_wait`` seconds).

    Raises ``crm.CrmError`` subclasses, ``LockNotAcquired`` and ``LimitBusy``.
    """
    fiche_id = str(fiche_id).strip()
    lock_ttl = settings.CRM_TIMEOUT_SECONDS + crm.CONNECT_TIMEOUT_SECONDS + 30
    with redis_lock(f"fiche-fetch:{fiche_id}", timeout=lock_ttl, wait=wait):
        row = selectors.fiche_row(fiche_id)  # re-read: another holder may have just fetched it
        if row is not None and row.details_fetched_at is not None:
            if not force_refresh:
                return DetailsOutcome(row=row, fetched=False)
            allowed_at = next_refresh_allowed_at(row)
            if allowed_at is not None and timezone.now() < allowed_at:
                logger.info("fiche_refresh_skipped_cooldown", extra={"fiche_id": fiche_id, "until": allowed_at})
                return DetailsOutcome(row=row, fetched=False, refresh_skipped=True)
        crm_rate_limiter().acquire(max_wait=rate_wait)
        envelope = crm.fetch_fiche_details(fiche_id)
        row = fiche_details_persist(envelope=envelope)
        logger.info("fiche_details_fetched", extra={"fiche_id": fiche_id, "forced": force_refresh})
        return DetailsOutcome(row=row, fetched=True)


def _check_scope(user: User, row: FicheCache) -> None:
    """Again after a fetch: the CRM may have moved the fiche to another group or agent."""
    if not can_access(user, "fiches", row):
        raise fiche_refused(row.fiche_id, "fiches")


def fiche_get_for_user(*, user: User, fiche_id: str, refresh: bool = False, include_mail_devis: bool = False) -> dict:
    """The API's view of one fiche: ``{success, message, cle, fiche, meta}``.

    Scope is checked on what we hold before any CRM call or cache write (``selectors.fiche_in_scope``: an
    uncached fiche is fetched only for a user with ALL scope; for anyone else it is refused as a foreign
    one would be). CRM down: the cached copy with ``meta.stale`` or, with nothing cached, 503.
    """
    fiche_id = str(fiche_id).strip()
    row = selectors.fiche_in_scope(user, "fiches", fiche_id)
    stale_reason = None
    fetched = refresh_skipped = False
    if row is None or row.details_fetched_at is None or refresh:
        throttle_crm_requests(user)
        try:
            outcome = fiche_ensure_details(
                fiche_id=fiche_id, force_refresh=refresh, wait=settings.CRM_TIMEOUT_SECONDS + 5, rate_wait=5.0
            )
            row, fetched, refresh_skipped = outcome.row, outcome.fetched, outcome.refresh_skipped
        except crm.CrmNotFound:
            raise FicheNotFound(
                f"Fiche {fiche_id} does not exist in the CRM.", details={"fiche_id": fiche_id}
            ) from None
        except crm.CrmError as exc:
            if row is None:
                raise CrmUnavailable(details={"fiche_id": fiche_id, "reason": str(exc)}) from None
            stale_reason = str(exc)
            logger.warning("fiche_served_stale", extra={"fiche_id": fiche_id, "error": stale_reason})
        except LockNotAcquired:
            if row is None:
                raise FicheBusy(details={"fiche_id": fiche_id}) from None
            stale_reason = "another fetch of this fiche is in progress"
        except LimitBusy as exc:
            if row is None:
                raise CrmBusy(details={"fiche_id": fiche_id, "retry_after": math.ceil(exc.retry_after)}) from None
            stale_reason = "the CRM call rate is saturated"
        if fetched:
            _check_scope(user, row)
    payload = selectors.fiche_payload(row, include_mail_devis=include_mail_devis)
    allowed_at = next_refresh_allowed_at(row)
    payload["meta"] = {
        "source": "crm" if fetched else "cache",
        "hasDetails": row.details_fetched_at is not None,
        "stale": stale_reason is not None,
        "staleReason": stale_reason,
        "refreshSkipped": refresh_skipped,
        "nextRefreshAllowedAt": allowed_at.isoformat() if allowed_at else None,
        "detailsFetchedAt": row.details_fetched_at.isoformat() if row.details_fetched_at else None,
        "lastRevalidatedAt": row.last_revalidated_at.isoformat() if row.last_revalidated_at else None,
    }
    return payload
