"""One step of an audit: claimed in Postgres (a short lease renewed by a heartbeat while the LLM answers),
asked of the LLM under the global cap, every quote through the evidence gate, the verdicts stored and
scored in code."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits import compliance
from audits.evidence import EvidenceIndex, QuoteCheck
from audits.models import (
    TERMINAL_AUDIT_STATUSES,
    Audit,
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
from audits.services import trust
from audits.transcript_tools import TOOL_SPECS, TranscriptTools
from core.leases import Lease, lease_seconds, new_token
from core.leases import claim_lease as lease_of
from costs.models import UsagePurpose
from costs.services import record_llm_usage
from fiches.models import FicheCache
from llm import client as llm
from llm.slots import llm_semaphore
from realtime.publisher import publish

logger = logging.getLogger("audits.steps")


# --- One step ----------------------------------------------------------------------------------------


def steps_count(audit: Audit) -> int:
    return audit.config_version.steps.count()


def step_claim(*, audit_id: str, position: int) -> AuditStepResult | None:
    """The Postgres fence of a step: take it (pending, or running with an expired lease) under its row
    lock, with a fresh ``claim_token``; ``None`` when it is done, failed, or in a live worker's hands (its
    lease, ``CLAIM_LEASE_SECONDS``, renewed by that worker's heartbeat: ``claim_lease``)."""
    stale = timezone.now() - timedelta(seconds=lease_seconds())
    with transaction.atomic():
        if Audit.objects.filter(pk=audit_id, status__in=TERMINAL_AUDIT_STATUSES).exists():
            return None
        row = AuditStepResult.objects.select_for_update().filter(audit_id=audit_id, position=position).first()
        if row is None or row.status in (StepStatus.COMPLETED, StepStatus.FAILED):
            return None
        if row.status == StepStatus.RUNNING and row.claimed_at and row.claimed_at > stale:
            return None
        row.status, row.claimed_at, row.attempts = StepStatus.RUNNING, timezone.now(), row.attempts + 1
        row.claim_token = new_token()
        row.save(update_fields=["status", "claimed_at", "attempts", "claim_token"])
    audit = Audit.objects.select_related("fiche").get(pk=audit_id)
    definition = row.step
    publish(
        "audit.step_started",
        {
            "audit_id": audit_id,
            "fiche_id": audit.fiche.fiche_id,
            "step_position": position,
            "step_name": definition.name,
            "total_steps": steps_count(audit),
            "step_weight": definition.weight,
            "is_critical": definition.is_critical,
            "status": "processing",
        },
    )
    return row


def claim_lease(row: AuditStepResult) -> Lease:
    """The step's claim as a lease the worker's heartbeat renews while it works on it."""
    assert row.claim_token is not None
    return lease_of(AuditStepResult, row.pk, row.claim_token)


def _claimed(audit_id: str, position: int, token: str | None) -> Any:
    rows = AuditStepResult.objects.filter(audit_id=audit_id, position=position, status=StepStatus.RUNNING)
    return rows if token is None else rows.filter(claim_token=token)


def step_release(*, audit_id: str, position: int, token: str | None = None) -> None:
    """Give the step back (pending) while this claim holds it (``token``; None: whoever holds it)."""
    _claimed(audit_id, position, token).update(status=StepStatus.PENDING, claimed_at=None, claim_token=None)


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
    tools_mode: bool | None = None,
) -> StepAsked:
    """The LLM's answer for one step (prompt mode: the timeline in the prompt; tools mode: the
    model searches the transcript), under the global LLM concurrency cap. Raises the client's
    errors and ``LimitBusy``."""
    tools_mode = audit.tools_mode if tools_mode is None else tools_mode
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
        f"{audit.pk}:{definition.position}:{timezone.now().timestamp()}",
        wait=settings.AUDIT_LLM_SLOT_WAIT_SECONDS,
        heartbeat=True,
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


def step_store(
    *, audit_id: str, position: int, asked: StepAsked, gated: list[GatedPoint], token: str | None = None
) -> bool:
    """Store the step's answer, citations and score, only while this worker's claim (``token``) holds
    the step: a holder that outlived its lease and lost the step to another worker writes nothing."""
    with transaction.atomic():
        row = _claimed(audit_id, position, token).select_for_update().select_related("step").first()
        if row is None:
            return False
        write_points(row, gated)
        score = score_row(row)
        usage = asked.result.usage
        row.status, row.completed_at, row.error = StepStatus.COMPLETED, timezone.now(), None
        row.claim_token = None
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
        # Under the claim that fences the store: a duplicate or late holder records nothing (counted once).
        record_llm_usage(
            purpose=UsagePurpose.AUDIT_STEP,
            usage=usage,
            model=asked.result.model,
            audit_id=audit.pk,
            fiche_id=audit.fiche_id,
            user_id=audit.requested_by_id,
        )
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
    (calibration measures the AI, not the reruns). A point whose AI trust is withdrawn now
    (``audits.services.trust``) gets its verdict as advice: ``advisory``, pending until a reviewer decides."""
    config_id = Audit.objects.filter(pk=row.audit_id).values_list("config_id", flat=True).get()
    advisory = trust.withdrawn_indexes(config_id, row.position)
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
            advisory=g.index in advisory,
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


def step_fail(*, audit_id: str, position: int, error: str, token: str | None = None) -> bool:
    """The step fails with ``error`` while this worker's claim (``token``) holds it (``None``: a step not
    ended yet, whoever holds it). Whether it failed now."""
    error = error[:2000]
    rows = (
        _claimed(audit_id, position, token)
        if token is not None
        else AuditStepResult.objects.filter(
            audit_id=audit_id, position=position, status__in=[StepStatus.PENDING, StepStatus.RUNNING]
        )
    )
    with transaction.atomic():
        updated = rows.update(status=StepStatus.FAILED, error=error, completed_at=timezone.now(), claim_token=None)
        if not updated:
            return False
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
    return True
