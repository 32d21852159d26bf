"""Daily budgets: at the limit, interactive work (chat, reruns) is refused whatever the mode, background work
asked through the API is refused in ``refuse`` mode (429 ``budget_exhausted``, Retry-After to midnight) and
accepted to wait in ``wait`` mode; the gates before an audit's steps and a run's recordings make them wait (or
fail in refuse mode) and the reconcilers leave waiting work alone until the budget allows, then resume it. The
event, the toast and the log line go out once a day; ``budget.resumed`` once when work goes on."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audits.models import Audit, AuditStatus
from audits.services.reconcile import audit_reconcile
from costs import budgets
from costs.models import BudgetExhaustion, UsageRecord
from fiches.models import Recording
from realtime.publisher import build_messages
from tests.chat.conftest import FICHE_ID
from tests.costs.conftest import usage
from transcriptions.models import TranscriptionRun
from transcriptions.services import runs

pytestmark = pytest.mark.django_db


@pytest.fixture
def exhausted(fiche, settings):
    """Today's LLM spend 0.15 (1,000,000 prompt tokens of sim-judge-1) against a 0.10 global budget."""
    settings.BUDGET_LLM_DAILY = Decimal("0.10")
    settings.LLM_API_KEY, settings.LLM_BASE_URL = "sk-test", "http://127.0.0.1:9/v1"  # never called
    return usage(fiche=fiche, prompt_tokens=1_000_000)


@pytest.fixture
def operator(make_role, make_user):
    role = make_role(
        "operator", chat=("rw", "ALL"), audits=("rw", "ALL"), fiches=("r", "ALL"), transcriptions=("r", "ALL")
    )
    return make_user(role, email="operator@example.com")


@pytest.fixture
def budget_logs(caplog):
    caplog.set_level(logging.INFO, logger="costs.budgets")
    caplog.set_level(logging.INFO, logger="realtime.publisher")
    return caplog


def events(caplog, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "realtime_event" and getattr(r, "event", None) == name]


def assert_budget_exhausted(response, *, kind: str = "llm", scope: str = "global") -> None:
    assert response.status_code == 429, response.content
    error = response.json()["error"]
    assert error["code"] == "budget_exhausted", error
    details = error["details"]
    assert (details["kind"], details["scope"], details["currency"]) == (kind, scope, "USD")
    midnight = budgets.resets_at(timezone.localdate())
    assert details["resets_at"] == midnight.isoformat()
    left = (midnight - timezone.now()).total_seconds()
    assert left - 5 <= int(response["Retry-After"]) <= left + 5
    assert "budget reached" in error["message"]


def test_an_audit_run_is_refused_at_the_limit_in_refuse_mode_and_accepted_to_wait_otherwise(
    exhausted, fiche, operator, auth_client, settings, sent
):
    from django.core.management import call_command

    from audits.models import AuditConfig

    call_command("seed_audit_configs", verbosity=0)
    body = {"fiche_id": FICHE_ID, "audit_config_id": AuditConfig.objects.get().pk}
    settings.BUDGET_MODE = "refuse"
    assert_budget_exhausted(auth_client(operator).post("/api/audits/run", body, format="json"))
    assert not Audit.objects.exists()  # refused before anything was created
    assert_budget_exhausted(auth_client(operator).post("/api/audits/batch", {"fiche_ids": [FICHE_ID]}, format="json"))
    settings.BUDGET_MODE = "wait"
    accepted = auth_client(operator).post("/api/audits/run", body, format="json")
    assert accepted.status_code == 202 and accepted.json()["status"] == "pending"  # it waits in the worker


def test_chat_and_reruns_are_refused_at_the_limit_whatever_the_mode(exhausted, audit, operator, auth_client):
    assert budgets.budget_mode() == "wait"
    client = auth_client(operator)
    assert_budget_exhausted(client.post(f"/api/fiches/{FICHE_ID}/chat", {"message": "Le délai ?"}, format="json"))
    assert_budget_exhausted(client.post(f"/api/audits/{audit.pk}/chat", {"message": "Le niveau ?"}, format="json"))
    assert_budget_exhausted(client.post(f"/api/audits/{audit.pk}/steps/7/rerun", {}, format="json"))
    assert_budget_exhausted(client.post(f"/api/audits/{audit.pk}/steps/7/control-points/0/rerun", {}, format="json"))
    assert not audit.rerun_events.exists()


def test_a_transcription_is_refused_at_the_speech_to_text_limit_in_refuse_mode(
    fiche, make_role, make_user, auth_client, settings
):
    settings.BUDGET_STT_USER_DAILY, settings.BUDGET_MODE, settings.ELEVENLABS_API_KEY = Decimal("0.30"), "refuse", "xi"
    transcriber = make_user(make_role("tr", transcriptions=("rw", "ALL")), email="tr@example.com")
    usage(fiche=fiche, user=transcriber, kind="stt", model="scribe_v2", audio_seconds=3600)  # 0.40 of 0.30
    Recording.objects.create(call_id="c-new", fiche=fiche)
    response = auth_client(transcriber).post(f"/api/transcriptions/{FICHE_ID}", {}, format="json")
    assert_budget_exhausted(response, kind="stt", scope="user")
    assert not TranscriptionRun.objects.exists()
    assert "your daily speech-to-text budget" in response.json()["error"]["message"].lower()
    assert_budget_exhausted(
        auth_client(transcriber).post("/api/transcriptions/batch", {"fiche_ids": [FICHE_ID]}, format="json"),
        kind="stt",
        scope="user",
    )


def test_a_users_budget_stops_that_users_work_only(fiche, make_user, settings):
    settings.BUDGET_LLM_USER_DAILY = Decimal("0.10")
    spender, other = make_user(email="spender@example.com"), make_user(email="other@example.com")
    usage(fiche=fiche, user=spender, prompt_tokens=1_000_000)
    usage(fiche=fiche, user=None, prompt_tokens=10_000_000)  # unattributed: no user's budget
    state = budgets.blocking("llm", spender)
    assert state is not None and state.scope == "user"
    assert (state.spent, state.limit) == (Decimal("0.150000"), Decimal("0.10"))
    assert budgets.blocking("llm", other) is None and budgets.blocking("llm", None) is None


def test_the_event_toast_and_log_go_out_once_a_day_and_resumed_once(exhausted, chatter, budget_logs):
    for _ in range(3):
        with pytest.raises(budgets.BudgetExhausted):
            budgets.check("llm", chatter)
    (row,) = BudgetExhaustion.objects.all()
    assert (row.kind, row.user_id, row.mode, row.resumed_at) == ("llm", None, "wait", None)
    assert row.day == timezone.localdate()
    assert (row.limit, row.spent) == (Decimal("0.10"), Decimal("0.15"))
    assert len(events(budget_logs, "budget.exhausted")) == 1 and len(events(budget_logs, "notification")) == 1
    warnings = [r for r in budget_logs.records if r.getMessage() == "budget_exhausted"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING

    # The next day: yesterday's spend is yesterday's (what the budget sees after midnight).
    UsageRecord.objects.update(day=timezone.localdate() - timedelta(days=1))
    for _ in range(2):
        budgets.check("llm", chatter)
    row.refresh_from_db()
    assert row.resumed_at is not None
    assert len(events(budget_logs, "budget.resumed")) == 1


def test_the_global_channel_gets_only_which_budget_and_the_user_channel_the_figures(exhausted, make_user, settings):
    settings.BUDGET_LLM_USER_DAILY = Decimal("0.01")
    payload = {
        "budget_id": "llm:global:2026-02-04",
        "kind": "llm",
        "scope": "global",
        "day": "2026-02-04",
        "mode": "wait",
        "resets_at": "2026-02-05T00:00:00+01:00",
        "limit": "0.10",
        "spent": "0.15",
        "currency": "USD",
        "status": "exhausted",
    }
    (on_global,) = build_messages("budget.exhausted", payload)
    assert on_global["channel"] == "private-global"
    assert '"limit"' not in on_global["data"] and '"spent"' not in on_global["data"]
    assert '"budget_id":"llm:global:2026-02-04"' in on_global["data"] and '"redacted":true' in on_global["data"]
    user_copy = build_messages("budget.exhausted", {**payload, "scope": "user"}, user_id=7)
    assert [m["channel"] for m in user_copy] == ["private-global", "private-user-7"]
    assert '"spent":"0.15"' in user_copy[1]["data"] and '"spent"' not in user_copy[0]["data"]


def waiting_for_two_days(audit: Audit, user) -> Audit:
    """An audit of the same fiche waiting for the LLM budget for two days, without progress since."""
    long_ago = timezone.now() - timedelta(days=2)
    return Audit.objects.create(
        fiche=audit.fiche,
        config=audit.config,
        config_version=audit.config_version,
        status=AuditStatus.WAITING_BUDGET,
        requested_by=user,
        started_at=long_ago,
        waiting_since=long_ago,
        last_progress_at=long_ago,
    )


def test_a_waiting_audit_never_times_out_and_is_redriven_once_the_budget_allows(exhausted, audit, chatter, settings):
    waiting = waiting_for_two_days(audit, chatter)
    actions = audit_reconcile()
    assert str(waiting.pk) not in actions["redrive"] + actions["failed"]
    waiting.refresh_from_db()
    assert waiting.status == AuditStatus.WAITING_BUDGET  # past AUDIT_DEADLINE_SECONDS, still waiting

    UsageRecord.objects.update(day=timezone.localdate() - timedelta(days=1))  # the next day
    assert str(waiting.pk) in audit_reconcile()["redrive"]

    settings.BUDGET_MODE = "refuse"  # refuse mode: work still waiting when the limit is reached again fails
    usage(fiche=audit.fiche, prompt_tokens=1_000_000)
    assert str(waiting.pk) in audit_reconcile()["failed"]
    waiting.refresh_from_db()
    assert waiting.status == AuditStatus.FAILED and "daily LLM budget reached" in (waiting.error or "")


def test_an_audit_waiting_for_a_transcription_that_waits_for_the_budget_does_not_time_out(fiche, audit, settings):
    settings.BUDGET_STT_DAILY = Decimal("0.01")
    usage(fiche=fiche, kind="stt", model="scribe_v2", audio_seconds=3600)
    Recording.objects.create(call_id="c-later", fiche=fiche, started_at=datetime(2026, 2, 4, 12, tzinfo=UTC))
    run_id = runs.transcription_request(fiche=fiche).run_id
    assert run_id is not None and runs.run_dispatch(run_id=run_id) == []  # the gate: it waits
    long_ago = timezone.now() - timedelta(seconds=settings.AUDIT_TRANSCRIPTION_WAIT_SECONDS + 60)
    waiting = Audit.objects.create(
        fiche=fiche,
        config=audit.config,
        config_version=audit.config_version,
        status=AuditStatus.WAITING_TRANSCRIPTION,
        waiting_since=long_ago,
        last_progress_at=long_ago,
    )
    actions = audit_reconcile()
    assert str(waiting.pk) not in actions["failed"] + actions["redrive"]
    waiting.refresh_from_db()
    assert waiting.status == AuditStatus.WAITING_TRANSCRIPTION


def test_a_run_waits_at_the_speech_to_text_budget_then_resumes_or_fails_in_refuse_mode(fiche, settings):
    settings.BUDGET_STT_DAILY = Decimal("0.01")
    usage(fiche=fiche, kind="stt", model="scribe_v2", audio_seconds=3600)
    Recording.objects.create(call_id="c-later", fiche=fiche, started_at=datetime(2026, 2, 4, 12, tzinfo=UTC))
    run_id = runs.transcription_request(fiche=fiche).run_id
    assert run_id is not None
    assert runs.run_dispatch(run_id=run_id) == []
    run = TranscriptionRun.objects.get(pk=run_id)
    assert (run.status, run.dispatched_at) == ("pending", None) and run.waiting_budget_since is not None
    later = timezone.now() + timedelta(seconds=settings.TRANSCRIPTION_DEADLINE_SECONDS + 60)
    actions = runs.run_reconcile(now=later)  # far past its stall and deadline: it only waits
    assert run_id not in actions["redrive"] + actions["timed_out"] and not actions.get("resumed")

    UsageRecord.objects.update(day=timezone.localdate() - timedelta(days=1))
    assert runs.run_reconcile()["resumed"] == [run_id]
    assert runs.run_dispatch(run_id=run_id) == ["c-later"]
    run.refresh_from_db()
    assert run.status == "processing" and run.waiting_budget_since is None

    settings.BUDGET_MODE = "refuse"
    usage(fiche=fiche, kind="stt", model="scribe_v2", audio_seconds=3600)
    Recording.objects.create(call_id="c-other", fiche=fiche)
    TranscriptionRun.objects.filter(pk=run_id).update(status="completed")
    second = runs.transcription_request(fiche=fiche).run_id
    assert second is not None and runs.run_dispatch(run_id=second) == []
    ended = TranscriptionRun.objects.get(pk=second)
    assert ended.status == "failed" and "speech-to-text budget reached" in (ended.error or "")


def test_a_batch_whose_audit_waits_for_the_budget_waits_as_long_then_times_out_as_before(exhausted, audit, chatter):
    from batches.models import Batch, BatchItem
    from batches.services import batch_reconcile

    long_ago = timezone.now() - timedelta(days=2)
    waiting = waiting_for_two_days(audit, chatter)
    batch = Batch.objects.create(operation_type="audit", status="running", total=1, requested_by=chatter)
    BatchItem.objects.create(batch=batch, fiche_id=audit.fiche.fiche_id, ref_id=str(waiting.pk))
    Batch.objects.filter(pk=batch.pk).update(started_at=long_ago, last_progress_at=long_ago)
    assert str(batch.pk) not in batch_reconcile()["timed_out"]  # past BATCH_DEADLINE_SECONDS, its audit waits
    Audit.objects.filter(pk=waiting.pk).update(status=AuditStatus.RUNNING)  # no longer waiting, still no progress
    assert str(batch.pk) in batch_reconcile()["timed_out"]
