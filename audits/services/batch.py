"""Audit batches: what an audit batch item does (the generic batches run it)."""

from __future__ import annotations

import logging
from typing import Any

from audits.models import Audit, AuditConfigVersion, AuditPurpose, AuditStatus
from audits.services.request import audit_request_or_reuse
from core.exceptions import InvalidInput
from fiches.models import FicheCache

logger = logging.getLogger("audits.batch")


# --- Batches -----------------------------------------------------------------------------------------


def config_for_fiche(fiche: FicheCache, config_id: int | None) -> int:
    """The config a batch item runs: the batch's, else the one of the fiche's product."""
    if config_id is not None:
        return config_id
    from products.selectors import audit_config_for_produit

    found = audit_config_for_produit(fiche.produit)
    if found is None:
        raise InvalidInput(
            f"No audit config given and none for the fiche's product ({fiche.produit or 'unknown'}).",
            code="no_audit_config",
            details={"fiche_id": fiche.fiche_id, "produit": fiche.produit},
        )
    return found


def start_batch_item(batch: Any, item: Any) -> str | None:
    """Audit one fiche of a batch (the requester's scope as it was when the batch was made). An
    identical audit already going (a user's, automation's, another batch's) is followed: the item's
    ref is that audit, and it ends when that audit ends (``_tell_batch``, or the reconciler)."""
    from batches.services import batch_item_fiche

    fiche = batch_item_fiche(batch, item, app="audits")
    config_id = config_for_fiche(fiche, batch.options.get("audit_config_id"))
    version, predecessor = None, None
    if batch.options.get("reaudit"):  # a re-audit: the version asked for, beside the fiche's last audit
        version = AuditConfigVersion.objects.get(pk=batch.options["version_id"])
        predecessor = (
            Audit.objects.filter(
                fiche=fiche, config_id=config_id, purpose=AuditPurpose.PRODUCTION, status=AuditStatus.COMPLETED
            )
            .exclude(batch_id=batch.pk)
            .order_by("-completed_at", "-created_at")
            .first()
        )
    audit = audit_request_or_reuse(
        fiche=fiche,
        config_id=config_id,
        tools_mode=bool(batch.options.get("tools_mode", batch.options.get("use_rlm"))),
        user=batch.requested_by,
        batch_id=str(batch.pk),
        version=version,
        predecessor_id=str(predecessor.pk) if predecessor is not None else None,
    ).audit
    return str(audit.pk)


def batch_items_waiting(ref_ids: list[str]) -> bool:
    """Whether any of these audits waits for the daily LLM budget (its batch then waits as long)."""
    return Audit.objects.filter(pk__in=ref_ids, status=AuditStatus.WAITING_BUDGET).exists()


def batch_item_state(item: Any) -> tuple[bool, str | None] | None:
    """The batch reconciler's view of an item: its audit's outcome once it ended."""
    audit = Audit.objects.filter(pk=item.ref_id).only("status", "error").first()
    if audit is None:
        return False, "its audit is gone"
    if not audit.is_terminal:
        return None
    return audit.status == AuditStatus.COMPLETED, audit.error
