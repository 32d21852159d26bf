"""Outgoing webhooks: signed (Standard Webhooks), SSRF-safe, every attempt recorded.

- ``webhook_send`` (called by an app inside its transaction, with the message it wants sent)
  stores a delivery and sends its first attempt after commit. ``realtime`` never builds a domain
  payload itself (DESIGN.md: realtime is a leaf).
- ``attempt_delivery`` sends one attempt: the URL is validated again (an unsafe address fails the
  delivery and nothing is sent; a host that does not resolve right now is retried), the stored
  body is signed and posted without following redirects, under a **total** deadline of
  ``WEBHOOK_TIMEOUT_SECONDS`` (a receiver that drips its answer is cut there). 2xx is success.
  Network errors, timeouts, 5xx, 408 and 429 are retried with exponential backoff and jitter
  (``Retry-After`` honoured) up to ``max_attempts``; other statuses (3xx, 4xx) fail at once.
  Whatever ends an attempt (an answer, a timeout, a refused connection, a signing error, the task's
  soft time limit), an attempt row records it, and the delivery's source hears of it
  (``realtime.registry``; e.g. a job stops its webhooks on 410).
- Each attempt message carries the attempt number it is for, so a duplicate message (a retry
  re-dispatched by the sweeper while the original was only late) does nothing.

Secrets: ``whsec_<base64>`` secrets are base64-decoded per the Standard Webhooks spec; any other
non-empty string is used as its UTF-8 bytes. No secret: no signature header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import orjson
import requests
import urllib3
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from requests_hardened.ip_filter import InvalidIPAddress
from standardwebhooks.webhooks import Webhook

from core.dispatch import dispatch_on_commit
from core.exceptions import ConflictError, InvalidInput
from core.locks import LockNotAcquired, redis_lock
from core.metrics import WEBHOOK_ATTEMPTS
from core.retry import backoff_seconds, delay, retry_waiting
from realtime.http_deadline import deadline
from realtime.models import AttemptTrigger, DeliveryStatus, WebhookDelivery, WebhookDeliveryAttempt
from realtime.registry import AttemptReport, webhook_source
from realtime.safe_http import hardened_session
from realtime.url_safety import UnsafeWebhookUrl, WebhookHostUnresolvable, validate_webhook_url

logger = logging.getLogger("realtime.webhooks")

USER_AGENT = "callcentre-webhooks/1.0"
RETRYABLE_STATUSES = frozenset({408, 429})
BODY_LOG_LIMIT = 4096
CONNECT_TIMEOUT_SECONDS = 5.0


# --- Creating deliveries ------------------------------------------------------------------


def _iso_z(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build_message(*, event: str, data: dict, timestamp: datetime | None = None) -> bytes:
    """``{"type", "timestamp", "data"}`` as the bytes every attempt will send."""
    return orjson.dumps({"type": event, "timestamp": _iso_z(timestamp or timezone.now()), "data": data})


_SAFE_ID = re.compile(r"[A-Za-z0-9_.:-]+")


def idempotent_webhook_id(source: str, key: str) -> str:
    """The ``webhook-id`` of the one message ``source`` sends for ``key`` (e.g. an automation run's id):
    ``msg_<source>_<key>`` when that is short and plain, else ``msg_`` + a hash of both."""
    raw = f"msg_{source}_{key}"
    if len(raw) <= 64 and _SAFE_ID.fullmatch(raw):
        return raw
    return "msg_" + hashlib.sha256(f"{source}\0{key}".encode()).hexdigest()[:40]


def webhook_send(
    *,
    source: str,
    source_id: str,
    event: str,
    url: str,
    secret: str | None,
    data: dict,
    idempotency_key: str | None = None,
) -> WebhookDelivery:
    """Store a delivery of ``data`` as ``event`` to ``url`` and send it after commit.

    ``idempotency_key``: at most one delivery per ``(source, key)``, whose ``webhook-id`` derives from the
    key (``idempotent_webhook_id``): a second call, even concurrent, returns the existing delivery and
    sends nothing more (at-least-once senders call it again after a crash; the receiver dedupes on
    ``webhook-id``)."""
    fields = {
        "source": source,
        "source_id": str(source_id),
        "event": event,
        "url": url,
        "secret": secret or None,
        "payload": build_message(event=event, data=data).decode(),
        "max_attempts": settings.WEBHOOK_MAX_ATTEMPTS,
    }
    if idempotency_key is None:
        delivery, created = WebhookDelivery.objects.create(**fields), True
    else:
        delivery, created = WebhookDelivery.objects.get_or_create(
            webhook_id=idempotent_webhook_id(source, idempotency_key), defaults=fields
        )
    if not created:
        logger.info("webhook_delivery_exists", extra={"delivery_id": delivery.pk, "source": source})
        return delivery
    logger.info(
        "webhook_delivery_created",
        extra={"delivery_id": delivery.pk, "source": source, "source_id": str(source_id), "event": event},
    )
    dispatch_on_commit(deliver_webhook, delivery.pk, attempt=1)  # a broker down: the sweeper sends it
    return delivery


# --- Signing ------------------------------------------------------------------------------


def secret_bytes(secret: str) -> bytes:
    """``whsec_<base64>`` → the decoded key (Standard Webhooks); any other string → its UTF-8
    bytes. An empty key (``""``, ``"whsec_"``) is refused: it would sign with nothing."""
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret[len("whsec_") :], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("webhookSecret starts with whsec_ but is not valid base64.") from None
        if not key:
            raise InvalidInput("webhookSecret whsec_ holds an empty key.")
        return key
    if not secret:
        raise InvalidInput("webhookSecret is empty.")
    return secret.encode()


def validate_secret(secret: str | None) -> None:
    """Request-time check of a webhook secret (a 400 now rather than a failed delivery later)."""
    if secret is not None:
        secret_bytes(secret)


def signed_headers(*, webhook_id: str, body: bytes, secret: str | None, now: datetime | None = None) -> dict[str, str]:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
    }
    if secret:
        headers["webhook-signature"] = Webhook(secret_bytes(secret)).sign(webhook_id, now, body.decode())
    return headers


# --- Sending ------------------------------------------------------------------------------


def _session(allowlisted: bool) -> requests.Session:
    """Trusted allowlisted origins may be private; anything else goes through requests-hardened,
    which connects to the address it resolved and checked (no second lookup to rebind) and
    rejects private ones. Redirects are never followed."""
    return hardened_session(
        allowlisted=allowlisted,
        timeout=(CONNECT_TIMEOUT_SECONDS, settings.WEBHOOK_TIMEOUT_SECONDS),
        user_agent=USER_AGENT,
    )


@dataclass(frozen=True)
class AttemptResult:
    status: str  # the delivery's status after the attempt
    retry_in: float | None  # seconds until the next scheduled attempt, when one is due
    number: int | None = None  # the attempt made (None when nothing was sent: a duplicate message,
    # or the delivery is no longer pending)


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


@dataclass
class _Exchange:
    """What one attempt saw on the wire."""

    headers: dict[str, str]
    code: int | None = None
    response_headers: dict[str, str] | None = None
    response_body: str = ""
    error: str | None = None
    retryable: bool = False
    refused: bool = False  # the SSRF guard refused the URL or the address it resolved to: nothing was sent


def _post(delivery: WebhookDelivery, body: bytes, exchange: _Exchange) -> None:
    """Validate, sign and post; fill ``exchange``. Raises nothing the caller must handle except
    the worker's soft time limit (which the caller records too)."""
    try:
        exchange.headers = signed_headers(webhook_id=delivery.webhook_id, body=body, secret=delivery.secret)
        safe = validate_webhook_url(delivery.url)  # again at send time
    except WebhookHostUnresolvable as exc:  # DNS can fail for a moment: try again later
        exchange.error, exchange.retryable = exc.message, True
        return
    except UnsafeWebhookUrl as exc:  # an unsafe URL: refused by the SSRF guard
        exchange.error, exchange.refused = exc.message, True
        return
    except InvalidInput as exc:  # a secret that cannot be used
        exchange.error = exc.message
        return
    limit = settings.WEBHOOK_TIMEOUT_SECONDS
    with deadline(limit) as expired:
        try:
            with _session(safe.allowlisted) as session:
                response = session.post(
                    delivery.url, data=body, headers=exchange.headers, allow_redirects=False, stream=True
                )
                try:
                    exchange.code = response.status_code
                    exchange.response_headers = dict(response.headers)
                    raw = response.raw.read(BODY_LOG_LIMIT, decode_content=True) or b""
                    exchange.response_body = raw.decode("utf-8", errors="replace")
                finally:
                    response.close()
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if expired.is_set():
                exchange.code, exchange.response_headers, exchange.response_body = None, None, ""
                exchange.error, exchange.retryable = f"Timeout: no complete answer within {limit:g} s", True
            elif exchange.code is not None:
                exchange.error = f"{type(exc).__name__} while reading the answer: {exc}"[:1000]
            else:
                exchange.error = f"{type(exc).__name__}: {exc}"[:1000]
                exchange.retryable = not isinstance(exc, (InvalidIPAddress, requests.exceptions.InvalidURL))
                exchange.refused = isinstance(exc, InvalidIPAddress)  # the guard's check at connect time
        else:
            if expired.is_set() and exchange.code is not None:
                exchange.error, exchange.retryable = f"Timeout: answer cut at the {limit:g} s deadline", True
    if exchange.code is not None and exchange.error is None and not 200 <= exchange.code < 300:
        code = exchange.code
        exchange.error = f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
        exchange.retryable = code >= 500 or code in RETRYABLE_STATUSES


def attempt_delivery(
    *,
    delivery_id: int,
    trigger: str = AttemptTrigger.SCHEDULED,
    task_id: str | None = None,
    attempt: int | None = None,
) -> AttemptResult:
    """One attempt of a delivery, recorded whatever happens. Callers serialize attempts of one
    delivery (the task holds a Redis lock keyed by the delivery id). ``attempt``: the attempt
    number this call is for; when the delivery already has it (a duplicate message), nothing is
    sent."""
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    if delivery.status != DeliveryStatus.PENDING:
        return AttemptResult(status=delivery.status, retry_in=None)
    if attempt is not None and delivery.attempts >= attempt:
        return AttemptResult(status=delivery.status, retry_in=None)
    number = delivery.attempts + 1
    started = timezone.now()
    clock = time.perf_counter()
    body = delivery.payload.encode()
    exchange = _Exchange(headers={})
    unexpected: Exception | None = None
    try:
        logger.info("sending_webhook", extra={"delivery_id": delivery.pk, "attempt": number, "event": delivery.event})
        _post(delivery, body, exchange)
    except SoftTimeLimitExceeded as exc:  # the worker's limit: record it, the next attempt is scheduled
        exchange.error, exchange.retryable = (
            f"SoftTimeLimitExceeded: the worker's soft time limit ended it ({exc!r})",
            True,
        )
    except Exception as exc:  # a bug: still recorded (and retried), then raised
        unexpected = exc
        exchange.error = f"{type(exc).__name__}: {exc}"[:1000]
        exchange.retryable = True
    result = _record_attempt(
        delivery,
        number=number,
        trigger=trigger,
        task_id=task_id,
        started=started,
        duration_ms=int((time.perf_counter() - clock) * 1000),
        exchange=exchange,
    )
    if unexpected is not None:
        raise unexpected
    return result


def _record_attempt(
    delivery: WebhookDelivery,
    *,
    number: int,
    trigger: str,
    task_id: str | None,
    started: datetime,
    duration_ms: int,
    exchange: _Exchange,
) -> AttemptResult:
    code = exchange.code
    success = code is not None and 200 <= code < 300 and exchange.error is None
    with transaction.atomic():
        WebhookDeliveryAttempt.objects.create(
            delivery=delivery,
            number=number,
            trigger=trigger,
            task_id=task_id,
            started_at=started,
            duration_ms=duration_ms,
            request_headers=exchange.headers,
            response_status=code,
            response_headers=exchange.response_headers or {},
            response_body=exchange.response_body[:BODY_LOG_LIMIT],
            error=exchange.error,
        )
        retry_in = None
        if success:
            status = DeliveryStatus.SUCCESS
        elif exchange.retryable and trigger == AttemptTrigger.SCHEDULED and number < delivery.max_attempts:
            status = DeliveryStatus.PENDING
            retry_in = backoff_seconds(
                number - 1, base=settings.WEBHOOK_RETRY_BASE_SECONDS, cap=settings.WEBHOOK_RETRY_MAX_SECONDS
            )
            hinted = _retry_after(exchange.response_headers or {}) if code in (429, 503) else None
            if hinted is not None:
                retry_in = min(max(retry_in, hinted), settings.WEBHOOK_RETRY_MAX_SECONDS)
        else:
            status = DeliveryStatus.FAILED
        now = timezone.now()
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=status,
            attempts=number,
            last_status_code=code,
            last_error=exchange.error,
            next_retry_at=(now + timedelta(seconds=retry_in)) if retry_in is not None else None,
            delivered_at=now if success else None,
            updated_at=now,
        )
        on_attempt = webhook_source(delivery.source).on_attempt
        if on_attempt is not None:
            on_attempt(
                delivery.source_id,
                AttemptReport(
                    delivery_id=delivery.pk,
                    event=delivery.event,
                    status_code=code,
                    error=exchange.error,
                    started_at=started,
                    delivered=success,
                ),
            )
    _count_attempt(status, refused=exchange.refused)
    log = logger.info if success else logger.warning
    log(
        "webhook_delivered" if success else "webhook_delivery_failed",
        extra={
            "delivery_id": delivery.pk,
            "attempt": number,
            "status_code": code,
            "error": exchange.error,
            "delivery_status": status,
            "retry_in": retry_in,
        },
    )
    return AttemptResult(status=status, retry_in=retry_in, number=number)


def _count_attempt(status: str, *, refused: bool) -> None:
    """``webhook_attempts_total{outcome}``: success, retry (another attempt is scheduled), refused (the SSRF
    guard: nothing sent) or failed (for good). A metric never fails an attempt."""
    if status == DeliveryStatus.SUCCESS:
        outcome = "success"
    elif status == DeliveryStatus.PENDING:
        outcome = "retry"
    else:
        outcome = "refused" if refused else "failed"
    try:
        WEBHOOK_ATTEMPTS.labels(outcome).inc()
    except Exception:
        logger.warning("webhook_metrics_failed", exc_info=True)


# --- Operator actions and the sweeper -----------------------------------------------------


# What the retention purge leaves of an ended delivery's body (privacy.retention).
PURGED_PAYLOAD = "{}"


def delivery_redeliver(*, delivery: WebhookDelivery) -> None:
    """Manual redelivery (same ``webhook-id``, a new attempt with trigger ``manual``): allowed
    for a failed delivery; a successful one may be redelivered too (receivers deduplicate by id)."""

    if delivery.status == DeliveryStatus.PENDING:
        raise ConflictError("This delivery is still pending; wait for it or cancel it.", code="delivery_pending")
    if delivery.payload == PURGED_PAYLOAD:
        raise ConflictError(
            "This delivery's body was purged (retention of personal data): it cannot be sent again.",
            code="delivery_purged",
        )
    # Due now: if the message is lost (a broker down), the sweeper sends the attempt.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.PENDING, next_retry_at=timezone.now())
    dispatch_on_commit(deliver_webhook, delivery.pk, trigger=AttemptTrigger.MANUAL)


def delivery_cancel(*, delivery: WebhookDelivery) -> bool:
    """Stop a pending delivery (it ends failed with the reason recorded)."""
    return bool(
        WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.FAILED,
            last_error="cancelled by an operator",
            next_retry_at=None,
            updated_at=timezone.now(),
        )
    )


def overdue_deliveries(*, grace_seconds: float, now: datetime | None = None, limit: int = 500) -> list[tuple[int, int]]:
    """Pending deliveries whose next attempt should have happened ``grace_seconds`` ago: a retry
    whose ``next_retry_at`` has passed, or a delivery created and never attempted. Returns
    ``(delivery id, the attempt number now due)``."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=grace_seconds)
    rows = (
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING)
        .filter(Q(next_retry_at__lt=cutoff) | Q(next_retry_at__isnull=True, attempts=0, created_at__lt=cutoff))
        .order_by("created_at")
        .values_list("pk", "attempts")[:limit]
    )
    return [(pk, attempts + 1) for pk, attempts in rows]


def purge_old_deliveries(*, older_than_days: int, batch_size: int = 1000) -> int:
    """Delete successful deliveries older than the retention, in batches; returns the count."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    total = 0
    while True:
        ids = list(
            WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCESS, created_at__lt=cutoff).values_list(
                "pk", flat=True
            )[:batch_size]
        )
        if not ids:
            return total
        WebhookDelivery.objects.filter(pk__in=ids).delete()
        total += len(ids)


# --- The attempt task (listed in ``realtime.tasks``) ------------------------------------------------


@shared_task(bind=True, name="realtime.tasks.webhooks.deliver", ignore_result=True)
def deliver_webhook(self, delivery_id: int, trigger: str = AttemptTrigger.SCHEDULED, attempt: int | None = None) -> str:
    """One attempt of a webhook delivery (``attempt``: the number it is for; a message for an
    attempt already made is a no-op); schedules the next attempt when one is due."""
    try:
        with redis_lock(f"webhook-delivery:{delivery_id}", timeout=settings.WEBHOOK_TIMEOUT_SECONDS + 60):
            result = attempt_delivery(
                delivery_id=delivery_id, trigger=trigger, task_id=self.request.id, attempt=attempt
            )
    except LockNotAcquired:  # an attempt of this delivery is running: try again shortly
        raise retry_waiting(self, countdown=2) from None
    if result.retry_in is not None and result.number is not None:
        deliver_webhook.apply_async((delivery_id,), {"attempt": result.number + 1}, countdown=delay(result.retry_in))
    return result.status
