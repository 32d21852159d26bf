"""Retention purges (privacy.retention): per kind, rows just past their cutoff go and rows just inside stay;
what is in use is never touched; batches are bounded and a capped run is finished by the next; the report,
the log line, the beat schedule, the task and the command say what changed."""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection, transaction
from django_celery_beat.models import PeriodicTask
from freezegun import freeze_time

from audits.models import (
    Audit,
    AuditConfig,
    AuditConfigVersion,
    AuditStepDefinition,
    AuditStepResult,
    Citation,
    ControlPointResult,
    Evaluation,
)
from chat.models import ChatConversation, ChatMessage
from core.exceptions import ConflictError
from costs.models import UsageRecord
from fiches.models import FicheCache, Recording, WorkflowLog
from privacy import retention
from privacy.models import PurgeReport
from privacy.tasks import purge_personal_data
from realtime.models import WebhookDelivery, WebhookDeliveryAttempt
from realtime.webhooks import delivery_redeliver
from transcriptions.models import Transcription, TranscriptionRun
from transcriptions.selectors import fiche_status

NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
DAYS = {"transcripts": 730, "audit_quotes": 730, "chat": 180, "webhooks": 30, "logs": 90}
QUOTE = "votre numéro est le zéro six douze trente-quatre, madame Durand"
PAYLOAD = '{"type": "audit.completed", "data": {"prospect": "Durand"}}'
ZEROS = dict.fromkeys(retention.COUNTERS, 0)


def past(days: int) -> datetime:
    """Just past the cutoff of a ``days`` retention: due."""
    return NOW - timedelta(days=days, seconds=1)


def inside(days: int) -> datetime:
    """Just inside it: kept."""
    return NOW - timedelta(days=days) + timedelta(seconds=1)


@pytest.fixture(autouse=True)
def _retention(settings):
    """The documented defaults, whatever the environment says."""
    settings.RETENTION_TRANSCRIPT_DAYS = DAYS["transcripts"]
    settings.RETENTION_AUDIT_QUOTE_DAYS = DAYS["audit_quotes"]
    settings.RETENTION_CHAT_DAYS = DAYS["chat"]
    settings.RETENTION_WEBHOOK_BODY_DAYS = DAYS["webhooks"]
    settings.RETENTION_WORKFLOW_LOG_DAYS = DAYS["logs"]
    settings.RETENTION_PURGE_BATCH_SIZE = 500
    settings.RETENTION_PURGE_MAX_BATCHES = 200


# --- Rows ------------------------------------------------------------------------------------------------


def a_fiche(fiche_id: str = "F-1") -> FicheCache:
    return FicheCache.objects.create(fiche_id=fiche_id, sales_date=date(2025, 5, 1), groupe="Lyon-2")


def a_transcription(fiche: FicheCache, call_id: str, *, at: datetime, status: str = "completed", run=None):
    recording = Recording.objects.create(call_id=call_id, fiche=fiche, started_at=at, direction="outbound")
    return Transcription.objects.create(
        recording=recording,
        fiche=fiche,
        call_id=call_id,
        status=status,
        run=run,
        text=QUOTE,
        words=[{"text": "madame", "start": 1.0, "end": 1.4, "type": "word", "speaker_id": "speaker_0"}],
        speaker_map={"speaker_0": "agent"},
        transcribed_at=at,
    )


@pytest.fixture
def version(db) -> AuditConfigVersion:
    config = AuditConfig.objects.create(name="Conformité")
    version = AuditConfigVersion.objects.create(config=config, version=1, name="Conformité", thresholds={})
    AuditStepDefinition.objects.create(config_version=version, position=1, name="Rétractation", weight=10)
    return version


def an_audit(fiche: FicheCache, version: AuditConfigVersion, *, finished_at: datetime) -> Audit:
    """A completed audit with one step: its LLM answer quotes the call, one verified and one rejected citation."""
    audit = Audit.objects.create(
        fiche=fiche,
        config=version.config,
        config_version=version,
        status="completed",
        score_percentage=100,
        niveau="EXCELLENT",
        is_compliant=True,
        completed_at=finished_at,
    )
    answer = {
        "control_points": [
            {
                "index": 0,
                "status": "pass",
                "quotes": [{"text": QUOTE, "speaker": "agent"}, {"text": "un autre passage", "speaker": None}],
                "rationale": "L'agent rappelle le délai.",
            }
        ]
    }
    row = AuditStepResult.objects.create(
        audit=audit,
        step=version.steps.get(),
        position=1,
        status="completed",
        score=10,
        max_score=10,
        conforme=True,
        raw_result=answer,
    )
    point = ControlPointResult.objects.create(
        step_result=row, index=0, ai_status="pass", status="pass", rationale="L'agent rappelle le délai."
    )
    Citation.objects.create(
        control_point=point,
        position=0,
        quote=QUOTE,
        text=QUOTE,
        speaker="agent",
        call_id="c-1",
        start=1.0,
        end=3.5,
        verified=True,
        score=97.0,
    )
    Citation.objects.create(control_point=point, position=1, quote="un autre passage", reason="not_found", score=40.0)
    return audit


def an_evaluation(version: AuditConfigVersion, *, finished_at: datetime) -> Evaluation:
    changed = {
        "fiche_id": "F-1",
        "step_position": 1,
        "control_point_index": 0,
        "reviewer": "pass",
        "baseline": {"status": "fail", "quotes": []},
        "candidate": {"status": "pass", "quotes": [QUOTE]},
    }
    return Evaluation.objects.create(
        config=version.config,
        version=version,
        status="completed",
        completed_at=finished_at,
        result={"fiches": 1, "changed": [changed]},
    )


def a_conversation(user, entity_id: str, *messages: datetime) -> ChatConversation:
    conversation = ChatConversation.objects.create(user=user, entity_type="fiche", entity_id=entity_id)
    for at in messages:
        ChatMessage.objects.create(conversation=conversation, role="user", content=QUOTE, created_at=at)
    ChatConversation.objects.filter(pk=conversation.pk).update(updated_at=max(messages))
    return conversation


def a_delivery(status: str, *, at: datetime) -> WebhookDelivery:
    delivery = WebhookDelivery.objects.create(
        source="test",
        source_id="1",
        event="audit.completed",
        url="https://example.com/hook",
        payload=PAYLOAD,
        status=status,
    )
    WebhookDelivery.objects.filter(pk=delivery.pk).update(created_at=at)
    WebhookDeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=at,
        request_headers={"webhook-id": delivery.webhook_id},
        response_status=200 if status == "success" else 500,
        response_headers={"content-type": "text/plain"},
        response_body="reçu pour madame Durand",
    )
    return delivery


def a_log(at: datetime) -> WorkflowLog:
    log = WorkflowLog.objects.create(event="day_completed", data={"fiche_id": "F-1"})
    WorkflowLog.objects.filter(pk=log.pk).update(created_at=at)
    return log


@dataclass
class World:
    fiche: FicheCache
    old_tx: Transcription
    new_tx: Transcription
    old_audit: Audit
    new_audit: Audit
    old_eval: Evaluation
    new_eval: Evaluation
    old_chat: ChatConversation
    mixed_chat: ChatConversation
    old_success: WebhookDelivery
    old_failed: WebhookDelivery
    old_pending: WebhookDelivery
    new_success: WebhookDelivery
    old_log: WorkflowLog
    new_log: WorkflowLog


@pytest.fixture
def world(db, version, make_user) -> World:
    """For every kind, one row just past its cutoff and one just inside."""
    fiche = a_fiche()
    user = make_user()
    t, a, c, w, lg = DAYS["transcripts"], DAYS["audit_quotes"], DAYS["chat"], DAYS["webhooks"], DAYS["logs"]
    return World(
        fiche=fiche,
        old_tx=a_transcription(fiche, "c-old", at=past(t)),
        new_tx=a_transcription(fiche, "c-new", at=inside(t)),
        old_audit=an_audit(fiche, version, finished_at=past(a)),
        new_audit=an_audit(fiche, version, finished_at=inside(a)),
        old_eval=an_evaluation(version, finished_at=past(a)),
        new_eval=an_evaluation(version, finished_at=inside(a)),
        old_chat=a_conversation(user, "F-old", past(c)),
        mixed_chat=a_conversation(user, "F-mixed", past(c), inside(c)),
        old_success=a_delivery("success", at=past(w)),
        old_failed=a_delivery("failed", at=past(w)),
        old_pending=a_delivery("pending", at=past(w)),
        new_success=a_delivery("success", at=inside(w)),
        old_log=a_log(past(lg)),
        new_log=a_log(inside(lg)),
    )


def citations(audit: Audit) -> list[Citation]:
    return list(Citation.objects.filter(control_point__step_result__audit=audit).order_by("position"))


def answer(audit: Audit) -> dict:
    return AuditStepResult.objects.get(audit=audit).raw_result


# --- Each kind --------------------------------------------------------------------------------------------


def test_rows_just_past_their_cutoff_are_purged_and_rows_just_inside_are_kept(world):
    usage = UsageRecord.objects.create(
        kind="stt", purpose="transcription", audio_seconds=60, transcription=world.old_tx
    )

    report = retention.purge_due(now=NOW)

    assert report.purged == {
        "transcripts": 1,
        "audit_quotes": 2,
        "audit_answers": 1,
        "evaluation_quotes": 1,
        "chat_messages": 2,
        "chat_conversations": 1,
        "webhook_bodies": 2,
        "webhook_responses": 2,
        "workflow_logs": 1,
    }
    assert report.complete is True and report.error is None and report.finished_at is not None
    assert PurgeReport.objects.get().purged == report.purged

    # Transcripts: the old row is gone, the spend it cost is kept, the fiche shows the recording untranscribed.
    assert list(Transcription.objects.values_list("call_id", flat=True)) == ["c-new"]
    usage.refresh_from_db()
    assert usage.transcription_id is None and usage.audio_seconds == 60
    statuses = {r["call_id"]: r["status"] for r in fiche_status(world.fiche)["recordings"]}
    assert statuses == {"c-old": "none", "c-new": "completed"}

    # Audit quotes: blanked, everything else of the citation and the verdicts kept; the recent audit untouched.
    verified, rejected = citations(world.old_audit)
    assert (verified.quote, verified.text, rejected.quote) == ("", "", "")
    assert (verified.call_id, verified.start, verified.end, verified.speaker) == ("c-1", 1.0, 3.5, "agent")
    assert (verified.verified, verified.score, rejected.reason) == (True, 97.0, "not_found")
    point = answer(world.old_audit)["control_points"][0]
    assert point["quotes"] == [{"text": "", "speaker": "agent"}, {"text": "", "speaker": None}]
    assert (point["status"], point["rationale"]) == ("pass", "L'agent rappelle le délai.")
    assert ControlPointResult.objects.get(step_result__audit=world.old_audit).rationale == "L'agent rappelle le délai."
    world.old_audit.refresh_from_db()
    assert (world.old_audit.niveau, world.old_audit.score_percentage) == ("EXCELLENT", 100)
    assert [c.quote for c in citations(world.new_audit)] == [QUOTE, "un autre passage"]
    assert answer(world.new_audit)["control_points"][0]["quotes"][0]["text"] == QUOTE
    world.old_eval.refresh_from_db()
    world.new_eval.refresh_from_db()
    assert world.old_eval.result["changed"][0]["candidate"] == {"status": "pass", "quotes": [""]}
    assert world.new_eval.result["changed"][0]["candidate"]["quotes"] == [QUOTE]

    # Chat: old messages gone; a conversation left empty goes, one with a recent message stays with it.
    assert not ChatConversation.objects.filter(pk=world.old_chat.pk).exists()
    assert list(ChatMessage.objects.values_list("conversation_id", flat=True)) == [world.mixed_chat.pk]

    # Webhooks: ended old deliveries lose their bodies (headers and status kept); pending and recent ones keep them.
    bodies = dict(WebhookDelivery.objects.values_list("pk", "payload"))
    assert bodies == {
        world.old_success.pk: "{}",
        world.old_failed.pk: "{}",
        world.old_pending.pk: PAYLOAD,
        world.new_success.pk: PAYLOAD,
    }
    responses = {a.delivery_id: a for a in WebhookDeliveryAttempt.objects.all()}
    assert responses[world.old_failed.pk].response_body == ""
    assert responses[world.old_failed.pk].response_status == 500
    assert responses[world.old_failed.pk].request_headers == {"webhook-id": world.old_failed.webhook_id}
    assert responses[world.old_pending.pk].response_body == "reçu pour madame Durand"
    assert responses[world.new_success.pk].response_body == "reçu pour madame Durand"

    assert list(WorkflowLog.objects.values_list("pk", flat=True)) == [world.new_log.pk]

    # Nothing purged is due again: the next run changes nothing.
    assert retention.count_due(now=NOW) == ZEROS
    again = retention.purge_due(now=NOW)
    assert again.purged == ZEROS and again.complete is True


def test_zero_days_keeps_every_kind_forever(world, settings):
    for name in ("TRANSCRIPT", "AUDIT_QUOTE", "CHAT", "WEBHOOK_BODY", "WORKFLOW_LOG"):
        setattr(settings, f"RETENTION_{name}_DAYS", 0)

    report = retention.purge_due(now=NOW + timedelta(days=5000))

    assert report.purged == dict.fromkeys(retention.COUNTERS, None)
    assert report.complete is True
    assert Transcription.objects.count() == 2
    assert all(c.quote for c in Citation.objects.all())
    assert ChatMessage.objects.count() == 3 and WorkflowLog.objects.count() == 2
    assert set(WebhookDelivery.objects.values_list("payload", flat=True)) == {PAYLOAD}


def test_one_kind_kept_forever_the_others_purged(world, settings):
    settings.RETENTION_CHAT_DAYS = 0

    report = retention.purge_due(now=NOW)

    assert report.purged["chat_messages"] is None and report.purged["chat_conversations"] is None
    assert report.purged["workflow_logs"] == 1
    assert ChatMessage.objects.count() == 3


def test_a_pending_or_retrying_delivery_is_never_blanked(db):
    retrying = a_delivery("pending", at=NOW - timedelta(days=400))
    WebhookDelivery.objects.filter(pk=retrying.pk).update(attempts=2, next_retry_at=NOW + timedelta(minutes=5))

    report = retention.purge_due(now=NOW)

    assert report.purged["webhook_bodies"] == 0 and report.purged["webhook_responses"] == 0
    retrying.refresh_from_db()
    assert retrying.payload == PAYLOAD
    assert WebhookDeliveryAttempt.objects.get().response_body == "reçu pour madame Durand"


def test_a_transcription_in_use_is_never_deleted(db):
    fiche = a_fiche()
    old = past(DAYS["transcripts"])
    run = TranscriptionRun.objects.create(fiche=fiche, status="processing", call_ids=["c-1", "c-2", "c-3"])
    # A forced re-transcription of old transcripts: one being transcribed, one waiting, one done by the run.
    a_transcription(fiche, "c-1", at=old, status="processing", run=run)
    a_transcription(fiche, "c-2", at=old, status="pending", run=run)
    a_transcription(fiche, "c-3", at=old, status="completed", run=run)

    assert retention.purge_due(now=NOW).purged["transcripts"] == 0
    assert Transcription.objects.count() == 3

    # Once the run has ended, what it left completed or failed with an old transcript is due.
    TranscriptionRun.objects.filter(pk=run.pk).update(status="partial")
    Transcription.objects.filter(call_id="c-1").update(status="failed")
    assert retention.purge_due(now=NOW).purged["transcripts"] == 2
    assert list(Transcription.objects.values_list("call_id", flat=True)) == ["c-2"]


@pytest.mark.django_db(transaction=True)
def test_a_row_another_transaction_holds_is_skipped_not_waited_for():
    fiche = a_fiche()
    old = past(DAYS["transcripts"])
    held = a_transcription(fiche, "c-held", at=old)
    a_transcription(fiche, "c-free", at=old)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:  # a worker holding the row (e.g. claiming it) while the purge runs
        try:
            with transaction.atomic():
                Transcription.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        report = retention.purge_due(now=NOW)
    finally:
        release.set()
        holder.join(10)

    assert report.purged["transcripts"] == 1
    assert list(Transcription.objects.values_list("call_id", flat=True)) == ["c-held"]
    assert retention.purge_due(now=NOW).purged["transcripts"] == 1  # the next run takes it
    assert not Transcription.objects.exists()


# --- Bounded batches --------------------------------------------------------------------------------------


def test_the_batch_cap_leaves_the_rest_for_the_next_run(db, version, settings):
    settings.RETENTION_PURGE_BATCH_SIZE = 2
    settings.RETENTION_PURGE_MAX_BATCHES = 2
    for _ in range(5):
        a_log(past(DAYS["logs"]))
    fiche = a_fiche()
    audits = [an_audit(fiche, version, finished_at=past(DAYS["audit_quotes"])) for _ in range(3)]  # 2 quotes each

    first = retention.purge_due(now=NOW)

    assert first.complete is False
    assert (first.purged["workflow_logs"], first.purged["audit_quotes"], first.purged["audit_answers"]) == (4, 4, 2)
    assert WorkflowLog.objects.count() == 1
    assert [all(not c.quote for c in citations(a)) for a in audits] == [True, True, False]
    assert retention.count_due(now=NOW)["audit_quotes"] == 2

    second = retention.purge_due(now=NOW)

    assert second.complete is True
    assert (second.purged["workflow_logs"], second.purged["audit_quotes"], second.purged["audit_answers"]) == (1, 2, 1)
    assert not WorkflowLog.objects.exists()
    assert not Citation.objects.exclude(quote="").exists()
    assert all(q["text"] == "" for a in audits for q in answer(a)["control_points"][0]["quotes"])


def test_a_failing_kind_is_reported_and_the_others_still_run(world, settings):
    settings.RETENTION_CHAT_DAYS = 10**6  # a cutoff before year 1: this kind cannot run

    report = retention.purge_due(now=NOW)

    assert report.complete is False
    assert report.error.startswith("chat_messages: OverflowError")
    assert (report.purged["chat_messages"], report.purged["chat_conversations"]) == (0, 0)
    assert (report.purged["transcripts"], report.purged["webhook_bodies"], report.purged["workflow_logs"]) == (1, 2, 1)


def test_one_log_line_with_the_counts_and_no_personal_data(world, caplog):
    caplog.set_level(logging.INFO, logger="privacy.retention")

    report = retention.purge_due(now=NOW)

    (record,) = [r for r in caplog.records if r.getMessage() == "retention_purged"]
    assert (record.transcripts, record.audit_quotes, record.workflow_logs) == (1, 2, 1)
    assert (record.report_id, record.complete, record.kept_forever) == (report.pk, True, "-")
    assert "Durand" not in repr(vars(record))


# --- Schedule, task, command ------------------------------------------------------------------------------


def test_the_daily_purge_is_scheduled_after_migrate(db):
    task = PeriodicTask.objects.select_related("crontab").get(task="privacy.tasks.purge_personal_data")
    assert task.enabled
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week) == ("30", "3", "*")
    assert str(task.crontab.timezone) == django_settings.TIME_ZONE
    from config.celery import app

    app.loader.import_default_modules()
    assert "privacy.tasks.purge_personal_data" in app.tasks


def test_the_task_runs_the_purge_and_returns_the_counts(world):
    with freeze_time(NOW):
        counts = purge_personal_data.apply().get()

    assert (counts["transcripts"], counts["audit_quotes"], counts["workflow_logs"]) == (1, 2, 1)
    assert counts == PurgeReport.objects.get().purged
    assert list(Transcription.objects.values_list("call_id", flat=True)) == ["c-new"]


def test_the_command_prints_the_counts_and_dry_run_changes_nothing(world):
    dry, out = io.StringIO(), io.StringIO()
    with freeze_time(NOW):
        call_command("purge_personal_data", "--dry-run", stdout=dry)

    assert "transcripts          1\n" in dry.getvalue() and "Dry run: nothing changed." in dry.getvalue()
    assert "audit_answers        1\n" in dry.getvalue() and "chat_conversations   1\n" in dry.getvalue()
    assert Transcription.objects.count() == 2 and not PurgeReport.objects.exists()

    with freeze_time(NOW):
        call_command("purge_personal_data", stdout=out)

    report = PurgeReport.objects.get()
    lines = out.getvalue().splitlines()
    assert lines[: len(retention.COUNTERS)] == [f"{c:<20} {report.purged[c]}" for c in retention.COUNTERS]
    assert "workflow_logs        1" in lines and f"Complete (report {report.pk})." in lines


def test_a_purged_delivery_cannot_be_redelivered(db):
    delivery = a_delivery("failed", at=NOW - timedelta(days=31))
    retention.purge_due(now=NOW)
    delivery.refresh_from_db()
    assert delivery.payload == "{}"
    with pytest.raises(ConflictError) as refused:
        delivery_redeliver(delivery=delivery)
    assert refused.value.code == "delivery_purged"
    delivery.refresh_from_db()
    assert delivery.status == "failed"  # nothing was queued
