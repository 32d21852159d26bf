"""``realtime.publisher``: events reach a (stub) Pusher REST API after commit, as signed batch
triggers of at most 10 events; Pusher trouble never breaks the caller (circuit breaker); invalid
events are caught; rolled-back transactions publish nothing.

Job code publishes from Celery workers, where the batch is sent right after commit: ``in_worker``
runs the publishing code as the body of an eagerly applied task. From a web request the batch is
handed to a task instead (``send_pusher_messages`` queued on the test broker).
"""

from __future__ import annotations

import json
import logging
import time
from datetime import date

import pytest
from django.db import transaction

from fiches.models import ProgressiveFetchJob
from fiches.services import jobs
from realtime import publisher
from realtime.events import InvalidEvent
from realtime.publisher import publish, publish_many
from realtime.tasks import send_pusher_messages

from .conftest import APP_ID, free_port, in_worker, queued_tasks


def notification(i: int = 0) -> dict:
    return {"type": "info", "message": f"Message {i}", "duration": 3000}


def transcription_started(fiche_id: str = "F1", **extra) -> dict:
    return {
        "fiche_id": fiche_id,
        "total_recordings": 2,
        "priority": "high",
        "started_at": "2026-03-02T09:00:00Z",
        "status": "started",
        **extra,
    }


def audit_started() -> dict:
    return {
        "audit_id": "A1",
        "fiche_id": "F1",
        "audit_config_id": "c1",
        "audit_config_name": "Standard",
        "total_steps": 5,
        "started_at": "2026-03-02T09:00:00Z",
        "status": "started",
    }


def log_lines(caplog, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == message]


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO, logger="realtime.publisher")
    return caplog


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """``committed(fn)``: run ``fn`` in a worker and run its after-commit callbacks at the end of it
    (the test transaction itself never commits)."""

    def _run(fn):
        def body():
            with django_capture_on_commit_callbacks(execute=True):
                return fn()

        return in_worker(body)

    return _run


# --- Delivery ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_event_arrives_as_a_signed_batch_trigger_with_the_bare_payload(pusher_stub, committed):
    payload = transcription_started(fiche_id="F1")
    committed(lambda: publish("transcription.started", payload))

    assert len(pusher_stub.calls) == 1
    call = pusher_stub.calls[0]
    assert call.signature_ok, call.problem
    assert call.status == 200
    assert call.path == f"/apps/{APP_ID}/batch_events"
    assert call.params["auth_key"] == "key" and call.params["auth_version"] == "1.0"
    assert len(call.params["auth_signature"]) == 64
    assert [{k: e[k] for k in ("channel", "name")} for e in call.batch] == [
        {"channel": "private-fiche-F1", "name": "transcription.started"},
        {"channel": "private-transcription-F1", "name": "transcription.started"},
    ]
    assert isinstance(call.batch[0]["data"], str)  # JSON text, as Pusher expects
    # The fiche channel (fiches.read) gets a notify-only copy; the transcription channel the payload itself.
    assert json.loads(call.batch[0]["data"]) == {"fiche_id": "F1", "status": "started", "redacted": True}
    assert json.loads(call.batch[1]["data"]) == payload  # the payload itself, no wrapper


@pytest.mark.django_db
def test_an_event_on_two_channels_is_two_batch_entries_each_safe_for_its_subscribers(pusher_stub, committed):
    """The audit channel (audits.read) gets the audit's payload; the fiche channel (fiches.read) only its
    identifiers and status: a fiches-only subscriber never sees a score."""
    payload = audit_started()
    committed(lambda: publish("audit.started", payload))

    messages = pusher_stub.messages()
    assert [(m["channel"], m["name"]) for m in messages] == [
        ("private-audit-A1", "audit.started"),
        ("private-fiche-F1", "audit.started"),
    ]
    assert json.loads(messages[0]["data"]) == payload
    assert json.loads(messages[1]["data"]) == {
        "audit_id": "A1",
        "fiche_id": "F1",
        "audit_config_id": payload["audit_config_id"],
        "status": "started",
        "redacted": True,
    }
    assert len(pusher_stub.calls) == 1


@pytest.mark.django_db
def test_the_stub_rejects_a_wrong_signature_and_the_publisher_logs_it(pusher_stub, committed, settings, logs):
    """The stub's signature check is real: signed with another secret, the request is refused."""
    settings.PUSHER_SECRET = "not-the-secret"
    committed(lambda: publish("notification", notification()))

    assert len(pusher_stub.calls) == 1
    assert not pusher_stub.calls[0].signature_ok
    assert pusher_stub.calls[0].problem == "wrong auth_signature"
    assert pusher_stub.calls[0].status == 401
    assert pusher_stub.messages() == []
    assert len(log_lines(logs, "pusher_trigger_failed")) == 1


@pytest.mark.django_db
def test_23_events_published_together_go_out_as_3_batch_triggers(pusher_stub, committed):
    def work():
        with transaction.atomic():
            publish_many([("notification", notification(i)) for i in range(23)])

    committed(work)

    assert [len(call.batch) for call in pusher_stub.calls] == [10, 10, 3]
    assert all(call.signature_ok for call in pusher_stub.calls)
    messages = pusher_stub.messages()
    assert [json.loads(m["data"])["message"] for m in messages] == [f"Message {i}" for i in range(23)]
    assert {m["channel"] for m in messages} == {"private-global"}


@pytest.mark.django_db
def test_nothing_is_sent_before_commit(pusher_stub, django_capture_on_commit_callbacks):
    def work():
        with django_capture_on_commit_callbacks(execute=True):
            with transaction.atomic():
                publish("notification", notification())
                assert pusher_stub.calls == []  # inside the transaction: not yet
        return len(pusher_stub.calls)

    assert in_worker(work) == 1


@pytest.mark.django_db
def test_an_oversized_payload_arrives_truncated_with_identifiers_intact(pusher_stub, committed):
    payload = {
        "jobId": "0f3c2f8e-aaaa-bbbb-cccc-000000000042",
        "status": "processing",
        "startDate": "2018-01-01",
        "endDate": "2026-03-31",
        "progress": 55,
        "completedDays": 3000,
        "totalDays": 3012,
        "totalFiches": 98765,
        "datesCompleted": [f"2018-01-{(i % 28) + 1:02d}" for i in range(3000)],
        "datesRemaining": ["2026-03-31"],
        "datesFailed": [],
        "latestDate": "2026-03-30",
        "note": "Récupération échouée " * 1500,
    }
    committed(lambda: publish("fiches.progressive_fetch.progress", payload))

    (message,) = pusher_stub.messages()
    assert message["channel"] == f"private-job-{payload['jobId']}"
    assert len(message["data"].encode("utf-8")) <= 10240
    data = json.loads(message["data"])
    assert data["truncated"] is True
    for key in ("jobId", "status", "progress", "completedDays", "totalDays", "totalFiches"):
        assert data[key] == payload[key]


# --- Failures ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_pusher_down_is_logged_then_the_circuit_drops_events_until_it_closes(pusher_stub, committed, settings, logs):
    live_port = pusher_stub.port
    settings.PUSHER_PORT = free_port()  # nothing listens there
    settings.PUSHER_BACKOFF_SECONDS = 0.5

    committed(lambda: publish("notification", notification(1)))  # does not raise
    assert len(log_lines(logs, "pusher_trigger_failed")) == 1
    failed = log_lines(logs, "pusher_trigger_failed")[0]
    assert "Error" in failed.error and failed.events == ["notification"]
    assert publisher._circuit["open_until"] > time.monotonic()

    # Pusher is back, but the circuit is open: events are dropped without calling out.
    settings.PUSHER_PORT = live_port
    started = time.monotonic()
    committed(lambda: publish("notification", notification(2)))
    assert time.monotonic() - started < 0.4
    assert pusher_stub.calls == []
    assert len(log_lines(logs, "pusher_paused_event_dropped")) == 1

    # Once open_until has passed, events flow again.
    time.sleep(max(0.0, publisher._circuit["open_until"] - time.monotonic()) + 0.05)
    committed(lambda: publish("notification", notification(3)))
    assert [json.loads(m["data"])["message"] for m in pusher_stub.messages()] == ["Message 3"]
    assert len(log_lines(logs, "pusher_trigger_failed")) == 1


@pytest.mark.django_db
def test_a_failed_batch_opens_the_circuit_for_the_remaining_batches(pusher_stub, committed, settings, logs):
    settings.PUSHER_PORT = free_port()

    def work():
        with transaction.atomic():
            publish_many([("notification", notification(i)) for i in range(25)])

    committed(work)
    assert len(log_lines(logs, "pusher_trigger_failed")) == 1  # one timeout/refusal, not three
    assert len(log_lines(logs, "pusher_paused_event_dropped")) == 2


@pytest.mark.django_db
def test_a_hanging_pusher_costs_one_timeout_then_the_circuit_opens(pusher_stub, committed, settings, logs):
    settings.PUSHER_TIMEOUT_SECONDS = 0.3
    pusher_stub.delay = 1.0

    def work():
        with transaction.atomic():
            publish_many([("notification", notification(i)) for i in range(30)])

    started = time.monotonic()
    committed(work)  # does not raise
    assert time.monotonic() - started < 0.9  # one timeout, not three
    assert len(pusher_stub.calls) == 1
    failed = log_lines(logs, "pusher_trigger_failed")
    assert len(failed) == 1 and "Timeout" in failed[0].error
    assert len(log_lines(logs, "pusher_paused_event_dropped")) == 2


@pytest.mark.django_db
def test_a_pusher_error_status_does_not_raise(pusher_stub, committed, logs):
    pusher_stub.status = 500
    committed(lambda: publish("notification", notification()))
    assert len(pusher_stub.calls) == 1 and pusher_stub.calls[0].signature_ok
    assert len(log_lines(logs, "pusher_trigger_failed")) == 1


@pytest.mark.django_db
def test_an_unknown_event_raises_when_strict(pusher_stub, committed):
    with pytest.raises(InvalidEvent):
        committed(lambda: publish("audit.exploded", {"audit_id": "A1"}))
    with pytest.raises(InvalidEvent, match="total_recordings"):
        committed(lambda: publish("transcription.started", {"fiche_id": "F1", "status": "started"}))
    assert pusher_stub.calls == []


@pytest.mark.django_db
def test_an_unknown_event_is_only_logged_when_not_strict(pusher_stub, committed, settings, logs):
    settings.REALTIME_STRICT_EVENTS = False

    def work():
        publish("audit.exploded", {"audit_id": "A1"})  # does not raise
        publish("transcription.started", {"fiche_id": "F1"})  # missing fields: does not raise
        publish("notification", notification(7))

    committed(work)
    invalid = log_lines(logs, "realtime_event_invalid")
    assert [r.event for r in invalid] == ["audit.exploded", "transcription.started"]
    assert all(r.levelno == logging.ERROR for r in invalid)
    assert [m["name"] for m in pusher_stub.messages()] == ["notification"]


@pytest.mark.django_db
def test_nothing_is_sent_or_queued_when_pusher_is_not_configured(pusher_stub, committed, settings):
    settings.PUSHER_KEY = ""
    committed(lambda: publish("notification", notification()))
    publish("notification", notification())  # web-request path too
    assert pusher_stub.calls == []
    assert queued_tasks("default") == []
    settings.PUSHER_KEY = "key"
    settings.PUSHER_APP_ID = ""
    committed(lambda: publish("notification", notification()))
    assert pusher_stub.calls == []


# --- Transactions ----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_publishes_nothing_and_leaves_no_stale_queue(pusher_stub):
    def work():
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                publish("notification", notification(1))
                publish("notification", notification(2))
                raise RuntimeError("rollback")
        assert pusher_stub.calls == []
        with transaction.atomic():
            publish("notification", notification(3))

    in_worker(work)
    assert [json.loads(m["data"])["message"] for m in pusher_stub.messages()] == ["Message 3"]
    assert len(pusher_stub.calls) == 1


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_worker_sends_at_once(pusher_stub):
    def work():
        publish("notification", notification(1))
        return len(pusher_stub.calls)

    assert in_worker(work) == 1


@pytest.mark.django_db(transaction=True)
def test_events_of_a_rolled_back_savepoint_are_not_sent(pusher_stub):
    def work():
        with transaction.atomic():
            publish("notification", notification(1))
            try:
                with transaction.atomic():
                    publish("notification", notification(2))
                    raise RuntimeError("inner rollback")
            except RuntimeError:
                pass
            publish("notification", notification(3))

    in_worker(work)
    assert [json.loads(m["data"])["message"] for m in pusher_stub.messages()] == ["Message 1", "Message 3"]


@pytest.mark.django_db(transaction=True)
def test_a_web_request_hands_the_batch_to_a_task_which_sends_it(pusher_stub):
    """Outside a worker, publish never waits on Pusher: the committed batch becomes one
    ``send_pusher_messages`` task; running that task sends it."""
    with transaction.atomic():
        publish_many(
            [("notification", notification(1)), ("transcription.started", transcription_started(fiche_id="F9"))]
        )
    assert pusher_stub.calls == []
    (task,) = queued_tasks("default")
    assert task.name == "realtime.tasks.send_pusher_messages"
    assert [m["channel"] for m in task.args[0]] == ["private-global", "private-fiche-F9", "private-transcription-F9"]

    assert send_pusher_messages.apply(args=task.args).get() == 3
    assert [m["name"] for m in pusher_stub.messages()] == ["notification", *["transcription.started"] * 2]


# --- Jobs survive a Pusher outage -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_progressive_fetch_job_still_completes_while_pusher_is_down(
    pusher_stub, settings, make_role, make_user, logs
):
    settings.PUSHER_PORT = free_port()  # Pusher unreachable
    user = make_user(make_role("pf-reader", fiches=("r", "ALL")), email="pf@example.com")
    day = date(2026, 3, 9)

    def work():
        meta = jobs.progressive_fetch_request(user=user, start=day, end=day).meta
        job_id = meta["backgroundJobId"]
        assert jobs.progressive_fetch_dispatch(job_id=job_id) == [day]
        result = jobs.progressive_fetch_apply_outcome(job_id=job_id, day=day, ok=True)
        return job_id, result

    job_id, result = in_worker(work)
    assert result.finalized is True
    job = ProgressiveFetchJob.objects.get(pk=job_id)
    assert (job.status, job.progress, job.dates_remaining, job.completed_days) == ("complete", 100, [], 1)
    assert job.completed_at is not None
    # Publishing was attempted (created, progress, complete) and failed quietly.
    assert [r.event for r in log_lines(logs, "realtime_event")] == [
        "fiches.progressive_fetch.created",
        "fiches.progressive_fetch.progress",
        "fiches.progressive_fetch.complete",
    ]
    assert len(log_lines(logs, "pusher_trigger_failed")) == 1
    assert len(log_lines(logs, "pusher_paused_event_dropped")) >= 1
    assert pusher_stub.calls == []


@pytest.mark.django_db(transaction=True)
def test_separate_publishes_in_one_transaction_are_each_sent_after_commit(pusher_stub, committed):
    """publish() registers its own on-commit callback (savepoint-safe); only publish_many batches."""

    def work():
        with transaction.atomic():
            publish("notification", notification(1))
            publish("notification", notification(2))
            assert pusher_stub.calls == []

    committed(work)
    assert [len(call.batch) for call in pusher_stub.calls] == [1, 1]
    assert [json.loads(m["data"])["message"] for m in pusher_stub.messages()] == ["Message 1", "Message 2"]


@pytest.mark.django_db
def test_the_last_progress_event_says_processing_and_only_the_terminal_event_is_terminal(
    pusher_stub, committed, make_role, make_user
):
    from datetime import date

    from fiches.services import jobs
    from tests.support import make_job

    user = make_user(make_role("pf-events", fiches=("r", "ALL")), email="pf-events@example.com")
    start = date(2026, 3, 2)
    job = make_job(user, start, 2, status="processing", scope_kind="ALL")
    for n in range(2):
        committed(
            lambda n=n: jobs.progressive_fetch_apply_outcome(job_id=str(job.pk), day=date(2026, 3, 2 + n), ok=True)
        )

    events = [(m["name"], json.loads(m["data"])) for m in pusher_stub.messages()]
    progress = [data for name, data in events if name == "fiches.progressive_fetch.progress"]
    assert [p["status"] for p in progress] == ["processing", "processing"]
    assert progress[-1]["progress"] == 100 and progress[-1]["datesRemaining"] == []
    terminal = [(name, data["status"]) for name, data in events if not name.endswith(".progress")]
    assert terminal == [("fiches.progressive_fetch.complete", "complete")]
