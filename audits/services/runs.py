"""Audit runs: the request, the prerequisites, one LLM call per step behind an evidence gate, the
exactly-once end, and the reconciler. The progressive job's shape (DESIGN.md):

``audit_request`` → ``audit_prepare`` (orchestrator: config, fiche details, transcripts — waiting for
them without polling: the transcription run's end resumes the audit — timeline) → a chord of
``audit_step_analyze`` (one per step; a Redis lock and a conditional claim make a duplicate task a
no-op) → ``audit_step_settled`` (under the audit's Redis lock and row lock: progress, and the end
exactly once; a conditional update decides) → compliance computed in code.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audits import compliance
from audits.clients import llm
from audits.evidence import EvidenceIndex, QuoteCheck
from audits.models import (
    TERMINAL_AUDIT_STATUSES,
    Audit,
    AuditConfig,
    AuditStatus,
    AuditStepDefinition,
    AuditStepResult,
    Citation,
    ControlPointResult,
    EvidenceSpeaker,
    PointStatus,
    StepStatus,
)
from audits.prompts import STEP_ANSWER_SCHEMA_NAME, ControlPointSpec, StepAnswer, StepSpec, build_step_messages
from audits.prompts import prompt_hash as hash_prompt
from audits.services.configs import steps_of
from audits.transcript_tools import TOOL_SPECS, TranscriptTools
from core.exceptions import (
    ApplicationError,
    ConflictError,
    DependencyUnavailable,
    InvalidInput,
    PermissionDeniedError,
)
from core.formats import iso
from core.limits import Semaphore
from fiches.models import FicheCache, Recording
from realtime.publisher import publish, publish_many
from transcriptions.models import TERMINAL_RUN_STATUSES, Transcription, TranscriptionRun
from transcriptions.selectors import timeline_for
from transcriptions.services.runs import fiche_for_transcription, transcription_request

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("audits.runs")

# Called with the audit after the commit that ended it (exactly once per audit): automation plugs in
# here (audits does not import it).
AuditFinishedHook = Callable[[Audit], None]
_audit_finished_hooks: list[AuditFinishedHook] = []


def on_audit_finished(hook: AuditFinishedHook) -> None:
    """Register ``hook(audit)``, called after the commit that ended an audit (completed or failed)."""
    if hook not in _audit_finished_hooks:
        _audit_finished_hooks.append(hook)


def _finished(audit: Audit) -> None:
    for hook in list(_audit_finished_hooks):
        transaction.on_commit(functools.partial(_call_hook, hook, audit))


def _call_hook(hook: AuditFinishedHook, audit: Audit) -> None:
    try:
        hook(audit)
    except Exception:  # a listener must not undo the audit's end; it has its own reconciler
        logger.exception("audit_finished_hook_failed", extra={"audit_id": str(audit.pk)})


def _fmt(value: float | None) -> str:
    """Scores travel as strings in the events (the contract)."""
    return "" if value is None else f"{value:.2f}".rstrip("0").rstrip(".")


# --- The request -------------------------------------------------------------------------------


def require_llm_configured() -> None:
    if not (settings.LLM_API_KEY or "").strip():
        raise DependencyUnavailable(
            "The LLM is not configured: set LLM_API_KEY (and LLM_BASE_URL).", details={"setting": "LLM_API_KEY"}
        )


def fiche_for_audit(*, user: User | None, fiche_id: str, action: str = "write") -> FicheCache:
    """The fiche (details fetched when missing, under the user's CRM throttle), in ``user``'s
    ``audits`` scope (checked before any CRM call when the fiche is cached, and after)."""
    return fiche_for_transcription(user=user, fiche_id=fiche_id, action=action, app="audits")


ACTIVE_AUDIT_STATUSES = (AuditStatus.PENDING, AuditStatus.WAITING_TRANSCRIPTION, AuditStatus.RUNNING)


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
    use_rlm: bool = False,
    user: User | None = None,
    batch_id: str | None = None,
) -> Audit:
    """The audit of ``fiche`` with the config's current version: a new pending one (its orchestrator
    runs after commit), or the identical one still going (see ``audit_request_or_reuse``)."""
    return audit_request_or_reuse(fiche=fiche, config_id=config_id, use_rlm=use_rlm, user=user, batch_id=batch_id).audit


def audit_request_or_reuse(
    *,
    fiche: FicheCache,
    config_id: int,
    use_rlm: bool = False,
    user: User | None = None,
    batch_id: str | None = None,
) -> AuditRequested:
    """A pending audit of ``fiche`` with the config's current version; its orchestrator runs after
    commit. An identical audit (same fiche, config version and mode) still pending, waiting for its
    transcripts or running is returned instead (``reused``), whoever asked for it: one request per
    (fiche, version, mode) at a time decides (a transaction-scoped advisory lock), so concurrent
    identical requests make one audit. A reused audit keeps its own ``batch_id``: a batch item that
    follows it ends with it (``batch_ref_done``)."""
    config = runnable_config(config_id)
    version = config.current_version
    assert version is not None  # runnable_config checked it
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"audit:{fiche.pk}:{version.pk}:{use_rlm:d}"]
            )
        active = (
            Audit.objects.filter(fiche=fiche, config_version=version, use_rlm=use_rlm, status__in=ACTIVE_AUDIT_STATUSES)
            .order_by("created_at")
            .first()
        )
        if active is not None:
            logger.info(
                "audit_reused",
                extra={
                    "audit_id": str(active.pk),
                    "fiche_id": fiche.fiche_id,
                    "use_rlm": use_rlm,
                    "batch_id": batch_id,
                },
            )
            return AuditRequested(active, reused=True)
        audit = Audit.objects.create(
            fiche=fiche,
            config=config,
            config_version=version,
            use_rlm=use_rlm,
            model=str(settings.LLM_MODEL),
            requested_by=user,
            batch_id=batch_id,
        )
        from audits.tasks import audit_run

        transaction.on_commit(lambda: _dispatch(audit_run, str(audit.pk)))
    logger.info("audit_created", extra={"audit_id": str(audit.pk), "fiche_id": fiche.fiche_id, "use_rlm": use_rlm})
    return AuditRequested(audit, reused=False)


def _dispatch(task: Any, audit_id: str) -> None:
    try:
        task.delay(audit_id)
    except Exception:  # the broker is down: the reconciler drives the audit later
        logger.exception("audit_dispatch_failed", extra={"audit_id": audit_id})


# --- Prerequisites (the orchestrator) ----------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    state: str  # "analyze", "waiting", "ended"
    positions: list[int]


def _total_steps(audit: Audit) -> int:
    return audit.config_version.steps.count()


def audit_prepare(*, audit_id: str) -> Prepared:
    """Everything before the LLM: config, fiche, transcripts (triggered and waited for when
    missing), timeline; then the step results to analyze. Idempotent: a re-drive returns the steps
    still to do."""
    audit = Audit.objects.select_related("fiche", "config", "config_version").filter(pk=audit_id).first()
    if audit is None or audit.is_terminal:
        return Prepared("ended", [])
    fiche = audit.fiche
    fiche_id = fiche.fiche_id
    total_steps = _total_steps(audit)
    if audit.dispatched_at is not None:  # steps already fanned out: re-drive what is left
        return Prepared("analyze", _positions_left(audit))
    first = audit.started_at is None
    if first:
        now = timezone.now()
        Audit.objects.filter(pk=audit.pk, started_at__isnull=True).update(started_at=now, last_progress_at=now)
        audit.started_at = now
        publish_many(
            [
                (
                    "audit.started",
                    {
                        "audit_id": str(audit.pk),
                        "fiche_id": fiche_id,
                        "audit_config_id": str(audit.config_id),
                        "audit_config_name": audit.config_version.name,
                        "total_steps": total_steps,
                        "started_at": iso(now),
                        "status": "started",
                    },
                ),
                (
                    "audit.config_loaded",
                    {
                        "config_id": str(audit.config_id),
                        "config_name": audit.config_version.name,
                        "steps_count": total_steps,
                        "status": "loaded",
                    },
                ),
            ]
        )
        from_cache = fiche.details_fetched_at is not None
        publish("audit.fiche_fetch_started", {"fiche_id": fiche_id, "from_cache": from_cache, "status": "fetching"})
        try:
            fiche = fiche_for_transcription(user=None, fiche_id=fiche_id)
        except ApplicationError as exc:
            _fail(audit, f"fiche details unavailable: {exc.message}", phase="fiche_fetch")
            return Prepared("ended", [])
        publish(
            "audit.fiche_fetch_completed",
            {
                "fiche_id": fiche_id,
                "recordings_count": fiche.recordings_count,
                "prospect_name": fiche.prospect_name or "",
                "from_cache": from_cache,
                "status": "fetched",
            },
        )

    recordings = list(Recording.objects.filter(fiche=fiche).values_list("call_id", flat=True))
    done = set(
        Transcription.objects.filter(fiche=fiche, transcribed_at__isnull=False).values_list("call_id", flat=True)
    )
    missing = [c for c in recordings if c not in done]
    publish(
        "audit.transcription_check",
        {
            "fiche_id": fiche_id,
            "total_recordings": len(recordings),
            "transcribed": len(recordings) - len(missing),
            "needs_transcription": len(missing),
            "status": "checked",
        },
    )
    if not recordings:
        _fail(audit, "the fiche has no recording to audit", phase="transcription")
        return Prepared("ended", [])
    if missing:
        active = TranscriptionRun.objects.filter(fiche=fiche).exclude(status__in=TERMINAL_RUN_STATUSES).exists()
        if audit.waiting_since is None or active:
            if not active:  # nobody is transcribing them: ask for it
                transcription_request(fiche=fiche, user=audit.requested_by)
            Audit.objects.filter(pk=audit.pk).exclude(status__in=TERMINAL_AUDIT_STATUSES).update(
                status=AuditStatus.WAITING_TRANSCRIPTION,
                waiting_since=audit.waiting_since or timezone.now(),
                last_progress_at=timezone.now(),
            )
            logger.info("audit_waiting_transcription", extra={"audit_id": str(audit.pk), "missing": len(missing)})
            return Prepared("waiting", [])
        if not done:  # the run ended and nothing could be transcribed
            _fail(audit, "no recording of the fiche could be transcribed", phase="transcription")
            return Prepared("ended", [])
        # Some recordings failed to transcribe: the audit goes on with the others.

    timeline = timeline_for(fiche)
    publish(
        "audit.timeline_generated",
        {
            "fiche_id": fiche_id,
            "recordings_count": timeline.recordings,
            "total_chunks": len(timeline.chunks),
            "status": "generated",
        },
    )
    with transaction.atomic():
        locked = Audit.objects.select_for_update().get(pk=audit.pk)
        if locked.is_terminal or locked.dispatched_at is not None:
            return Prepared("analyze" if not locked.is_terminal else "ended", _positions_left(locked))
        steps = steps_of(audit.config_version)
        AuditStepResult.objects.bulk_create(
            [AuditStepResult(audit=audit, step=s, position=s.position, max_score=s.weight) for s in steps],
            ignore_conflicts=True,
        )
        now = timezone.now()
        locked.status, locked.dispatched_at, locked.last_progress_at = AuditStatus.RUNNING, now, now
        locked.save(update_fields=["status", "dispatched_at", "last_progress_at"])
        publish(
            "audit.analysis_started",
            {
                "audit_id": str(audit.pk),
                "fiche_id": fiche_id,
                "total_steps": len(steps),
                "model": audit.model,
                "status": "analyzing",
            },
        )
    return Prepared("analyze", _positions_left(locked))


def _positions_left(audit: Audit) -> list[int]:
    return list(
        AuditStepResult.objects.filter(audit=audit)
        .exclude(status__in=[StepStatus.COMPLETED, StepStatus.FAILED])
        .order_by("position")
        .values_list("position", flat=True)
    )


def resume_waiting_audits(run: TranscriptionRun) -> None:
    """Run-finished hook: the audits waiting for this fiche's transcripts go on (no polling)."""
    from audits.tasks import audit_run

    waiting = Audit.objects.filter(fiche_id=run.fiche_id, status=AuditStatus.WAITING_TRANSCRIPTION)
    for audit_id in waiting.values_list("pk", flat=True):
        logger.info("audit_resumed", extra={"audit_id": str(audit_id), "run_id": str(run.pk)})
        audit_run.delay(str(audit_id))


# --- One step ----------------------------------------------------------------------------------------


def llm_semaphore() -> Semaphore:
    return Semaphore(
        "llm-calls", limit=settings.LLM_MAX_CONCURRENCY, lease_seconds=settings.AUDIT_STEP_CLAIM_LEASE_SECONDS
    )


def step_claim(*, audit_id: str, position: int) -> AuditStepResult | None:
    """The Postgres fence of a step: take it (pending, or running with an expired claim) with one
    conditional update; ``None`` when it is done, failed, or fresh in another worker's hands."""
    stale = timezone.now() - timedelta(seconds=settings.AUDIT_STEP_CLAIM_LEASE_SECONDS)
    with transaction.atomic():
        if Audit.objects.filter(pk=audit_id, status__in=TERMINAL_AUDIT_STATUSES).exists():
            return None
        row = AuditStepResult.objects.select_for_update().filter(audit_id=audit_id, position=position).first()
        if row is None or row.status in (StepStatus.COMPLETED, StepStatus.FAILED):
            return None
        if row.status == StepStatus.RUNNING and row.claimed_at and row.claimed_at > stale:
            return None
        row.status, row.claimed_at, row.attempts = StepStatus.RUNNING, timezone.now(), row.attempts + 1
        row.save(update_fields=["status", "claimed_at", "attempts"])
    audit = Audit.objects.select_related("fiche").get(pk=audit_id)
    definition = row.step
    publish(
        "audit.step_started",
        {
            "audit_id": audit_id,
            "fiche_id": audit.fiche.fiche_id,
            "step_position": position,
            "step_name": definition.name,
            "total_steps": _total_steps(audit),
            "step_weight": definition.weight,
            "is_critical": definition.is_critical,
            "status": "processing",
        },
    )
    return row


def step_release(*, audit_id: str, position: int) -> None:
    AuditStepResult.objects.filter(audit_id=audit_id, position=position, status=StepStatus.RUNNING).update(
        status=StepStatus.PENDING, claimed_at=None
    )


def fiche_context(fiche: FicheCache) -> str:
    """What the LLM may know of the sale besides the calls (never ``mail_devis``)."""
    parts = [
        f"Fiche {fiche.fiche_id} du {fiche.sales_date.isoformat()}",
        f"Produit : {fiche.produit or 'inconnu'}",
        f"Statut : {fiche.statut or 'inconnu'}",
        f"Agent : {fiche.agent_name or 'inconnu'}",
        f"Client : {fiche.prospect_name or 'inconnu'}",
    ]
    return "\n".join(parts)


def step_spec(definition: AuditStepDefinition) -> StepSpec:
    return StepSpec(
        position=definition.position,
        name=definition.name,
        instructions=definition.instructions,
        weight=definition.weight,
        is_critical=definition.is_critical,
        control_points=[
            ControlPointSpec(p.index, p.question, p.evidence_hint, p.is_critical, p.speaker, p.conditional)
            for p in definition.control_points.order_by("index")
        ],
    )


@dataclass(frozen=True)
class StepAsked:
    answer: StepAnswer
    result: llm.StructuredResult
    prompt_hash: str


def step_ask_llm(
    *,
    audit: Audit,
    definition: AuditStepDefinition,
    timeline: Any,
    reviewer_instructions: str | None = None,
    only_control_point: int | None = None,
    use_rlm: bool | None = None,
) -> StepAsked:
    """The LLM's answer for one step (prompt mode: the timeline in the prompt; tools mode: the
    model searches the transcript), under the global LLM concurrency cap. Raises the client's
    errors and ``LimitBusy``."""
    tools_mode = audit.use_rlm if use_rlm is None else use_rlm
    messages = build_step_messages(
        step=step_spec(definition),
        fiche_context=fiche_context(audit.fiche),
        timeline_text=None if tools_mode else timeline.text,
        use_tools=tools_mode,
        reviewer_instructions=reviewer_instructions,
        only_control_point=only_control_point,
    )
    tools = TranscriptTools(timeline.chunks) if tools_mode else None
    with llm_semaphore().slot(
        f"{audit.pk}:{definition.position}:{timezone.now().timestamp()}", wait=settings.AUDIT_LLM_SLOT_WAIT_SECONDS
    ):
        result = llm.complete_structured(
            messages=messages,
            answer_model=StepAnswer,
            schema_name=STEP_ANSWER_SCHEMA_NAME,
            tools=list(TOOL_SPECS) if tools else None,
            tool_handler=tools.handle if tools else None,
            max_tool_calls=settings.AUDIT_TOOLS_MAX_CALLS,
        )
    assert isinstance(result.value, StepAnswer)
    return StepAsked(result.value, result, hash_prompt(messages))


@dataclass(frozen=True)
class GatedPoint:
    index: int
    ai_status: str  # what the model answered
    status: str  # the AI's verdict after the gate
    rationale: str
    checks: list[QuoteCheck]
    gate_reason: str | None = None  # why the gate changed the model's verdict


# Why the gate did not keep the model's verdict.
NO_ANSWER = "no_answer"  # the model did not answer the point
NO_VERIFIED_QUOTE = "no_verified_quote"  # a pass without a quote the gate verified (in the right speaker's turns)
NOT_CONDITIONAL = "not_conditional"  # not_applicable on a point that is not conditional
NO_REASON = "not_applicable_without_reason"  # not_applicable on a conditional point, without saying why


def gate_answer(
    *, definition: AuditStepDefinition, answer: StepAnswer, index: EvidenceIndex, only_control_point: int | None = None
) -> list[GatedPoint]:
    """The gate is the last word on every verdict:

    - every quote is checked against the timeline **in the turns of the point's speaker** (``agent``,
      ``client``; ``any``: either), whatever speaker the model claims;
    - a ``pass`` left without a verified quote becomes ``uncertain`` (a critical point never passes
      without the agent's own words);
    - ``not_applicable`` stands only on a ``conditional`` point and with the model's reason; on any other
      point it becomes ``uncertain`` (so a critical point answered that way is a critical miss and goes to
      review, and a model answering ``not_applicable`` everywhere never gets a compliant audit);
    - ``fail`` stands; a point the model did not answer is ``uncertain``."""
    answers = {a.index: a for a in answer.control_points}
    gated = []
    for point in definition.control_points.order_by("index"):
        if only_control_point is not None and point.index != only_control_point:
            continue
        given = answers.get(point.index)
        if given is None:
            gated.append(
                GatedPoint(
                    point.index,
                    PointStatus.UNCERTAIN,
                    PointStatus.UNCERTAIN,
                    "Le modèle n'a pas répondu à ce point.",
                    [],
                    NO_ANSWER,
                )
            )
            continue
        speaker = None if point.speaker == EvidenceSpeaker.ANY else point.speaker
        checks = [index.check(q.text, speaker=speaker) for q in given.quotes]
        status, reason = PointStatus(given.status), None
        if status == PointStatus.PASS and not any(c.verified for c in checks):
            status, reason = PointStatus.UNCERTAIN, NO_VERIFIED_QUOTE
        elif status == PointStatus.NOT_APPLICABLE and not point.conditional:
            status, reason = PointStatus.UNCERTAIN, NOT_CONDITIONAL
        elif status == PointStatus.NOT_APPLICABLE and not given.rationale.strip():
            status, reason = PointStatus.UNCERTAIN, NO_REASON
        gated.append(GatedPoint(point.index, given.status, status, given.rationale, checks, reason))
    return gated


def step_store(*, audit_id: str, position: int, asked: StepAsked, gated: list[GatedPoint]) -> bool:
    """Store the step's answer, citations and score (only while this worker holds the step)."""
    with transaction.atomic():
        row = (
            AuditStepResult.objects.select_for_update()
            .select_related("step")
            .filter(audit_id=audit_id, position=position, status=StepStatus.RUNNING)
            .first()
        )
        if row is None:
            return False
        write_points(row, gated)
        score = score_row(row)
        usage = asked.result.usage
        row.status, row.completed_at, row.error = StepStatus.COMPLETED, timezone.now(), None
        row.score, row.max_score, row.conforme, row.included = (
            score.score,
            score.max_score,
            score.conforme,
            score.included,
        )
        row.raw_result = asked.answer.model_dump()
        row.prompt_tokens, row.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        row.tokens_estimated, row.model, row.prompt_hash = usage.estimated, asked.result.model, asked.prompt_hash
        row.latency_ms, row.tool_calls = asked.result.latency_ms, len(asked.result.tool_calls)
        row.save()
        audit = Audit.objects.select_related("fiche").get(pk=audit_id)
        publish(
            "audit.step_completed",
            {
                "audit_id": audit_id,
                "fiche_id": audit.fiche.fiche_id,
                "step_position": position,
                "step_name": row.step.name,
                "score": score.score,
                "max_score": score.max_score,
                "conforme": score.conforme,
                "total_citations": sum(len(g.checks) for g in gated),
                "tokens_used": usage.total_tokens,
                "status": "completed",
            },
        )
    return True


def write_points(row: AuditStepResult, gated: list[GatedPoint], *, guided: bool = False) -> None:
    """Replace the control point results named in ``gated`` (and their citations). ``guided``: the
    verdicts come from a reviewer-guided rerun, so the AI's unguided verdict of each point is kept
    (calibration measures the AI, not the reruns)."""
    existing = ControlPointResult.objects.filter(step_result=row, index__in=[g.index for g in gated])
    previous = {
        index: (unguided, was_guided)
        for index, unguided, was_guided in existing.values_list("index", "unguided_status", "guided")
    }
    existing.delete()
    for g in gated:
        unguided, was_guided = previous.get(g.index, (None, False))
        keep = (guided or was_guided) and unguided is not None  # once guided, the AI's own verdict is frozen
        point = ControlPointResult.objects.create(
            step_result=row,
            index=g.index,
            ai_status=g.ai_status,
            status=g.status,
            rationale=g.rationale,
            gate_reason=g.gate_reason,
            unguided_status=unguided if keep else g.status,
            guided=guided or was_guided,
        )
        Citation.objects.bulk_create(
            Citation(
                control_point=point,
                position=i,
                quote=c.quote,
                text=c.matched_text or "" if c.verified else "",
                speaker=c.speaker,
                call_id=c.call_id if c.verified else None,
                start=c.start if c.verified else None,
                end=c.end if c.verified else None,
                verified=c.verified,
                reason=c.reason,
                score=c.score,
            )
            for i, c in enumerate(g.checks)
        )


def verdicts(row: AuditStepResult) -> list[compliance.PointVerdict]:
    definitions = {p.index: p for p in row.step.control_points.all()}
    return [
        compliance.PointVerdict(
            r.index, r.effective_status, definitions[r.index].is_critical, definitions[r.index].question
        )
        for r in row.control_points.order_by("index")
        if r.index in definitions
    ]


def score_row(row: AuditStepResult) -> compliance.StepScore:
    return compliance.step_score(weight=row.step.weight, pass_ratio=row.step.pass_ratio, points=verdicts(row))


def step_fail(*, audit_id: str, position: int, error: str) -> None:
    error = error[:2000]
    with transaction.atomic():
        updated = AuditStepResult.objects.filter(
            audit_id=audit_id, position=position, status__in=[StepStatus.PENDING, StepStatus.RUNNING]
        ).update(status=StepStatus.FAILED, error=error, completed_at=timezone.now())
        if not updated:
            return
        row = AuditStepResult.objects.select_related("step", "audit__fiche").get(audit_id=audit_id, position=position)
        publish(
            "audit.step_failed",
            {
                "audit_id": audit_id,
                "fiche_id": row.audit.fiche.fiche_id,
                "step_position": position,
                "step_name": row.step.name,
                "error": error,
                "status": "failed",
            },
        )
    logger.warning("audit_step_failed", extra={"audit_id": audit_id, "position": position, "error": error})


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
        return _fail(
            audit,
            error[:2000],
            phase="analysis",
            partial={"completed_steps": completed, "total_steps": len(steps), "failed_steps": failed},
            tokens=total_tokens,
        )
    summary = summarize(audit, steps)
    updated = Audit.objects.filter(pk=audit.pk, status=AuditStatus.RUNNING).update(
        status=AuditStatus.COMPLETED,
        **summary.audit_fields(),
        total_tokens=total_tokens,
        duration_seconds=duration,
        completed_at=now,
        last_progress_at=now,
    )
    if updated != 1:
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
    _finished(audit)
    return True


def summarize(audit: Audit, steps: list[AuditStepResult]) -> compliance.Summary:
    outcomes = [
        compliance.StepOutcome(s.position, s.step.name, s.step.weight, s.step.is_critical, score_row(s), verdicts(s))
        for s in steps
        if s.status == StepStatus.COMPLETED
    ]
    return compliance.audit_summary(outcomes, audit.config_version.thresholds)


def _fail(audit: Audit, error: str, *, phase: str, partial: dict[str, int] | None = None, tokens: int = 0) -> bool:
    """End the audit failed, exactly once (the conditional update decides)."""
    now = timezone.now()
    updated = (
        Audit.objects.filter(pk=audit.pk)
        .exclude(status__in=TERMINAL_AUDIT_STATUSES)
        .update(
            status=AuditStatus.FAILED,
            error=error,
            completed_at=now,
            last_progress_at=now,
            total_tokens=tokens,
            duration_seconds=round((now - (audit.started_at or audit.created_at)).total_seconds(), 3),
        )
    )
    if updated != 1:
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
    _finished(audit)
    return True


def _tell_batch(audit: Audit, *, ok: bool, error: str | None = None) -> None:
    """After the commit that ended the audit: its batch's item ends, and so does every item of another
    batch that followed this audit (it found it running instead of starting a second one)."""
    from transcriptions.services.batches import batch_item_done, batch_ref_done

    audit_id, fiche_id = str(audit.pk), audit.fiche.fiche_id
    batch_id = str(audit.batch_id) if audit.batch_id is not None else None

    def tell() -> None:
        if batch_id is not None:
            batch_item_done(batch_id=batch_id, fiche_id=fiche_id, ok=ok, error=error)
        batch_ref_done(operation_type="audit", fiche_id=fiche_id, ref_id=audit_id, ok=ok, error=error)

    transaction.on_commit(tell)


def audit_fail_now(*, audit_id: str, reason: str, phase: str) -> bool:
    audit = Audit.objects.select_related("fiche").filter(pk=audit_id).first()
    return audit is not None and _fail(audit, reason, phase=phase)


# --- The reconciler ----------------------------------------------------------------------------------


def audit_reconcile(*, now: datetime | None = None) -> dict[str, list[str]]:
    """Every audit ends (beat): waiting for transcripts longer than ``AUDIT_TRANSCRIPTION_WAIT_SECONDS``
    → failed; no progress for ``AUDIT_DEADLINE_SECONDS`` → failed; every step ended → ended; no progress
    for ``AUDIT_STALL_SECONDS`` since its last progress or re-drive (or never dispatched) → re-driven."""
    now = now or timezone.now()
    stall = timedelta(seconds=settings.AUDIT_STALL_SECONDS)
    deadline = timedelta(seconds=settings.AUDIT_DEADLINE_SECONDS)
    wait_limit = timedelta(seconds=settings.AUDIT_TRANSCRIPTION_WAIT_SECONDS)
    actions: dict[str, list[str]] = {"redrive": [], "ended": [], "failed": []}
    for audit in Audit.objects.exclude(status__in=TERMINAL_AUDIT_STATUSES).select_related("fiche"):
        audit_id = str(audit.pk)
        progressed = audit.last_progress_at or audit.created_at
        if audit.status == AuditStatus.WAITING_TRANSCRIPTION:
            if audit.waiting_since and now - audit.waiting_since > wait_limit:
                if _fail(audit, "the fiche's transcription did not finish in time", phase="transcription"):
                    actions["failed"].append(audit_id)
                continue
            active = (
                TranscriptionRun.objects.filter(fiche=audit.fiche).exclude(status__in=TERMINAL_RUN_STATUSES).exists()
            )
            if not active:  # its transcription ended but the resume was lost
                actions["redrive"].append(audit_id)
            continue
        if now - progressed > deadline:
            if _fail(audit, "timed out (no progress)", phase="analysis" if audit.dispatched_at else "preparation"):
                actions["failed"].append(audit_id)
            continue
        if audit.dispatched_at is not None and not _positions_left(audit):
            if audit_step_settled(audit_id=audit_id):
                actions["ended"].append(audit_id)
            continue
        if now - max(progressed, audit.redriven_at or progressed) > stall:
            Audit.objects.filter(pk=audit.pk).update(redriven_at=now)
            actions["redrive"].append(audit_id)
            logger.warning("audit_redrive", extra={"audit_id": audit_id})
    return actions


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
    from transcriptions.services.runs import in_snapshot_scope

    fiche = fiche_for_transcription(user=None, fiche_id=item.fiche_id)
    if not in_snapshot_scope(fiche, batch.scope_snapshot):
        raise PermissionDeniedError("outside the requester's audits scope")
    audit = audit_request(
        fiche=fiche,
        config_id=config_for_fiche(fiche, batch.options.get("audit_config_id")),
        use_rlm=bool(batch.options.get("use_rlm")),
        user=batch.requested_by,
        batch_id=str(batch.pk),
    )
    return str(audit.pk)


def batch_item_state(item: Any) -> tuple[bool, str | None] | None:
    """The batch reconciler's view of an item: its audit's outcome once it ended."""
    audit = Audit.objects.filter(pk=item.ref_id).only("status", "error").first()
    if audit is None:
        return False, "its audit is gone"
    if not audit.is_terminal:
        return None
    return audit.status == AuditStatus.COMPLETED, audit.error
