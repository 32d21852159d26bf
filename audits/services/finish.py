"""The audit's updater and its end: progress as steps settle, and the end exactly once (completed with
its compliance computed in code, or failed with its partial results), told to its batch and to the
audit-finished hooks (automation) after commit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from audits import compliance
from audits.models import TERMINAL_AUDIT_STATUSES, Audit, AuditStatus, AuditStepResult, StepStatus
from audits.services.counting import counting_changed
from audits.services.steps import score_row, verdicts
from core.formats import iso
from core.hooks import FinishHooks
from core.inbox import Inbox
from realtime.publisher import publish, publish_many

logger = logging.getLogger("audits.finish")


# Told of each audit after the commit that ended it (exactly once per audit, completed or failed):
# automation plugs in here (audits does not import it).
audit_finished: FinishHooks[Audit] = FinishHooks("audit_finished")
on_audit_finished = audit_finished.register


def _fmt(value: float | None) -> str:
    """Scores travel as strings in the events (the contract)."""
    return "" if value is None else f"{value:.2f}".rstrip("0").rstrip(".")


# --- The updater and the end ------------------------------------------------------------------------


def audit_step_settled(*, audit_id: str) -> bool:
    """A step ended: publish the audit's progress and end the audit once every step has ended.
    Callers hold the audit's Redis lock; the row lock is the fence. Returns whether it ended now."""
    with transaction.atomic():
        audit = Audit.objects.select_for_update().select_related("fiche", "config_version").filter(pk=audit_id).first()
        if audit is None or audit.is_terminal or audit.dispatched_at is None:
            return False
        rows = list(AuditStepResult.objects.filter(audit=audit).values_list("status", flat=True))
        completed = sum(s == StepStatus.COMPLETED for s in rows)
        failed = sum(s == StepStatus.FAILED for s in rows)
        Audit.objects.filter(pk=audit.pk).update(last_progress_at=timezone.now())
        publish(
            "audit.progress",
            {
                "audit_id": audit_id,
                "fiche_id": audit.fiche.fiche_id,
                "completed_steps": completed,
                "total_steps": len(rows),
                "failed_steps": failed,
                "current_phase": "analysis" if completed + failed < len(rows) else "finalizing",
                "progress_percentage": round((completed + failed) / len(rows) * 100) if rows else 100,
                "status": "in_progress",
            },
        )
        if completed + failed < len(rows):
            return False
        return _finish(audit, completed=completed, failed=failed)


@dataclass(frozen=True)
class Settled:
    finalized: bool


def _has_ended(audit_id: str) -> bool:
    return not Audit.objects.filter(pk=audit_id).exclude(status__in=TERMINAL_AUDIT_STATUSES).exists()


# A step's end (``[position]``: the result itself is in its row) reaches the audit's updater through the
# kernel's inbox (registered in ``AuditsConfig.ready``): one recount serves every step that ended meanwhile.
AUDIT_INBOX = Inbox(
    name="audits.audit",
    pending_prefix="audit-outcomes",
    lock_prefix="audit",
    lock_seconds=60,
    apply=lambda audit_id, outcomes: Settled(audit_step_settled(audit_id=audit_id)),
    is_applied=lambda audit_id, outcome: _has_ended(audit_id),
)


def _finish(audit: Audit, *, completed: int, failed: int) -> bool:
    now = timezone.now()
    fiche_id = audit.fiche.fiche_id
    steps = list(
        AuditStepResult.objects.filter(audit=audit)
        .select_related("step")
        .prefetch_related("control_points", "step__control_points")
        .order_by("position")
    )
    total_tokens = sum(s.tokens_used for s in steps)
    duration = round((now - (audit.started_at or audit.created_at)).total_seconds(), 3)
    if failed:
        error = f"{failed} of {len(steps)} step(s) failed: " + "; ".join(
            f"step {s.position}: {s.error}" for s in steps if s.status == StepStatus.FAILED
        )
        return fail(
            audit,
            error[:2000],
            phase="analysis",
            partial={"completed_steps": completed, "total_steps": len(steps), "failed_steps": failed},
            tokens=total_tokens,
        )
    summary = summarize(audit, steps)
    ended = Audit.end_once(
        audit.pk,
        AuditStatus.COMPLETED,
        now=now,
        **summary.audit_fields(),
        total_tokens=total_tokens,
        duration_seconds=duration,
    )
    if not ended:
        return False
    publish_many(
        [
            (
                "audit.compliance_calculated",
                {
                    "audit_id": str(audit.pk),
                    "fiche_id": fiche_id,
                    "overall_score": _fmt(summary.overall_score),
                    "score_percentage": _fmt(summary.score_percentage),
                    "niveau": summary.niveau,
                    "is_compliant": summary.is_compliant,
                    "critical_issues": str(len(summary.critical_issues)),
                    "status": "calculated",
                },
            ),
            (
                "audit.completed",
                {
                    "audit_id": str(audit.pk),
                    "fiche_id": fiche_id,
                    "overall_score": _fmt(summary.overall_score),
                    "score_percentage": _fmt(summary.score_percentage),
                    "niveau": summary.niveau,
                    "is_compliant": summary.is_compliant,
                    "successful_steps": completed,
                    "failed_steps": failed,
                    "total_tokens": total_tokens,
                    "duration_seconds": duration,
                    "completed_at": iso(now),
                    "status": "completed",
                },
            ),
        ]
    )
    logger.info(
        "audit_completed",
        extra={"audit_id": str(audit.pk), "niveau": summary.niveau, "score_percentage": summary.score_percentage},
    )
    _tell_batch(audit, ok=True)
    audit_finished.fire(audit)
    counting_changed(config_id=audit.config_id, fiche_id=audit.fiche_id)
    return True


def summarize(audit: Audit, steps: list[AuditStepResult]) -> compliance.Summary:
    outcomes = [
        compliance.StepOutcome(s.position, s.step.name, s.step.weight, s.step.is_critical, score_row(s), verdicts(s))
        for s in steps
        if s.status == StepStatus.COMPLETED
    ]
    return compliance.audit_summary(outcomes, audit.config_version.thresholds)


def fail(audit: Audit, error: str, *, phase: str, partial: dict[str, int] | None = None, tokens: int = 0) -> bool:
    """End the audit failed, exactly once (the conditional update decides)."""
    now = timezone.now()
    ended = Audit.end_once(
        audit.pk,
        AuditStatus.FAILED,
        now=now,
        error=error,
        total_tokens=tokens,
        duration_seconds=round((now - (audit.started_at or audit.created_at)).total_seconds(), 3),
    )
    if not ended:
        return False
    payload: dict[str, Any] = {
        "audit_id": str(audit.pk),
        "fiche_id": audit.fiche.fiche_id,
        "error": error,
        "failed_phase": phase,
        "failed_at": iso(now),
        "status": "failed",
    }
    if partial is not None:
        payload["partial_results"] = partial
    publish("audit.failed", payload)
    logger.warning("audit_failed", extra={"audit_id": str(audit.pk), "phase": phase, "error": error})
    _tell_batch(audit, ok=False, error=error)
    audit_finished.fire(audit)
    return True


def _tell_batch(audit: Audit, *, ok: bool, error: str | None = None) -> None:
    """After the commit that ended the audit: its batch's item ends, and so does every item of another
    batch that followed this audit (it found it running instead of starting a second one)."""
    from batches.services import batch_item_done, batch_ref_done

    audit_id, fiche_id = str(audit.pk), audit.fiche.fiche_id
    batch_id = str(audit.batch_id) if audit.batch_id is not None else None

    def tell() -> None:
        if batch_id is not None:
            batch_item_done(batch_id=batch_id, fiche_id=fiche_id, ok=ok, error=error)
        batch_ref_done(operation_type="audit", fiche_id=fiche_id, ref_id=audit_id, ok=ok, error=error)

    transaction.on_commit(tell)


def audit_fail_now(*, audit_id: str, reason: str, phase: str) -> bool:
    audit = Audit.objects.select_related("fiche").filter(pk=audit_id).first()
    return audit is not None and fail(audit, reason, phase=phase)
