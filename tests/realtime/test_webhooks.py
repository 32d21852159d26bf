"""Outgoing job webhooks (``realtime.webhooks``): Standard Webhooks signatures, retries and their
limits, redirects, 410, timeouts, manual redelivery (service and API), cancel, attempt logging and
purge. A scripted receiver runs on 127.0.0.1 (allowlisted); attempts run in-process with
``attempt_delivery`` (and once through the Celery task)."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from core.exceptions import ConflictError, InvalidInput
from fiches.notifications import JOB_WEBHOOK_SOURCE, send_job_webhook
from realtime.models import WebhookDelivery, WebhookDeliveryAttempt
from realtime.tasks import deliver_webhook, purge_webhook_deliveries, sweep_webhook_deliveries
from realtime.webhooks import (
    USER_AGENT,
    attempt_delivery,
    delivery_cancel,
    delivery_redeliver,
    purge_old_deliveries,
    secret_bytes,
    signed_headers,
    validate_secret,
)

from .conftest import START, Reply, free_port, make_job, queued_tasks

pytestmark = pytest.mark.django_db

WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
EVENT = "fiches.progressive_fetch.progress"


@pytest.fixture
def owner(make_role, make_user):
    return make_user(make_role("hook-owner", fiches=("rw", "SELF")), email="owner@example.com", crm_user_id="u-1")


@pytest.fixture
def job(owner, receiver):
    return make_job(
        owner,
        webhook_url=receiver.url("/hook"),
        webhook_secret=WHSEC,
        dates_already_fetched=[START],
        dates_remaining=[START + timedelta(days=1)],
        completed_days=1,
        progress=50,
    )


def new_delivery(job, event: str = EVENT) -> WebhookDelivery:
    delivery = send_job_webhook(job=job, event=event)
    assert delivery is not None
    return delivery


def run_until_done(delivery_id: int, limit: int = 10) -> list:
    """Attempts as the scheduler would run them (without waiting), until no retry is due."""
    results = []
    for _ in range(limit):
        result = attempt_delivery(delivery_id=delivery_id)
        results.append(result)
        if result.retry_in is None:
            return results
    raise AssertionError("the delivery never ended")


def attempts(delivery) -> list[WebhookDeliveryAttempt]:
    return list(WebhookDeliveryAttempt.objects.filter(delivery=delivery).order_by("number"))


# --- Signatures ---------------------------------------------------------------------------------------------


def test_the_standard_webhooks_spec_test_vector():
    headers = signed_headers(
        webhook_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        body=b'{"test": 2432232314}',
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        now=datetime.fromtimestamp(1614265330, UTC),
    )
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert headers["webhook-id"] == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    assert headers["webhook-timestamp"] == "1614265330"


def test_secret_bytes():
    assert secret_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == base64.b64decode(
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    )
    assert secret_bytes("my plain secret") == b"my plain secret"
    assert secret_bytes("clé secrète") == "clé secrète".encode()


def test_a_whsec_secret_signature_verifies_on_the_exact_bytes_received(job, receiver):
    delivery = new_delivery(job)
    assert attempt_delivery(delivery_id=delivery.pk).status == "success"

    (request,) = receiver.received
    assert request.path == "/hook"
    assert request.body == delivery.payload.encode()  # the signed bytes are the bytes sent
    payload = Webhook(WHSEC).verify(request.body, request.headers)
    assert Webhook(secret_bytes(WHSEC)).verify(request.body, request.headers) == payload
    assert payload["type"] == EVENT
    assert payload["data"]["jobId"] == str(job.id)
    assert request.headers["webhook-id"] == delivery.webhook_id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    # A tampered body or another key does not verify.
    with pytest.raises(WebhookVerificationError):
        Webhook(WHSEC).verify(request.body.replace(b'"progress":50', b'"progress":51'), request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(b"another key").verify(request.body, request.headers)


def test_a_plain_string_secret_is_used_as_its_utf8_bytes(job, receiver):
    job.webhook_secret = "my plain secret"
    job.save(update_fields=["webhook_secret"])
    delivery = new_delivery(job)
    attempt_delivery(delivery_id=delivery.pk)

    (request,) = receiver.received
    assert Webhook(b"my plain secret").verify(request.body, request.headers)["type"] == EVENT
    with pytest.raises(WebhookVerificationError):
        Webhook(b"my plain secreT").verify(request.body, request.headers)


def test_no_secret_no_signature_header(job, receiver):
    job.webhook_secret = None
    job.save(update_fields=["webhook_secret"])
    delivery = new_delivery(job)
    assert attempt_delivery(delivery_id=delivery.pk).status == "success"

    (request,) = receiver.received
    assert "webhook-signature" not in request.headers
    assert request.headers["webhook-id"] == delivery.webhook_id
    assert abs(int(request.headers["webhook-timestamp"]) - datetime.now(UTC).timestamp()) < 60
    assert "webhook-signature" not in attempts(delivery)[0].request_headers
    assert "webhook-signature" not in signed_headers(webhook_id="msg_1", body=b"{}", secret="")


def test_an_invalid_whsec_secret_fails_the_delivery_with_the_error_recorded(job, receiver):
    job.webhook_secret = "whsec_not*base64!"
    job.save(update_fields=["webhook_secret"])
    delivery = new_delivery(job)

    result = attempt_delivery(delivery_id=delivery.pk)

    assert result.status == "failed"
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.last_error
    assert len(attempts(delivery)) == 1
    assert receiver.received == []


# --- Retries --------------------------------------------------------------------------------------------------


def test_two_500s_then_200_is_three_attempts_with_the_same_id_and_identical_body(job, receiver):
    receiver.respond(500, 500, 200)
    delivery = new_delivery(job)

    results = run_until_done(delivery.pk)

    assert [r.status for r in results] == ["pending", "pending", "success"]
    assert all(r.retry_in is not None and 0 < r.retry_in <= 60 for r in results[:2])
    assert len(receiver.received) == 3
    assert [r.number for r in results] == [1, 2, 3]
    assert {r.headers["webhook-id"] for r in receiver.received} == {delivery.webhook_id}
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.received]
    assert stamps == sorted(stamps)
    assert len({r.body for r in receiver.received}) == 1  # the body rebuilt each time is the same bytes
    for request in receiver.received:
        Webhook(WHSEC).verify(request.body, request.headers)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("success", 3, 200)
    assert delivery.delivered_at is not None and delivery.next_retry_at is None
    assert [(a.number, a.response_status, a.trigger) for a in attempts(delivery)] == [
        (1, 500, "scheduled"),
        (2, 500, "scheduled"),
        (3, 200, "scheduled"),
    ]
    job.refresh_from_db()
    assert (job.webhook_attempts, job.webhook_last_status_code) == (3, 200)
    assert job.webhook_last_error is None


def test_a_pending_retry_has_its_next_retry_time(job, receiver):
    receiver.respond(502)
    delivery = new_delivery(job)
    before = timezone.now()
    result = attempt_delivery(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.last_error == "HTTP 502"
    assert before < delivery.next_retry_at <= timezone.now() + timedelta(seconds=result.retry_in)


def test_a_400_fails_after_one_attempt(job, receiver):
    receiver.respond(400)
    delivery = new_delivery(job)
    results = run_until_done(delivery.pk)
    assert [(r.status, r.retry_in) for r in results] == [("failed", None)]
    assert len(receiver.received) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 1, 400)
    assert delivery.last_error == "HTTP 400"


@pytest.mark.parametrize("status", [408, 429, 503])
def test_408_429_and_503_are_retried(status, job, receiver):
    receiver.respond(status, 200)
    delivery = new_delivery(job)
    assert [r.status for r in run_until_done(delivery.pk)] == ["pending", "success"]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(status, job, receiver):
    receiver.respond(Reply(status=status, headers={"Retry-After": "2"}))
    delivery = new_delivery(job)
    result = attempt_delivery(delivery_id=delivery.pk)
    assert result.status == "pending"
    assert 2 <= result.retry_in <= 60
    delivery.refresh_from_db()
    assert delivery.next_retry_at >= timezone.now() + timedelta(seconds=1.5)


def test_retry_after_as_an_http_date_and_its_cap(job, receiver, settings):
    settings.WEBHOOK_RETRY_MAX_SECONDS = 30.0
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    receiver.respond(
        Reply(status=429, headers={"Retry-After": when}), Reply(status=429, headers={"Retry-After": "86400"})
    )
    delivery = new_delivery(job)
    first = attempt_delivery(delivery_id=delivery.pk)
    assert first.status == "pending" and 3 <= first.retry_in <= 6
    second = attempt_delivery(delivery_id=delivery.pk)
    assert second.status == "pending" and second.retry_in == 30.0


def test_a_redirect_is_not_followed_and_fails(job, receiver):
    receiver.respond(Reply(status=302, headers={"Location": receiver.url("/target")}))
    delivery = new_delivery(job)
    results = run_until_done(delivery.pk)
    assert [(r.status, r.retry_in) for r in results] == [("failed", None)]
    assert receiver.at("/target") == []
    assert len(receiver.at("/hook")) == 1
    delivery.refresh_from_db()
    assert "302" in delivery.last_error and "redirect" in delivery.last_error


def test_410_fails_and_stops_the_jobs_webhooks(job, receiver):
    receiver.respond(410)
    delivery = new_delivery(job)
    assert [r.status for r in run_until_done(delivery.pk)] == ["failed"]
    job.refresh_from_db()
    assert job.webhooks_disabled is True
    assert job.webhook_last_status_code == 410
    assert send_job_webhook(job=job, event="fiches.progressive_fetch.complete") is None
    assert WebhookDelivery.objects.filter(source=JOB_WEBHOOK_SOURCE, source_id=str(job.pk)).count() == 1


def test_a_timeout_is_retried(job, receiver, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    receiver.respond(Reply(status=200, delay=1.5), 200)
    delivery = new_delivery(job)

    first = attempt_delivery(delivery_id=delivery.pk)
    assert first.status == "pending" and first.retry_in is not None
    (attempt,) = attempts(delivery)
    assert "Timeout" in attempt.error and attempt.response_status is None
    assert 250 <= attempt.duration_ms < 1400

    assert attempt_delivery(delivery_id=delivery.pk).status == "success"
    assert len(receiver.received) == 2


def test_connection_refused_is_retried_then_fails_after_max_attempts(job, receiver, settings):
    port = free_port()
    settings.WEBHOOK_ALLOWED_ORIGINS = [f"http://127.0.0.1:{port}"]
    job.webhook_url = f"http://127.0.0.1:{port}/hook"
    job.save(update_fields=["webhook_url"])
    delivery = new_delivery(job)

    results = run_until_done(delivery.pk)

    assert [r.status for r in results] == ["pending", "pending", "failed"]
    assert results[-1].retry_in is None
    rows = attempts(delivery)
    assert [a.number for a in rows] == [1, 2, 3]
    assert all("ConnectionError" in a.error and a.response_status is None for a in rows)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_retry_at) == ("failed", 3, None)
    job.refresh_from_db()
    assert job.webhook_attempts == 3 and "ConnectionError" in job.webhook_last_error


def test_max_attempts_is_taken_from_settings_at_creation(job, receiver, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    receiver.respond(500, 500, 500)
    delivery = new_delivery(job)
    assert [r.status for r in run_until_done(delivery.pk)] == ["pending", "failed"]
    assert len(receiver.received) == 2


# --- The Celery task -------------------------------------------------------------------------------------------


def test_the_task_attempts_once_and_schedules_the_next_attempt(job, receiver):
    receiver.respond(500, 200)
    delivery = new_delivery(job)

    assert deliver_webhook.apply(args=[delivery.pk]).get() == "pending"
    (scheduled,) = queued_tasks("webhooks")
    assert scheduled.name == "realtime.tasks.webhooks.deliver"
    assert scheduled.args == [delivery.pk] and scheduled.kwargs == {"attempt": 2}
    assert scheduled.eta is not None  # countdown = the backoff
    first = attempts(delivery)[0]
    assert first.task_id  # the task's id is recorded on the attempt

    assert deliver_webhook.apply(args=scheduled.args, kwargs=scheduled.kwargs).get() == "success"
    assert len(queued_tasks("webhooks")) == 1  # nothing more scheduled
    assert [a.response_status for a in attempts(delivery)] == [500, 200]
    # The same message again (a duplicate, or the sweeper's copy of a late one) does nothing.
    assert deliver_webhook.apply(args=scheduled.args, kwargs=scheduled.kwargs).get() == "success"
    assert len(receiver.received) == 2 and len(attempts(delivery)) == 2


# --- Manual redelivery ---------------------------------------------------------------------------------------------


def test_manual_redelivery_of_a_failed_delivery_keeps_the_webhook_id(job, receiver, django_capture_on_commit_callbacks):
    receiver.respond(400)
    delivery = new_delivery(job)
    assert attempt_delivery(delivery_id=delivery.pk).status == "failed"
    delivery.refresh_from_db()

    with django_capture_on_commit_callbacks(execute=True):
        delivery_redeliver(delivery=delivery)
    delivery.refresh_from_db()
    assert delivery.status == "pending"
    (queued,) = queued_tasks("webhooks")
    assert queued.args == [delivery.pk] and queued.kwargs == {"trigger": "manual"}

    assert deliver_webhook.apply(args=queued.args, kwargs=queued.kwargs).get() == "success"
    rows = attempts(delivery)
    assert [(a.number, a.trigger, a.response_status) for a in rows] == [(1, "scheduled", 400), (2, "manual", 200)]
    assert [r.headers["webhook-id"] for r in receiver.received] == [delivery.webhook_id] * 2
    assert rows[1].request_headers["webhook-id"] == delivery.webhook_id


def test_a_failing_manual_attempt_is_not_retried_automatically(job, receiver):
    receiver.respond(400, 500)
    delivery = new_delivery(job)
    attempt_delivery(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    delivery_redeliver(delivery=delivery)
    result = attempt_delivery(delivery_id=delivery.pk, trigger="manual")
    assert (result.status, result.retry_in) == ("failed", None)
    assert [a.trigger for a in attempts(delivery)] == ["scheduled", "manual"]


def test_a_pending_delivery_cannot_be_redelivered(job):
    delivery = new_delivery(job)
    with pytest.raises(ConflictError):
        delivery_redeliver(delivery=delivery)


def retry_url(delivery_id: int) -> str:
    return f"/api/fiches/webhooks/deliveries/{delivery_id}/retry"


def test_retry_api(job, receiver, owner, make_role, make_user, auth_client, api_client):
    receiver.respond(400)
    delivery = new_delivery(job)
    attempt_delivery(delivery_id=delivery.pk)

    reader = make_user(make_role("reader-all", fiches=("r", "ALL")), email="reader@example.com")
    response = auth_client(reader).post(retry_url(delivery.pk))
    assert response.status_code == 403  # no fiches.write
    stranger = make_user(make_role("writer-self", fiches=("rw", "SELF")), email="stranger@example.com")
    response = auth_client(stranger).post(retry_url(delivery.pk))
    assert response.status_code == 403  # not their job
    assert api_client.post(retry_url(delivery.pk)).status_code == 401
    delivery.refresh_from_db()
    assert delivery.status == "failed"

    response = auth_client(owner).post(retry_url(delivery.pk))
    assert response.status_code == 202, response.content
    body = response.json()["delivery"]
    assert body["id"] == delivery.pk and body["status"] == "pending"
    assert "secret" not in json.dumps(body).lower()

    response = auth_client(owner).post(retry_url(delivery.pk))  # now pending
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "delivery_pending"
    assert auth_client(owner).post(retry_url(delivery.pk + 10_000)).status_code == 404

    assert attempt_delivery(delivery_id=delivery.pk, trigger="manual").status == "success"
    assert [a.trigger for a in attempts(delivery)] == ["scheduled", "manual"]


# --- Cancel -----------------------------------------------------------------------------------------------------


def test_cancel_a_pending_delivery(job, receiver):
    delivery = new_delivery(job)
    assert delivery_cancel(delivery=delivery) is True
    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_error, delivery.next_retry_at) == (
        "failed",
        "cancelled by an operator",
        None,
    )
    assert delivery_cancel(delivery=delivery) is False
    assert attempt_delivery(delivery_id=delivery.pk).status == "failed"
    assert receiver.received == [] and attempts(delivery) == []


def test_cancel_does_not_touch_a_successful_delivery(job, receiver):
    delivery = new_delivery(job)
    attempt_delivery(delivery_id=delivery.pk)
    assert delivery_cancel(delivery=delivery) is False
    delivery.refresh_from_db()
    assert delivery.status == "success" and delivery.last_error is None


# --- Attempt records -----------------------------------------------------------------------------------------------


def test_an_attempt_records_request_and_response_trimmed_to_4kb(job, receiver):
    big = b"0123456789" * 1024  # 10 KB
    receiver.respond(
        Reply(status=500, headers={"X-Receiver": "r-1", "Content-Type": "text/plain"}, body=big, delay=0.05)
    )
    delivery = new_delivery(job)
    before = timezone.now()
    attempt_delivery(delivery_id=delivery.pk)

    (attempt,) = attempts(delivery)
    assert attempt.number == 1 and attempt.trigger == "scheduled"
    assert attempt.request_headers["webhook-id"] == delivery.webhook_id
    assert attempt.request_headers["webhook-signature"].startswith("v1,")
    assert attempt.request_headers["Content-Type"] == "application/json"
    assert attempt.response_status == 500
    assert attempt.response_headers["X-Receiver"] == "r-1"
    assert attempt.response_body == big[:4096].decode()
    assert attempt.duration_ms >= 50
    assert before <= attempt.started_at <= timezone.now()
    assert attempt.error == "HTTP 500"


def test_the_data_url_and_the_body_fields(job, receiver, settings):
    settings.API_BASE_URL = "https://api.callcentre.test"
    delivery = new_delivery(job)
    data = json.loads(delivery.payload.encode())["data"]
    assert data["dataUrl"] == (
        "https://api.callcentre.test/api/fiches/status/by-date-range?startDate=2026-03-02&endDate=2026-03-03"
    )
    assert data["jobId"] == str(job.id)
    assert (data["status"], data["progress"], data["completedDays"], data["totalDays"]) == ("processing", 50, 1, 2)
    assert (data["datesCompleted"], data["datesRemaining"], data["datesFailed"]) == (["2026-03-02"], ["2026-03-03"], [])
    assert (data["startDate"], data["endDate"]) == ("2026-03-02", "2026-03-03")
    assert data["partialData"] == [] and data["partialDataTruncated"] is False
    body = json.loads(delivery.payload.encode())
    assert body["type"] == EVENT and body["timestamp"].endswith("Z")
    assert delivery.payload == WebhookDelivery.objects.get(pk=delivery.pk).payload


def test_no_webhook_url_no_delivery(owner):
    job = make_job(owner, webhook_url=None)
    assert send_job_webhook(job=job, event=EVENT) is None
    assert WebhookDelivery.objects.count() == 0


# --- Purge ---------------------------------------------------------------------------------------------------------


def _age(deliveries, days: int) -> None:
    WebhookDelivery.objects.filter(pk__in=[d.pk for d in deliveries]).update(
        created_at=timezone.now() - timedelta(days=days)
    )


def _with_status(job, status: str, n: int = 1) -> list[WebhookDelivery]:
    made = [new_delivery(job) for _ in range(n)]
    WebhookDelivery.objects.filter(pk__in=[d.pk for d in made]).update(status=status)
    return made


def test_purge_deletes_only_old_successful_deliveries_in_batches(job, receiver):
    old_success = _with_status(job, "success", 5)
    WebhookDeliveryAttempt.objects.create(delivery=old_success[0], number=1, started_at=timezone.now())
    old_failed = _with_status(job, "failed")
    old_pending = _with_status(job, "pending")
    recent_success = _with_status(job, "success")
    _age(old_success + old_failed + old_pending, days=31)
    _age(recent_success, days=29)

    with CaptureQueriesContext(connection) as queries:
        assert purge_old_deliveries(older_than_days=30, batch_size=2) == 5
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('DELETE FROM "webhook_deliveries"')]
    assert len(deletes) == 3  # 2 + 2 + 1

    remaining = set(WebhookDelivery.objects.values_list("pk", flat=True))
    assert remaining == {d.pk for d in old_failed + old_pending + recent_success}
    assert not WebhookDeliveryAttempt.objects.filter(delivery_id=old_success[0].pk).exists()
    assert purge_old_deliveries(older_than_days=30, batch_size=2) == 0


def test_the_purge_task_uses_the_retention_setting(job, settings):
    settings.WEBHOOK_RETENTION_DAYS = 7
    old = _with_status(job, "success", 2)
    fresh = _with_status(job, "success")
    _age(old, days=8)
    _age(fresh, days=6)
    assert purge_webhook_deliveries.apply().get() == 2
    assert list(WebhookDelivery.objects.values_list("pk", flat=True)) == [fresh[0].pk]


# --- Admin ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def staff_client(make_user, client):
    user = make_user(email="staff@example.com", is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_admin_pages_render_without_the_secret(job, receiver, staff_client):
    receiver.respond(500)
    delivery = new_delivery(job)
    attempt_delivery(delivery_id=delivery.pk)
    listing = staff_client.get("/admin/realtime/webhookdelivery/")
    assert listing.status_code == 200
    assert f"127.0.0.1:{receiver.port}".encode() in listing.content
    page = staff_client.get(f"/admin/realtime/webhookdelivery/{delivery.pk}/change/")
    assert page.status_code == 200
    assert b"HTTP 500" in page.content  # the attempt inline
    assert WHSEC.encode() not in listing.content + page.content
    assert staff_client.get("/admin/realtime/webhookdelivery/add/").status_code == 403


def test_admin_actions_retry_failed_and_cancel_pending(job, receiver, staff_client, django_capture_on_commit_callbacks):
    receiver.respond(400)
    failed = new_delivery(job)
    attempt_delivery(delivery_id=failed.pk)
    pending = new_delivery(job)
    url = "/admin/realtime/webhookdelivery/"

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(url, {"action": "retry_now", "_selected_action": [failed.pk, pending.pk]})
    assert response.status_code == 302
    failed.refresh_from_db()
    assert failed.status == "pending"
    assert [(t.args, t.kwargs) for t in queued_tasks("webhooks")] == [([failed.pk], {"trigger": "manual"})]

    response = staff_client.post(url, {"action": "cancel_pending", "_selected_action": [pending.pk]})
    assert response.status_code == 302
    pending.refresh_from_db()
    assert (pending.status, pending.last_error) == ("failed", "cancelled by an operator")


# --- Hardening: a total deadline, every attempt recorded, DNS, secrets, the sweeper -------------------------


class DripServer:
    """Accepts connections, reads the request, then answers one byte every ``interval`` seconds
    (a receiver that never trips a per-read timeout)."""

    def __init__(self, *, interval: float = 0.2, headers_first: bool = False) -> None:
        import socket as _socket
        import threading as _threading

        self.interval, self.headers_first = interval, headers_first
        self.sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.closed_by_client_after: list[float] = []
        self._stop = _threading.Event()
        _threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading as _threading

        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            _threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn) -> None:
        import time as _time

        started = _time.monotonic()
        conn.settimeout(5)
        try:
            conn.recv(65536)
            answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Padding: " + b"x" * 300 + b"\r\n\r\nok"
            if self.headers_first:
                head, _, _ = answer.partition(b"\r\n\r\n")
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\n")
                answer = b"y" * 400
            for byte in answer:
                if self._stop.is_set():
                    return
                conn.sendall(bytes([byte]))
                _time.sleep(self.interval)
        except OSError:
            self.closed_by_client_after.append(_time.monotonic() - started)
        finally:
            conn.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.mark.parametrize("headers_first", [False, True], ids=["dripping-headers", "dripping-body"])
def test_a_dripping_receiver_is_cut_at_the_total_deadline_and_recorded_as_a_timeout(headers_first, job, settings):
    drip = DripServer(interval=0.2, headers_first=headers_first)
    try:
        settings.WEBHOOK_ALLOWED_ORIGINS = [f"http://127.0.0.1:{drip.port}"]
        settings.WEBHOOK_TIMEOUT_SECONDS = 1.0
        job.webhook_url = drip.url
        job.save(update_fields=["webhook_url"])
        delivery = new_delivery(job)

        started = time.monotonic()
        result = attempt_delivery(delivery_id=delivery.pk)
        elapsed = time.monotonic() - started

        assert elapsed < 2.5  # the drip would take about a minute (300 bytes x 0.2 s)
        assert result.status == "pending" and result.retry_in is not None  # a timeout is retried
        (attempt,) = attempts(delivery)
        assert attempt.error.startswith("Timeout") and attempt.response_status is None
        assert 900 <= attempt.duration_ms < 2500
        delivery.refresh_from_db()
        assert delivery.last_error == attempt.error
    finally:
        drip.close()


def test_an_empty_whsec_key_is_refused():
    for secret in ("whsec_", ""):
        with pytest.raises(InvalidInput):
            secret_bytes(secret)
    validate_secret(None)
    with pytest.raises(InvalidInput, match="empty key"):
        validate_secret("whsec_")


def test_an_unusable_secret_still_leaves_an_attempt_row(job, receiver):
    WebhookDelivery.objects.update(secret="whsec_")  # stored before the request-time check existed
    delivery = new_delivery(job)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(secret="whsec_")
    result = attempt_delivery(delivery_id=delivery.pk)
    assert result.status == "failed"
    (attempt,) = attempts(delivery)
    assert "empty key" in attempt.error
    assert receiver.received == []


@pytest.fixture
def public_receiver(job, receiver, fake_dns, settings):
    """The job's webhook URL on a public-looking name that resolves (at first) to a public address."""
    settings.WEBHOOK_ALLOWED_ORIGINS = []
    fake_dns.set("hooks.partner.example", ["93.184.216.34"])
    job.webhook_url = "http://hooks.partner.example/hook"
    job.save(update_fields=["webhook_url"])
    return fake_dns


def test_a_dns_failure_at_send_time_is_retried(job, public_receiver):
    delivery = new_delivery(job)
    public_receiver.set("hooks.partner.example", [])  # NXDOMAIN / SERVFAIL now

    result = attempt_delivery(delivery_id=delivery.pk)

    assert result.status == "pending" and result.retry_in is not None
    (attempt,) = attempts(delivery)
    assert "does not resolve" in attempt.error


def test_a_resolved_unsafe_address_at_send_time_is_permanent(job, public_receiver):
    delivery = new_delivery(job)
    public_receiver.set("hooks.partner.example", ["10.1.2.3"])

    result = attempt_delivery(delivery_id=delivery.pk)

    assert (result.status, result.retry_in) == ("failed", None)
    assert "private address" in attempts(delivery)[0].error


def test_the_sweeper_redispatches_overdue_and_never_attempted_deliveries_once(job, receiver):
    overdue = new_delivery(job)
    receiver.respond(500)
    attempt_delivery(delivery_id=overdue.pk)  # pending, retry scheduled (a message that will be lost)
    WebhookDelivery.objects.filter(pk=overdue.pk).update(next_retry_at=timezone.now() - timedelta(minutes=5))
    never = new_delivery(job)
    WebhookDelivery.objects.filter(pk=never.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    fresh = new_delivery(job)  # its first message is just in flight
    late_retry = new_delivery(job)
    receiver.respond(500)
    attempt_delivery(delivery_id=late_retry.pk)  # next_retry_at within the grace period: not swept
    done = new_delivery(job)
    attempt_delivery(delivery_id=done.pk)

    assert sweep_webhook_deliveries.apply().get() == 2
    swept = {t.args[0]: t.kwargs for t in queued_tasks("webhooks")}
    assert swept == {overdue.pk: {"attempt": 2}, never.pk: {"attempt": 1}}
    assert fresh.pk not in swept and done.pk not in swept

    for delivery_id, kwargs in swept.items():
        assert deliver_webhook.apply(args=[delivery_id], kwargs=kwargs).get() == "success"
    overdue.refresh_from_db()
    assert (overdue.status, overdue.attempts) == ("success", 2)
    received_ids = [r.headers["webhook-id"] for r in receiver.received]
    assert received_ids.count(overdue.webhook_id) == 2  # the first (500) and the swept attempt
    # The lost message turning up after all changes nothing.
    assert deliver_webhook.apply(args=[overdue.pk], kwargs={"attempt": 2}).get() == "success"
    assert WebhookDeliveryAttempt.objects.filter(delivery=overdue).count() == 2
