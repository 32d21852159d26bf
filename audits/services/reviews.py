"""After an audit: reruns of a step or of one control point (through the same prompt, client and
evidence gate as a first run), human reviews that override a verdict, the audit's history, and the
calibration of the AI against reviewers. Every change recomputes the step's score and the audit's
compliance in code (``audits.compliance``); trails live in their own tables
(``audit_step_result_rerun_events``, ``audit_step_result_human_reviews``), never in ``raw_result``.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from audits import compliance
from audits.models import (
    Audit,
    AuditControlPointDefinition,
    AuditStatus,
    AuditStepResult,
    ControlPointResult,
    HumanReview,
    PointStatus,
    RerunEvent,
    RerunStatus,
    StepStatus,
)
from audits.services import runs
from core.exceptions import ConflictError, InvalidInput, NotFoundError
from core.formats import iso
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
    score = runs.score_row(row)
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
    summary = runs.summarize(audit, steps)
    Audit.objects.filter(pk=audit.pk).update(**summary.audit_fields())
    return summary


# --- Human reviews ------------------------------------------------------------------------------------


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
                previous_status=previous[p.index],
                step_score_before=before,
                step_score_after=row.score,
                reviewer=user,
            )
            for p in points
        )
        recompute_audit(locked)
        locked.refresh_from_db()
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
    use_rlm: bool | None = None,
    user: User | None = None,
) -> RerunEvent:
    """A pending rerun of a step (or one control point) of a completed audit; its task runs after
    commit on the LLM queue. A second rerun of a step while one is pending or running: 409."""
    runs.require_llm_configured()
    with transaction.atomic():
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
                    use_rlm=locked.use_rlm if use_rlm is None else use_rlm,
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
        transaction.on_commit(lambda: _dispatch_rerun(audit_step_rerun, rerun_id))
    logger.info("audit_rerun_requested", extra={"audit_id": str(audit.pk), "rerun_id": rerun_id, "position": position})
    return event


def _dispatch_rerun(task: Any, rerun_id: str) -> None:
    try:
        task.delay(rerun_id)
    except Exception:  # the broker is down: the reconciler re-drives pending reruns
        logger.exception("audit_rerun_dispatch_failed", extra={"rerun_id": rerun_id})


def rerun_claim(*, rerun_id: str) -> RerunEvent | None:
    """Take a pending rerun (one conditional update), or a running one whose worker died
    (``AUDIT_STEP_CLAIM_LEASE_SECONDS``); ``None`` when it ended or is in other hands."""
    stale = timezone.now() - timedelta(seconds=settings.AUDIT_STEP_CLAIM_LEASE_SECONDS)
    now = timezone.now()
    claimed = RerunEvent.objects.filter(pk=rerun_id, status=RerunStatus.PENDING).update(
        status=RerunStatus.RUNNING, started_at=now
    ) or RerunEvent.objects.filter(pk=rerun_id, status=RerunStatus.RUNNING, started_at__lt=stale).update(started_at=now)
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


def rerun_release(*, rerun_id: str) -> None:
    """Give a running rerun back (it waits for an LLM slot or retries later)."""
    RerunEvent.objects.filter(pk=rerun_id, status=RerunStatus.RUNNING).update(status=RerunStatus.PENDING)


def rerun_fail(*, rerun_id: str, error: str) -> None:
    RerunEvent.objects.filter(pk=rerun_id, status__in=[RerunStatus.PENDING, RerunStatus.RUNNING]).update(
        status=RerunStatus.FAILED, error=error[:2000], completed_at=timezone.now()
    )
    logger.warning("audit_rerun_failed", extra={"rerun_id": rerun_id, "error": error})


def rerun_apply(*, rerun_id: str, asked: runs.StepAsked, gated: list[runs.GatedPoint]) -> bool:
    """Store a rerun's answer in place of the step's (or the control point's), keep reviewers'
    verdicts, rescore the step and the audit, and record what changed. Once: a rerun no longer
    running is a no-op."""
    with transaction.atomic():
        event = RerunEvent.objects.select_for_update().filter(pk=rerun_id, status=RerunStatus.RUNNING).first()
        if event is None:
            return False
        audit = Audit.objects.select_for_update().select_related("fiche").get(pk=event.audit_id)
        row = AuditStepResult.objects.select_for_update().select_related("step").get(pk=event.step_result_id)
        original = step_snapshot(row)
        niveau_before, percentage_before = audit.niveau, audit.score_percentage
        reviewed = dict(row.control_points.exclude(human_status=None).values_list("index", "human_status"))
        runs.write_points(row, gated, guided=bool(event.instructions.strip()))
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
        event.status, event.completed_at = RerunStatus.COMPLETED, now
        event.save()
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
    """Reruns left behind: pending for ``AUDIT_STALL_SECONDS`` (their message was lost) or running
    past the claim lease (their worker died). The reconciler sends them again."""
    now = now or timezone.now()
    pending = now - timedelta(seconds=settings.AUDIT_STALL_SECONDS)
    stale = now - timedelta(seconds=settings.AUDIT_STEP_CLAIM_LEASE_SECONDS)
    left = RerunEvent.objects.filter(
        Q(status=RerunStatus.PENDING, created_at__lt=pending) | Q(status=RerunStatus.RUNNING, started_at__lt=stale)
    )
    return [str(pk) for pk in left.values_list("pk", flat=True)]


# --- History and calibration ---------------------------------------------------------------------------


def _who(user: Any) -> str | None:
    return user.email if user is not None else None


def audit_history(audit: Audit) -> list[dict[str, Any]]:
    """Reruns and reviews of an audit, oldest first."""
    entries: list[tuple[datetime, dict[str, Any]]] = []
    for e in RerunEvent.objects.filter(audit=audit).select_related("requested_by"):
        entries.append(
            (
                e.created_at,
                {
                    "type": "rerun",
                    "id": str(e.pk),
                    "at": iso(e.created_at),
                    "by": _who(e.requested_by),
                    "step_position": e.position,
                    "control_point_index": e.control_point_index,
                    "scope": "step" if e.control_point_index is None else "control_point",
                    "instructions": e.instructions,
                    "use_rlm": e.use_rlm,
                    "status": e.status,
                    "error": e.error,
                    "original": e.original,
                    "rerun": e.rerun,
                    "comparison": e.comparison,
                    "completed_at": iso(e.completed_at),
                },
            )
        )
    for r in HumanReview.objects.filter(step_result__audit=audit).select_related("reviewer", "step_result"):
        entries.append(
            (
                r.created_at,
                {
                    "type": "review",
                    "id": str(r.pk),
                    "at": iso(r.created_at),
                    "by": _who(r.reviewer),
                    "step_position": r.step_result.position,
                    "control_point_index": r.control_point_index,
                    "status": r.status,
                    "ai_status": r.ai_status,
                    "previous_status": r.previous_status,
                    "comment": r.comment,
                    "step_score": {"before": r.step_score_before, "after": r.step_score_after},
                },
            )
        )
    entries.sort(key=lambda item: (item[0], item[1]["type"]))
    return [entry for _, entry in entries]


def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Cohen's kappa of (ai, human) label pairs; None when chance agreement is total (undefined)."""
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == h for a, h in pairs) / n
    ai, human = Counter(a for a, _ in pairs), Counter(h for _, h in pairs)
    expected = sum(ai[label] * human[label] for label in set(ai) | set(human)) / (n * n)
    if expected >= 1.0:
        return None
    return round((observed - expected) / (1 - expected), 4)


def calibration(
    audits: QuerySet[Audit], *, config_id: int, date_from: datetime | None = None, date_to: datetime | None = None
) -> dict[str, Any]:
    """Per control point of a config: reviewed verdicts, agreement between the AI and the reviewer, Cohen's
    kappa and the confusion counts; lowest kappa first.

    The AI's verdict is its own, after the evidence gate and **before any reviewer-guided rerun**
    (``unguided_status``): a rerun a reviewer steered towards their answer would otherwise count as the AI
    agreeing. Guided verdicts are reported beside it (``guided_reruns``, ``guided_agreements``), never in the
    agreement or kappa."""
    points = ControlPointResult.objects.filter(
        step_result__audit__in=audits.filter(config_id=config_id), human_status__isnull=False
    )
    if date_from is not None:
        points = points.filter(step_result__audit__created_at__gte=date_from)
    if date_to is not None:
        points = points.filter(step_result__audit__created_at__lte=date_to)
    grouped: dict[tuple[int, int], list[tuple[str, str]]] = defaultdict(list)
    guided: dict[tuple[int, int], list[bool]] = defaultdict(list)  # per guided verdict: agreed with the reviewer
    latest: dict[tuple[int, int], tuple[int, int, str]] = {}  # key -> (version, step id, step name)
    rows = points.values_list(
        "step_result__position",
        "index",
        "status",
        "unguided_status",
        "guided",
        "human_status",
        "step_result__audit__config_version__version",
        "step_result__step_id",
        "step_result__step__name",
    )
    for position, index, current, unguided, was_guided, human, version, step_id, step_name in rows:
        key = (position, index)
        grouped[key].append((unguided or current, human or ""))
        if was_guided:
            guided[key].append(current == human)
        if key not in latest or version > latest[key][0]:
            latest[key] = (version, step_id, step_name)
    definitions = {
        (d.step_id, d.index): d
        for d in AuditControlPointDefinition.objects.filter(step_id__in={v[1] for v in latest.values()})
    }
    result: list[dict[str, Any]] = []
    for key, pairs in grouped.items():
        _, step_id, step_name = latest[key]
        definition = definitions.get((step_id, key[1]))
        confusion: dict[str, dict[str, int]] = defaultdict(dict)
        for ai, human in pairs:
            confusion[ai][human] = confusion[ai].get(human, 0) + 1
        agreed = sum(a == h for a, h in pairs)
        result.append(
            {
                "step_position": key[0],
                "step_name": step_name,
                "control_point_index": key[1],
                "question": definition.question if definition else "",
                "is_critical": definition.is_critical if definition else False,
                "reviewed": len(pairs),
                "agreements": agreed,
                "agreement_rate": round(agreed / len(pairs), 4),
                "kappa": cohen_kappa(pairs),
                "confusion": {ai: dict(humans) for ai, humans in sorted(confusion.items())},
                "guided_reruns": len(guided[key]),
                "guided_agreements": sum(guided[key]),
            }
        )
    result.sort(key=lambda r: (r["kappa"] is None, r["kappa"] if r["kappa"] is not None else 0, -r["reviewed"]))
    total = sum(r["reviewed"] for r in result)
    return {
        "audit_config_id": config_id,
        "from": iso(date_from),
        "to": iso(date_to),
        "reviewed": total,
        "control_points": result,
    }
