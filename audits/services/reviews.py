"""After an audit: reruns of a step or of one control point (through the same prompt, client and
evidence gate as a first run) and human reviews that override a verdict (their history and the
calibration of the AI against reviewers are reads: ``audits.selectors``). Every change recomputes the
step's score and the audit's compliance in code (``audits.compliance``); trails live in their own tables
(``audit_step_result_rerun_events``, ``audit_step_result_human_reviews``), never in ``raw_result``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from audits import compliance
from audits.models import (
    Audit,
    AuditStatus,
    AuditStepResult,
    ControlPointResult,
    HumanReview,
    PointStatus,
    RerunEvent,
    RerunStatus,
    StepStatus,
)
from audits.services import finish, request, steps, trust
from audits.services.counting import counting_changed
from core.dispatch import dispatch_on_commit
from core.exceptions import ConflictError, InvalidInput, NotFoundError
from core.formats import iso
from core.hooks import FinishHooks
from core.leases import Lease, claim_lease, lease_seconds, new_token
from costs.models import UsagePurpose
from costs.services import record_llm_usage
from fiches.services.access import require_not_erased
from realtime.publisher import publish

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("audits.reviews")

HUMAN_STATUSES = (PointStatus.PASS, PointStatus.FAIL, PointStatus.NOT_APPLICABLE)


def _step_row(audit: Audit, position: int, *, lock: bool = False) -> AuditStepResult:
    rows = AuditStepResult.objects.select_related("step")
    if lock:
        rows = rows.select_for_update()
    row = rows.filter(audit=audit, position=position).first()
    if row is None:
        raise NotFoundError(
            f"Audit {audit.pk} has no step {position}.",
            code="step_not_found",
            details={"audit_id": str(audit.pk), "step_position": position},
        )
    return row


def _require_completed(audit: Audit) -> None:
    if audit.status != AuditStatus.COMPLETED:
        raise ConflictError(
            f"Audit {audit.pk} is {audit.status}: only a completed audit can be rerun or reviewed.",
            code="audit_not_completed",
            details={"audit_id": str(audit.pk), "status": audit.status},
        )


def _require_point(row: AuditStepResult, index: int) -> None:
    if not row.step.control_points.filter(index=index).exists():
        raise NotFoundError(
            f"Step {row.position} has no control point {index}.",
            code="control_point_not_found",
            details={"step_position": row.position, "control_point_index": index},
        )


def step_snapshot(row: AuditStepResult) -> dict[str, Any]:
    """The step as it counts now: score, conforme, and each control point's verdicts."""
    points = list(row.control_points.order_by("index"))
    return {
        "step_position": row.position,
        "score": row.score,
        "max_score": row.max_score,
        "conforme": row.conforme,
        "control_points": [
            {
                "index": p.index,
                "status": p.effective_status,
                "ai_status": p.status,
                "unguided_ai_status": p.unguided_ai_status,
                "guided": p.guided,
                "human_status": p.human_status,
                "verified_citations": p.citations.filter(verified=True).count(),
            }
            for p in points
        ],
    }


def rescore_step(row: AuditStepResult) -> None:
    """Recompute a step's score and conforme from its verdicts (the effective ones)."""
    score = steps.score_row(row)
    row.score, row.max_score, row.conforme, row.included = score.score, score.max_score, score.conforme, score.included
    row.save(update_fields=["score", "max_score", "conforme", "included"])


def recompute_audit(audit: Audit) -> compliance.Summary:
    """Recompute and store a completed audit's compliance summary from its steps."""
    steps = list(
        AuditStepResult.objects.filter(audit=audit)
        .select_related("step")
        .prefetch_related("control_points", "step__control_points")
        .order_by("position")
    )
    summary = finish.summarize(audit, steps)
    Audit.objects.filter(pk=audit.pk).update(**summary.audit_fields())
    counting_changed(config_id=audit.config_id, fiche_id=audit.fiche_id)
    return summary


# --- Human reviews ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reviewed:
    audit: Audit
    user: User | None


# Told of each review after its commit (the review queues complete the reviewer's claimed item).
audit_reviewed: FinishHooks[Reviewed] = FinishHooks("audit_reviewed")
on_audit_reviewed = audit_reviewed.register


@dataclass(frozen=True)
class ReviewResult:
    reviews: list[HumanReview]
    step: AuditStepResult
    audit: Audit


def review_create(
    *,
    audit: Audit,
    position: int,
    status: str,
    comment: str,
    control_point_index: int | None = None,
    user: User | None = None,
) -> ReviewResult:
    """A reviewer's verdict on one control point of a step (or, without an index, on every control
    point of the step). The AI's verdict stays beside it; the reviewer's counts; the step and the
    audit are rescored."""
    if status not in HUMAN_STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(HUMAN_STATUSES)}.", details={"status": status})
    comment = (comment or "").strip()
    if not comment:
        raise InvalidInput("A review needs a comment.", details={"comment": ["This field may not be blank."]})
    with transaction.atomic():
        locked = Audit.objects.select_for_update().get(pk=audit.pk)
        _require_completed(locked)
        row = _step_row(locked, position, lock=True)
        if control_point_index is not None:
            _require_point(row, control_point_index)
        points = list(row.control_points.order_by("index"))
        if control_point_index is not None:
            points = [p for p in points if p.index == control_point_index]
        if not points:
            raise ConflictError(
                "This step has no stored verdict to review (rerun it first).",
                code="nothing_to_review",
                details={"step_position": position, "control_point_index": control_point_index},
            )
        before = row.score
        previous = {p.index: p.effective_status for p in points}
        ControlPointResult.objects.filter(pk__in=[p.pk for p in points]).update(human_status=status)
        rescore_step(row)
        reviews = HumanReview.objects.bulk_create(
            HumanReview(
                step_result=row,
                control_point_index=p.index,
                status=status,
                comment=comment,
                ai_status=p.status,
                ai_first_status=p.unguided_ai_status,
                config_id=locked.config_id,
                step_position=position,
                previous_status=previous[p.index],
                step_score_before=before,
                step_score_after=row.score,
                reviewer=user,
            )
            for p in points
        )
        summary = recompute_audit(locked)
        locked.refresh_from_db()
        for p in points:  # the review may tip the point's trust window
            trust.refresh(config_id=locked.config_id, step_position=position, control_point_index=p.index)
        publish(
            "audit.reviewed",
            {
                "audit_id": str(locked.pk),
                "step_position": position,
                "control_point_indexes": [p.index for p in points],
                "review_status": status,
                "niveau": summary.niveau,
                "score_percentage": summary.score_percentage,
                "needs_review": summary.needs_review,
                "status": "reviewed",
            },
        )
        audit_reviewed.fire(Reviewed(audit=locked, user=user))
    logger.info(
        "audit_reviewed",
        extra={"audit_id": str(audit.pk), "position": position, "index": control_point_index, "status": status},
    )
    return ReviewResult(reviews, row, locked)


# --- Reruns -------------------------------------------------------------------------------------------


def rerun_request(
    *,
    audit: Audit,
    position: int,
    control_point_index: int | None = None,
    instructions: str = "",
    tools_mode: bool | None = None,
    user: User | None = None,
) -> RerunEvent:
    """A pending rerun of a step (or one control point) of a completed audit; its task runs after
    commit on the LLM queue. A second rerun of a step while one is pending or running: 409."""
    request.require_llm_configured()
    with transaction.atomic():
        require_not_erased(audit.fiche)  # the fiche's lock first, as an erasure takes them (privacy)
        locked = Audit.objects.select_for_update().get(pk=audit.pk)
        _require_completed(locked)
        row = _step_row(locked, position)
        if control_point_index is not None:
            _require_point(row, control_point_index)
        try:
            with transaction.atomic():
                event = RerunEvent.objects.create(
                    audit=locked,
                    step_result=row,
                    position=position,
                    control_point_index=control_point_index,
                    instructions=(instructions or "").strip(),
                    tools_mode=locked.tools_mode if tools_mode is None else tools_mode,
                    requested_by=user,
                )
        except IntegrityError:
            active = RerunEvent.objects.filter(
                step_result=row, status__in=[RerunStatus.PENDING, RerunStatus.RUNNING]
            ).first()
            raise ConflictError(
                f"Step {position} is being rerun; wait for it to end.",
                code="rerun_in_progress",
                details={"step_position": position, "rerun_id": str(active.pk) if active else None},
            ) from None
        from audits.tasks import audit_step_rerun

        rerun_id = str(event.pk)
        dispatch_on_commit(audit_step_rerun, rerun_id)  # a broker down: the reconciler sends pending reruns
    logger.info("audit_rerun_requested", extra={"audit_id": str(audit.pk), "rerun_id": rerun_id, "position": position})
    return event


def rerun_claim(*, rerun_id: str) -> RerunEvent | None:
    """Take a pending rerun (one conditional update), or a running one whose worker died (its lease,
    ``CLAIM_LEASE_SECONDS``, renewed by the worker's heartbeat, ran out); ``None`` when it ended or is
    in a live worker's hands. The claim's ``claim_token`` fences the rerun's writes."""
    now = timezone.now()
    stale = now - timedelta(seconds=lease_seconds())
    token = new_token()
    claimed = RerunEvent.objects.filter(pk=rerun_id, status=RerunStatus.PENDING).update(
        status=RerunStatus.RUNNING, started_at=now, claimed_at=now, claim_token=token
    ) or RerunEvent.objects.filter(pk=rerun_id, status=RerunStatus.RUNNING, claimed_at__lt=stale).update(
        claimed_at=now, claim_token=token
    )
    if not claimed:
        return None
    event = RerunEvent.objects.select_related("audit__fiche", "step_result__step").get(pk=rerun_id)
    publish(
        "audit.step_started",
        {
            "rerun_id": rerun_id,
            "audit_id": str(event.audit_id),
            "step_position": event.position,
            "started_at": iso(now),
            "status": "rerunning",
        },
    )
    return event


def rerun_lease(event: RerunEvent) -> Lease:
    """The rerun's claim as a lease the worker's heartbeat renews while it runs."""
    assert event.claim_token is not None
    return claim_lease(RerunEvent, event.pk, event.claim_token)


def rerun_release(*, rerun_id: str) -> None:
    """Give a running rerun back (it waits for an LLM slot or retries later)."""
    RerunEvent.objects.filter(pk=rerun_id, status=RerunStatus.RUNNING).update(
        status=RerunStatus.PENDING, claimed_at=None, claim_token=None
    )


def rerun_fail(*, rerun_id: str, error: str) -> None:
    RerunEvent.objects.filter(pk=rerun_id, status__in=[RerunStatus.PENDING, RerunStatus.RUNNING]).update(
        status=RerunStatus.FAILED, error=error[:2000], completed_at=timezone.now()
    )
    logger.warning("audit_rerun_failed", extra={"rerun_id": rerun_id, "error": error})


def rerun_apply(
    *, rerun_id: str, asked: steps.StepAsked, gated: list[steps.GatedPoint], token: str | None = None
) -> bool:
    """Store a rerun's answer in place of the step's (or the control point's), keep reviewers'
    verdicts, rescore the step and the audit, and record what changed. Once: a rerun no longer
    running is a no-op."""
    with transaction.atomic():
        running = RerunEvent.objects.select_for_update().filter(pk=rerun_id, status=RerunStatus.RUNNING)
        event = (running if token is None else running.filter(claim_token=token)).first()
        if event is None:
            return False
        audit = Audit.objects.select_for_update().select_related("fiche").get(pk=event.audit_id)
        row = AuditStepResult.objects.select_for_update().select_related("step").get(pk=event.step_result_id)
        original = step_snapshot(row)
        niveau_before, percentage_before = audit.niveau, audit.score_percentage
        reviewed = dict(row.control_points.exclude(human_status=None).values_list("index", "human_status"))
        steps.write_points(row, gated, guided=bool(event.instructions.strip()))
        if reviewed:  # a reviewer's verdict outlives a rerun of the AI's
            for index, human in reviewed.items():
                row.control_points.filter(index=index).update(human_status=human)
        answer = asked.answer.model_dump()
        if event.control_point_index is None:
            row.raw_result = answer
        else:
            replaced = {g.index for g in gated}
            kept = [p for p in (row.raw_result or {}).get("control_points", []) if p.get("index") not in replaced]
            row.raw_result = {"control_points": sorted(kept + answer["control_points"], key=lambda p: p["index"])}
        row.status, row.error = StepStatus.COMPLETED, None
        row.prompt_hash, row.model = asked.prompt_hash, asked.result.model
        row.save(update_fields=["raw_result", "status", "error", "prompt_hash", "model"])
        rescore_step(row)
        summary = recompute_audit(audit)
        after = step_snapshot(row)
        comparison = _compare(original, after, niveau_before, summary.niveau, percentage_before)
        comparison["score_percentage"]["after"] = summary.score_percentage
        usage = asked.result.usage
        now = timezone.now()
        event.original, event.rerun, event.comparison = original, after, comparison
        event.prompt_tokens, event.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        event.status, event.completed_at, event.claim_token = RerunStatus.COMPLETED, now, None
        event.save()
        # Under the rerun's claim, in the store's transaction: a late or duplicate holder records nothing.
        record_llm_usage(
            purpose=UsagePurpose.RERUN,
            usage=usage,
            model=asked.result.model,
            audit_id=audit.pk,
            rerun_id=event.pk,
            fiche_id=audit.fiche_id,
            user_id=event.requested_by_id,
        )
        publish(
            "audit.step_completed",
            {
                "rerun_id": rerun_id,
                "audit_id": str(audit.pk),
                "step_position": event.position,
                "original": original,
                "rerun": after,
                "comparison": comparison,
                "completed_at": iso(now),
                "status": "rerun_completed",
            },
        )
    logger.info("audit_rerun_completed", extra={"rerun_id": rerun_id, "niveau": summary.niveau})
    return True


def _compare(
    before: dict[str, Any], after: dict[str, Any], niveau_before: str | None, niveau_after: str, pct_before: Any
) -> dict[str, Any]:
    was = {p["index"]: p for p in before["control_points"]}
    now = {p["index"]: p for p in after["control_points"]}
    points = []
    for index in sorted(set(was) | set(now)):
        b, a = was.get(index, {}).get("status"), now.get(index, {}).get("status")
        points.append({"index": index, "before": b, "after": a, "changed": b != a})
    return {
        "control_points": points,
        "score": {"before": before["score"], "after": after["score"]},
        "conforme": {"before": before["conforme"], "after": after["conforme"]},
        "niveau": {"before": niveau_before, "after": niveau_after},
        "score_percentage": {"before": pct_before, "after": None},
        "changed_points": sum(p["changed"] for p in points),
    }


def reruns_to_redrive(*, now: datetime | None = None) -> list[str]:
    """Reruns left behind: pending for ``AUDIT_STALL_SECONDS`` (their message was lost) or running with
    a lease that ran out (their worker died: a live one renews it). The reconciler sends them again."""
    now = now or timezone.now()
    pending = now - timedelta(seconds=settings.AUDIT_STALL_SECONDS)
    stale = now - timedelta(seconds=lease_seconds())
    left = RerunEvent.objects.filter(
        Q(status=RerunStatus.PENDING, created_at__lt=pending) | Q(status=RerunStatus.RUNNING, claimed_at__lt=stale)
    )
    return [str(pk) for pk in left.values_list("pk", flat=True)]
