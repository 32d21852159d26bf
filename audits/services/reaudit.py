"""Re-auditing the past beside the old verdicts: every selected fiche gets a new audit with the version asked
for; the previous audits stay as they were, the fiche's last one linked as the new one's ``predecessor``. A
re-audit is an audit batch (the generic batches: progress, ``batch.*`` events, each fiche started exactly
once, the reconciler), counted against the user's batch budget."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.permissions import scope_queryset
from audits.models import Audit, AuditPurpose, AuditStatus
from audits.services import configs
from audits.services.counting import counting_changed
from audits.services.request import require_llm_configured, runnable_config
from core.exceptions import ConflictError, InvalidInput
from fiches.models import FicheCache

if TYPE_CHECKING:
    from accounts.models import User
    from batches.models import Batch


def fiches_audited_between(*, user: User, config_id: int, date_from: date, date_to: date) -> list[str]:
    """The fiches sold in [date_from, date_to] (in the user's audits write scope) that have a completed audit
    of the config: what a re-audit of that range re-judges."""
    audited = Audit.objects.filter(config_id=config_id, purpose=AuditPurpose.PRODUCTION, status=AuditStatus.COMPLETED)
    fiches = scope_queryset(
        FicheCache.objects.filter(sales_date__gte=date_from, sales_date__lte=date_to, audits__in=audited),
        user,
        "audits",
        action="write",
    )
    return list(fiches.order_by("sales_date", "fiche_id").values_list("fiche_id", flat=True).distinct())


def reaudit_create(
    *,
    user: User,
    config_id: int,
    version_number: int | None,
    fiche_ids: list[str] | None,
    date_from: date | None,
    date_to: date | None,
    tools_mode: bool,
) -> tuple[Batch, int]:
    """The re-audit batch and its size. A draft version is refused: activate it first (an evaluation runs
    drafts)."""
    from batches import services as batches

    require_llm_configured()
    config = runnable_config(config_id)
    version = configs.version_get(config_id, version_number) if version_number is not None else config.current_version
    assert version is not None
    if version.is_draft:
        raise ConflictError(
            f"Version {version.version} is a draft: evaluate it, activate it, then re-audit with it.",
            code="version_is_draft",
            details={"audit_config_id": config_id, "version": version.version},
        )
    if not fiche_ids:
        if date_from is None or date_to is None:
            raise InvalidInput("Name the fiches (fiche_ids) or a range of sales dates (date_from, date_to).")
        fiche_ids = fiches_audited_between(user=user, config_id=config_id, date_from=date_from, date_to=date_to)
        if not fiche_ids:
            raise ConflictError(
                "No fiche of that range in your scope has a completed audit of this config.",
                code="nothing_to_reaudit",
                details={"date_from": date_from.isoformat(), "date_to": date_to.isoformat()},
            )
    batch = batches.batch_create(
        user=user,
        operation_type="audit",
        fiche_ids=fiche_ids,
        options={
            "audit_config_id": config_id,
            "tools_mode": tools_mode,
            "reaudit": True,
            "version_id": version.pk,
            "version": version.version,
        },
        max_items=settings.AUDIT_BATCH_MAX,
        permission="audits",
        spend_kind="batch",
    )
    return batch, batch.total


def audit_pin(*, audit: Audit, user: User, pin: bool) -> Audit:
    """A reviewer pins the audit that counts for its fiche and config (any other pin of theirs is lifted), or
    unpins it (the latest completed audit of the active version counts again)."""
    if pin and (audit.purpose != AuditPurpose.PRODUCTION or audit.status != AuditStatus.COMPLETED):
        raise ConflictError(
            "Only a completed production audit can be pinned.",
            code="audit_not_pinnable",
            details={"audit_id": str(audit.pk), "status": audit.status, "purpose": audit.purpose},
        )
    with transaction.atomic():
        Audit.objects.select_for_update().filter(fiche_id=audit.fiche_id, config_id=audit.config_id).exclude(
            pinned_at=None
        ).update(pinned_at=None, pinned_by=None)
        if pin:
            Audit.objects.filter(pk=audit.pk).update(pinned_at=timezone.now(), pinned_by=user)
        counting_changed(config_id=audit.config_id, fiche_id=audit.fiche_id)
    audit.refresh_from_db()
    return audit
