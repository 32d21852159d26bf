"""The audit request: a pending audit of a fiche with a config's current version (or the identical one
still going), its orchestrator sent after commit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from audits.models import (
    Audit,
    AuditConfig,
    AuditConfigVersion,
    AuditPurpose,
    AuditStatus,
)
from core.exceptions import (
    ConflictError,
    DependencyUnavailable,
    InvalidInput,
)
from fiches.models import FicheCache
from fiches.services.access import fiche_with_details, require_not_erased

if TYPE_CHECKING:
    from accounts.models import User

from core.dispatch import dispatch_on_commit

logger = logging.getLogger("audits.request")


# --- The request -------------------------------------------------------------------------------


def require_llm_configured() -> None:
    if not (settings.LLM_API_KEY or "").strip():
        raise DependencyUnavailable(
            "The LLM is not configured: set LLM_API_KEY (and LLM_BASE_URL).", details={"setting": "LLM_API_KEY"}
        )


def fiche_for_audit(*, user: User | None, fiche_id: str, action: str = "write") -> FicheCache:
    """The fiche (details fetched when missing, under the user's CRM throttle), in ``user``'s
    ``audits`` scope (checked before any CRM call when the fiche is cached, and after)."""
    return fiche_with_details(
        fiche_id=fiche_id, user=user, key="audits", action="read" if action == "read" else "write"
    )


ACTIVE_AUDIT_STATUSES = (
    AuditStatus.PENDING,
    AuditStatus.WAITING_TRANSCRIPTION,
    AuditStatus.WAITING_BUDGET,
    AuditStatus.RUNNING,
)


@dataclass(frozen=True)
class AuditRequested:
    audit: Audit
    reused: bool  # an identical audit was already pending / waiting / running: this is it


def runnable_config(config_id: int) -> AuditConfig:
    """The config to run: 400 ``audit_config_not_found`` (or without a version), 409 inactive."""
    config = AuditConfig.objects.select_related("current_version").filter(pk=config_id).first()
    if config is None or config.current_version is None:
        raise InvalidInput(
            f"No audit config {config_id}.", code="audit_config_not_found", details={"audit_config_id": config_id}
        )
    if not config.is_active:
        raise ConflictError(
            f"Audit config {config_id} is inactive.",
            code="audit_config_inactive",
            details={"audit_config_id": config_id},
        )
    return config


def audit_request(
    *,
    fiche: FicheCache,
    config_id: int,
    tools_mode: bool = False,
    user: User | None = None,
    batch_id: str | None = None,
) -> Audit:
    """The audit of ``fiche`` with the config's current version: a new pending one (its orchestrator
    runs after commit), or the identical one still going (see ``audit_request_or_reuse``)."""
    return audit_request_or_reuse(
        fiche=fiche, config_id=config_id, tools_mode=tools_mode, user=user, batch_id=batch_id
    ).audit


def audit_request_or_reuse(
    *,
    fiche: FicheCache,
    config_id: int,
    tools_mode: bool = False,
    user: User | None = None,
    batch_id: str | None = None,
    version: AuditConfigVersion | None = None,
    evaluation_id: str | None = None,
    predecessor_id: str | None = None,
) -> AuditRequested:
    """A pending audit of ``fiche`` with the config's current version (or ``version``: a re-audit's, an
    evaluation's); its orchestrator runs after commit. An identical audit (same fiche, config version, mode
    and evaluation) still pending, waiting for its transcripts or running is returned instead (``reused``),
    whoever asked for it: one request per (fiche, version, mode, evaluation) at a time decides (a
    transaction-scoped advisory lock), so concurrent identical requests make one audit. A reused audit keeps
    its own ``batch_id``: a batch item that follows it ends with it (``batch_ref_done``). An evaluation's
    audits (``evaluation_id``) are ``purpose=evaluation``: they never reuse nor are reused by others. A re-audit's
    ``predecessor_id`` is given to the audit it follows when that one has none (the same version, made beside
    the same last audit)."""
    config = runnable_config(config_id) if evaluation_id is None else AuditConfig.objects.get(pk=config_id)
    version = version or config.current_version
    assert version is not None  # runnable_config checked it
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                [f"audit:{fiche.pk}:{version.pk}:{tools_mode:d}:{evaluation_id or ''}"],
            )
        require_not_erased(fiche)  # an erased sale is never audited again (privacy)
        active = (
            Audit.objects.filter(
                Q(evaluation_id=evaluation_id) if evaluation_id else Q(evaluation__isnull=True),
                fiche=fiche,
                config_version=version,
                tools_mode=tools_mode,
                status__in=ACTIVE_AUDIT_STATUSES,
            )
            .order_by("created_at")
            .first()
        )
        if active is not None:
            logger.info(
                "audit_reused",
                extra={
                    "audit_id": str(active.pk),
                    "fiche_id": fiche.fiche_id,
                    "tools_mode": tools_mode,
                    "batch_id": batch_id,
                },
            )
            if predecessor_id is not None and active.predecessor_id is None and str(active.pk) != predecessor_id:
                # A re-audit following the same version already running for the fiche: made beside the same
                # last audit, it takes that predecessor.
                Audit.objects.filter(pk=active.pk).update(predecessor_id=predecessor_id)
            return AuditRequested(active, reused=True)
        audit = Audit.objects.create(
            fiche=fiche,
            config=config,
            config_version=version,
            tools_mode=tools_mode,
            model=str(settings.LLM_MODEL),
            requested_by=user,
            batch_id=batch_id,
            evaluation_id=evaluation_id,
            purpose=AuditPurpose.EVALUATION if evaluation_id else AuditPurpose.PRODUCTION,
            predecessor_id=predecessor_id,
        )
        from audits.tasks import audit_run

        dispatch_on_commit(audit_run, str(audit.pk))
    logger.info(
        "audit_created", extra={"audit_id": str(audit.pk), "fiche_id": fiche.fiche_id, "tools_mode": tools_mode}
    )
    return AuditRequested(audit, reused=False)
