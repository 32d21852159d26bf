"""Evaluating a config version before activating it: the version (often a draft) and the active one run over
an evaluation set — by default the most recent fiches reviewers judged for this config, or a fiche list —
and each is compared with the reviewers' verdicts (the truth) per control point and overall: agreement,
Cohen's kappa, the points whose verdict changed between the two versions (with both verified quotes),
tokens and wall time.

An evaluation is a tracked run: its audits (``purpose=evaluation``, never in compliance figures, queues,
calibration or trust) are made at once and run on the usual audit workflow; each audit's end (the audits'
finish hook) reaches ``evaluation_settle``, serialized by the evaluation's row lock, which publishes progress
and, once every audit ended, computes the result and ends the evaluation exactly once (``end_once``). The
beat's ``reconcile_evaluations`` settles any whose last hook was lost.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from accounts.permissions import scope_queryset
from audits.models import (
    Audit,
    AuditConfigVersion,
    AuditPurpose,
    AuditStatus,
    Citation,
    ControlPointResult,
    Evaluation,
    EvaluationStatus,
    HumanReview,
)
from audits.selectors import cohen_kappa
from audits.services import configs
from audits.services.request import audit_request_or_reuse, fiche_for_audit, require_llm_configured
from core.exceptions import ConflictError, InvalidInput
from core.formats import iso
from core.limits import throttle_spend
from fiches.models import FicheCache
from realtime.publisher import publish

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("audits.evaluations")


def evaluation_set(*, config_id: int, user: User, limit: int) -> list[FicheCache]:
    """The most recent fiches (of the user's ``audits`` write scope) whose production audits of the config
    reviewers judged: their verdicts are the truth."""
    reviewed = (
        HumanReview.objects.filter(config_id=config_id, step_result__audit__purpose=AuditPurpose.PRODUCTION)
        .values("step_result__audit__fiche_id")
        .annotate(last=Max("created_at"))
        .order_by("-last")
    )
    in_scope = scope_queryset(FicheCache.objects.all(), user, "audits", action="write")
    ids = [row["step_result__audit__fiche_id"] for row in reviewed.filter(step_result__audit__fiche__in=in_scope)]
    fiches = FicheCache.objects.in_bulk(ids[:limit])
    return [fiches[i] for i in ids[:limit] if i in fiches]


def evaluation_create(
    *,
    config_id: int,
    version_number: int | None,
    fiche_ids: list[str] | None,
    tools_mode: bool,
    user: User,
) -> Evaluation:
    """Start an evaluation: two audits per fiche (the version and the active one; one when they are the same)."""
    require_llm_configured()
    config = configs.config_get(config_id)
    version = configs.version_get(config_id, version_number) if version_number is not None else config.current_version
    assert version is not None
    baseline = config.current_version if config.current_version_id != version.pk else None
    limit = settings.AUDIT_EVALUATION_MAX_FICHES
    if fiche_ids:
        if len(fiche_ids) > limit:
            raise InvalidInput(
                f"At most {limit} fiches in an evaluation.", details={"fiche_ids": [f"At most {limit}."]}
            )
        fiches = [fiche_for_audit(user=user, fiche_id=f) for f in dict.fromkeys(fiche_ids)]
    else:
        fiches = evaluation_set(config_id=config.pk, user=user, limit=settings.AUDIT_EVALUATION_FICHES)
        if not fiches:
            raise ConflictError(
                "No reviewed fiche of this config in your scope to evaluate on: name the fiches (fiche_ids).",
                code="no_evaluation_set",
                details={"audit_config_id": config.pk},
            )
    versions = [v for v in (version, baseline) if v is not None]
    throttle_spend(user, "batch", cost=len(fiches) * len(versions))  # its audits count as a batch's
    now = timezone.now()
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            config=config,
            version=version,
            baseline_version=baseline,
            fiche_ids=[f.fiche_id for f in fiches],
            tools_mode=tools_mode,
            status=EvaluationStatus.RUNNING,
            started_at=now,
            requested_by=user,
        )
        for fiche in fiches:
            for v in versions:
                audit_request_or_reuse(
                    fiche=fiche,
                    config_id=config.pk,
                    tools_mode=tools_mode,
                    user=user,
                    version=v,
                    evaluation_id=str(evaluation.pk),
                )
        Evaluation.objects.filter(pk=evaluation.pk).update(dispatched_at=now, last_progress_at=now)
        _publish_progress(evaluation, completed=0, failed=0, total=len(fiches) * len(versions))
    logger.info(
        "evaluation_started",
        extra={"evaluation_id": str(evaluation.pk), "version": version.version, "fiches": len(fiches)},
    )
    return evaluation


def _publish_progress(evaluation: Evaluation, *, completed: int, failed: int, total: int) -> None:
    publish(
        "audit.evaluation_progress",
        {
            "evaluation_id": str(evaluation.pk),
            "audit_config_id": str(evaluation.config_id),
            "completed_audits": completed,
            "failed_audits": failed,
            "total_audits": total,
            "progress_percentage": round((completed + failed) / total * 100) if total else 100,
            "status": "running",
        },
        user_id=evaluation.requested_by_id,
    )


def audit_finished(audit: Audit) -> None:
    """The audits' finish hook: an evaluation's audit ended."""
    if audit.evaluation_id is not None:
        evaluation_settle(evaluation_id=str(audit.evaluation_id))


def evaluation_settle(*, evaluation_id: str) -> bool:
    """Progress, and the end once every audit of the evaluation ended (exactly once: the row lock and
    ``end_once``). Whether it ended now."""
    now = timezone.now()
    with transaction.atomic():
        evaluation = Evaluation.objects.select_for_update().filter(pk=evaluation_id).first()
        if evaluation is None or evaluation.is_terminal:
            return False
        statuses = list(Audit.objects.filter(evaluation=evaluation).values_list("status", flat=True))
        completed = sum(s == AuditStatus.COMPLETED for s in statuses)
        failed = sum(s == AuditStatus.FAILED for s in statuses)
        Evaluation.objects.filter(pk=evaluation.pk).update(last_progress_at=now)
        if completed + failed < len(statuses):
            _publish_progress(evaluation, completed=completed, failed=failed, total=len(statuses))
            return False
        result = evaluation_result(evaluation)
        status = EvaluationStatus.COMPLETED if completed else EvaluationStatus.FAILED
        ended = Evaluation.end_once(
            evaluation.pk,
            status,
            now=now,
            result=result,
            error=None if completed else "every audit of the evaluation failed",
        )
        if ended:
            publish(
                "audit.evaluation_completed",
                {
                    "evaluation_id": str(evaluation.pk),
                    "audit_config_id": str(evaluation.config_id),
                    "version": evaluation.version.version,
                    "completed_audits": completed,
                    "failed_audits": failed,
                    "changed_points": len(result["changed"]),
                    "status": status,
                },
                user_id=evaluation.requested_by_id,
            )
    if ended:
        logger.info("evaluation_completed", extra={"evaluation_id": evaluation_id, "status": status})
    return ended


def reconcile_evaluations() -> list[str]:
    """Beat: settle running evaluations (an audit's hook lost with its process); the audits themselves end
    through their own reconciler."""
    ended = []
    for evaluation_id in Evaluation.objects.filter(status=EvaluationStatus.RUNNING).values_list("pk", flat=True):
        if evaluation_settle(evaluation_id=str(evaluation_id)):
            ended.append(str(evaluation_id))
    return ended


# --- The result -------------------------------------------------------------------------------------------

Key = tuple[str, int, int]  # (fiche id, step position, control point index)


def _truth(evaluation: Evaluation) -> dict[Key, str]:
    """The reviewers' latest verdict per fiche and point, on production audits of the config."""
    rows = (
        HumanReview.objects.filter(
            config_id=evaluation.config_id,
            step_result__audit__purpose=AuditPurpose.PRODUCTION,
            step_result__audit__fiche__fiche_id__in=evaluation.fiche_ids,
        )
        .order_by("created_at", "id")
        .values_list("step_result__audit__fiche__fiche_id", "step_position", "control_point_index", "status")
    )
    return {(fiche, position, index): status for fiche, position, index, status in rows if position is not None}


def _verdicts(evaluation: Evaluation, version: AuditConfigVersion) -> dict[Key, dict[str, Any]]:
    """The AI's verdict (after the gate, before any guidance) and verified quotes per fiche and point."""
    points = ControlPointResult.objects.filter(
        step_result__audit__evaluation=evaluation,
        step_result__audit__config_version=version,
        step_result__audit__status=AuditStatus.COMPLETED,
    ).values_list(
        "pk", "step_result__audit__fiche__fiche_id", "step_result__position", "index", "status", "unguided_status"
    )
    quotes: dict[int, list[str]] = defaultdict(list)
    for point_id, text in (
        Citation.objects.filter(control_point_id__in=[p[0] for p in points], verified=True)
        .order_by("position")
        .values_list("control_point_id", "text")
    ):
        quotes[point_id].append(text)
    return {
        (fiche, position, index): {"status": unguided or status, "quotes": quotes.get(pk, [])}
        for pk, fiche, position, index, status, unguided in points
    }


def _figures(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    if not pairs:
        return {"reviewed": 0, "agreement": None, "kappa": None}
    agreed = sum(a == h for a, h in pairs)
    return {"reviewed": len(pairs), "agreement": round(agreed / len(pairs), 4), "kappa": cohen_kappa(pairs)}


def _spent(evaluation: Evaluation, version: AuditConfigVersion | None) -> dict[str, Any] | None:
    if version is None:
        return None
    audits = list(
        Audit.objects.filter(evaluation=evaluation, config_version=version).values_list(
            "status", "total_tokens", "started_at", "completed_at"
        )
    )
    starts = [s for _, _, s, _ in audits if s]
    ends = [e for _, _, _, e in audits if e]
    return {
        "audits": len(audits),
        "failed": sum(s == AuditStatus.FAILED for s, _, _, _ in audits),
        "tokens": sum(t for _, t, _, _ in audits),
        "wall_seconds": round((max(ends) - min(starts)).total_seconds(), 3) if starts and ends else None,
    }


def evaluation_result(evaluation: Evaluation) -> dict[str, Any]:
    truth = _truth(evaluation)
    candidate = _verdicts(evaluation, evaluation.version)
    baseline = _verdicts(evaluation, evaluation.baseline_version) if evaluation.baseline_version else None
    questions = {
        (step.position, point.index): point.question
        for step in evaluation.version.steps.all().prefetch_related("control_points")
        for point in step.control_points.all()
    }
    points: dict[tuple[int, int], dict[str, list[tuple[str, str]]]] = defaultdict(
        lambda: {"candidate": [], "baseline": []}
    )
    for key, human in truth.items():
        # Both versions on the same points: a verdict only one of them has (its audit failed) is left out.
        if key not in candidate or (baseline is not None and key not in baseline):
            continue
        point = key[1:]
        points[point]["candidate"].append((candidate[key]["status"], human))
        if baseline is not None:
            points[point]["baseline"].append((baseline[key]["status"], human))
    per_point = []
    for (position, index), pairs in sorted(points.items()):
        mine, theirs = _figures(pairs["candidate"]), _figures(pairs["baseline"]) if baseline is not None else None
        delta = None
        if theirs and mine["kappa"] is not None and theirs["kappa"] is not None:
            delta = round(mine["kappa"] - theirs["kappa"], 4)
        per_point.append(
            {
                "step_position": position,
                "control_point_index": index,
                "question": questions.get((position, index), ""),
                "candidate": mine,
                "baseline": theirs,
                "kappa_delta": delta,
            }
        )
    changed = []
    if baseline is not None:
        for key in sorted(set(candidate) & set(baseline)):
            if candidate[key]["status"] != baseline[key]["status"]:
                changed.append(
                    {
                        "fiche_id": key[0],
                        "step_position": key[1],
                        "control_point_index": key[2],
                        "reviewer": truth.get(key),
                        "baseline": baseline[key],
                        "candidate": candidate[key],
                    }
                )
    all_candidate = [pair for p in points.values() for pair in p["candidate"]]
    all_baseline = [pair for p in points.values() for pair in p["baseline"]]
    return {
        "fiches": len(evaluation.fiche_ids),
        "reviewed_points": len(truth),
        "overall": {
            "candidate": _figures(all_candidate),
            "baseline": _figures(all_baseline) if baseline is not None else None,
        },
        "control_points": per_point,
        "changed": changed,
        "spent": {
            "candidate": _spent(evaluation, evaluation.version),
            "baseline": _spent(evaluation, evaluation.baseline_version),
        },
        "computed_at": iso(timezone.now()),
    }
