"""Usage is recorded once per real call, in the transaction that stores the call's result, under the claim
that fences it: an audit step and a rerun (asked of the LLM simulator over HTTP), a chat answer (streamed,
or cut short: then estimated), a transcription (a vendor result stored twice by a late holder counts once)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db.models import Sum

from audits.evidence import EvidenceIndex
from audits.models import Audit, AuditStepResult
from audits.services import reviews, steps
from chat import services as chat
from costs.models import UsageRecord
from costs.pricing import cost_expression, llm_cost
from costs.selectors import usage_in_scope
from tests.chat.conftest import FICHE_ID
from transcriptions.clients.elevenlabs import SttResult
from transcriptions.models import TranscriptionRun
from transcriptions.selectors import timeline_for
from transcriptions.services import runs

pytestmark = pytest.mark.django_db


def logged_usage(simulator, *, since: int = 0) -> dict[str, int]:
    """The usage the simulator answered, summed over its chat completion requests after the first ``since``."""
    total = {"prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}
    for entry in simulator.requests()[since:]:
        if entry["path"] == "/v1/chat/completions" and entry["status"] == 200:
            used = entry["response"]["usage"]
            total["prompt_tokens"] += used["prompt_tokens"]
            total["completion_tokens"] += used["completion_tokens"]
            total["cached_tokens"] += used["prompt_tokens_details"]["cached_tokens"]
    return total


def test_an_audit_step_records_its_llm_usage_once(sim, fiche, audit, chatter):
    pending = Audit.objects.create(
        fiche=fiche,
        config=audit.config,
        config_version=audit.config_version,
        status="running",
        requested_by=chatter,
        dispatched_at=datetime(2026, 2, 4, 11, 0, tzinfo=UTC),
    )
    definition = audit.config_version.steps.get(position=7)
    AuditStepResult.objects.create(audit=pending, step=definition, position=7, max_score=definition.weight)
    row = steps.step_claim(audit_id=str(pending.pk), position=7)
    assert row is not None
    timeline = timeline_for(fiche)
    asked = steps.step_ask_llm(audit=pending, definition=definition, timeline=timeline)
    gated = steps.gate_answer(definition=definition, answer=asked.answer, index=EvidenceIndex(timeline.turns))
    assert steps.step_store(audit_id=str(pending.pk), position=7, asked=asked, gated=gated, token=row.claim_token)
    # A duplicate or late holder of the same answer stores nothing, and records nothing.
    assert not steps.step_store(audit_id=str(pending.pk), position=7, asked=asked, gated=gated, token=row.claim_token)

    (record,) = UsageRecord.objects.all()
    served = logged_usage(sim)
    assert (record.kind, record.purpose, record.model, record.estimated) == ("llm", "audit_step", "sim-judge-1", False)
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens) == (
        served["prompt_tokens"],
        served["completion_tokens"],
        served["cached_tokens"],
    )
    assert (record.audit_id, record.fiche_id, record.user_id) == (pending.pk, fiche.pk, chatter.pk)
    assert record.rerun_id is None
    stored = AuditStepResult.objects.get(audit=pending, position=7)
    assert (stored.prompt_tokens, stored.completion_tokens) == (record.prompt_tokens, record.completion_tokens)


def test_a_rerun_records_its_llm_usage_once_for_its_requester(sim, fiche, audit, make_role, make_user):
    reviewer = make_user(make_role("rev", audits=("rw", "ALL")), email="rev@example.com")
    event = reviews.rerun_request(audit=audit, position=7, instructions="Relisez le délai.", user=reviewer)
    claimed = reviews.rerun_claim(rerun_id=str(event.pk))
    assert claimed is not None
    definition = claimed.step_result.step
    timeline = timeline_for(fiche)
    asked = steps.step_ask_llm(
        audit=audit, definition=definition, timeline=timeline, reviewer_instructions=claimed.instructions
    )
    gated = steps.gate_answer(definition=definition, answer=asked.answer, index=EvidenceIndex(timeline.turns))
    token = claimed.claim_token
    assert reviews.rerun_apply(rerun_id=str(event.pk), asked=asked, gated=gated, token=token)
    assert not reviews.rerun_apply(rerun_id=str(event.pk), asked=asked, gated=gated, token=token)

    (record,) = UsageRecord.objects.all()
    assert (record.purpose, record.rerun_id, record.audit_id, record.fiche_id, record.user_id) == (
        "rerun",
        event.pk,
        audit.pk,
        fiche.pk,
        reviewer.pk,
    )
    assert record.prompt_tokens == logged_usage(sim)["prompt_tokens"] > 0


def test_a_chat_answer_records_its_usage_with_the_answer(sim, fiche, chatter):
    stream = chat.chat_start(user=chatter, entity_type="fiche", entity_id=FICHE_ID, message="Le délai est-il annoncé ?")
    body = b"".join(stream)
    stream.close()
    assert b"event: done" in body
    (record,) = UsageRecord.objects.all()
    served = logged_usage(sim)
    assert (record.kind, record.purpose, record.estimated) == ("llm", "chat", False)
    assert (record.prompt_tokens, record.completion_tokens) == (served["prompt_tokens"], served["completion_tokens"])
    assert (record.conversation_id, record.fiche_id, record.user_id) == (stream.conversation_id, fiche.pk, chatter.pk)
    assert record.audit_id is None


def test_a_chat_answer_cut_short_records_an_estimate(sim, fiche, chatter):
    sim.config.stream_token_delay_ms = 20
    stream = chat.chat_start(user=chatter, entity_type="fiche", entity_id=FICHE_ID, message="Résumez l'appel.")
    received = [next(stream) for _ in range(4)]  # the first byte, then three tokens
    assert all(part.startswith(b"event: token") for part in received[1:])
    stream.close()  # the client went away: the provider still billed what it generated
    (record,) = UsageRecord.objects.all()
    assert record.estimated is True and record.purpose == "chat"
    assert record.prompt_tokens > 0 and record.completion_tokens > 0
    assert record.completion_tokens < 50  # the part that had arrived, not a whole answer


def test_a_transcription_records_its_audio_seconds_once(fiche, make_role, make_user, settings):
    from fiches.models import Recording

    requester = make_user(make_role("tr", transcriptions=("rw", "ALL")), email="tr@example.com")
    recording = Recording.objects.create(call_id="c-cost-1", fiche=fiche, duration_seconds=95.0)
    result = runs.transcription_request(fiche=fiche, user=requester)
    run_id = result.run_id
    assert run_id is not None
    row, reason = runs.recording_claim(run_id=run_id, call_id=recording.call_id)
    assert row is not None, reason
    vendor = SttResult("fr", 0.99, "Bonjour.", "tr-1", 93.4, [])
    assert runs.recording_store(run_id=run_id, call_id=recording.call_id, result=vendor, token=row.claim_token).ok
    late = runs.recording_store(run_id=run_id, call_id=recording.call_id, result=vendor, token=row.claim_token)
    assert late.skipped == runs.CLAIM_LOST
    (record,) = UsageRecord.objects.all()
    assert (record.kind, record.purpose, record.audio_seconds, record.model) == (
        "stt",
        "transcription",
        93.4,
        settings.ELEVENLABS_MODEL_ID,
    )
    assert (record.transcription_run_id, record.fiche_id, record.user_id) == (
        TranscriptionRun.objects.get().pk,
        fiche.pk,
        requester.pk,
    )
    assert record.transcription_id == row.pk


def test_a_vendor_result_without_a_duration_counts_the_recordings(fiche, make_role, make_user):
    from fiches.models import Recording

    recording = Recording.objects.create(call_id="c-cost-2", fiche=fiche, duration_seconds=95.0)
    run_id = runs.transcription_request(fiche=fiche).run_id
    assert run_id is not None
    row, _ = runs.recording_claim(run_id=run_id, call_id=recording.call_id)
    assert row is not None
    vendor = SttResult("fr", 0.99, "Bonjour.", "tr-2", None, [])
    runs.recording_store(run_id=run_id, call_id=recording.call_id, result=vendor, token=row.claim_token)
    record = UsageRecord.objects.get()
    assert record.audio_seconds == 95.0 and record.user_id is None  # unattributed: no requester


def test_recorded_usage_is_priced_as_the_provider_reported_it(sim, fiche, audit, chatter):
    b"".join(chat.chat_start(user=chatter, entity_type="audit", entity_id=str(audit.pk), message="Le niveau ?"))
    record = UsageRecord.objects.get()
    assert record.fiche_id == fiche.pk  # an audit's conversation is on the audit's fiche
    expected = llm_cost("sim-judge-1", record.prompt_tokens, record.completion_tokens, record.cached_tokens)
    assert usage_in_scope(chatter).aggregate(total=Sum(cost_expression()))["total"] == expected
