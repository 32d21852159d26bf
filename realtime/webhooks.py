"""Outgoing webhooks of progressive fetch jobs: signed (Standard Webhooks), SSRF-safe, every
attempt recorded.

- ``send_job_webhook`` (the entry point the job code calls, inside its transaction) stores a
  delivery with the job's state normalized, and its partial fiches filtered by the scope
  snapshot stored on the job; the delivery task runs after commit.
- ``attempt_delivery`` sends one attempt: the URL is validated again (an unsafe URL fails the
  delivery and nothing is sent), the body is rebuilt from the stored fields, signed, and posted
  without following redirects; 2xx within the timeout is success. Network errors, timeouts, 5xx,
  408 and 429 are retried with exponential backoff and jitter (``Retry-After`` honoured) up to
  ``max_attempts``; other statuses (3xx, 4xx) fail at once; 410 also stops the job's webhooks.

Secrets: ``whsec_<base64>`` secrets are base64-decoded per the Standard Webhooks spec; any other
secret string is used as its UTF-8 bytes. No secret: no signature header.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode

import orjson
import requests
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from requests_hardened import Config as HardenedConfig
from requests_hardened import Manager as HardenedManager
from requests_hardened.ip_filter import InvalidIPAddress
from standardwebhooks.webhooks import Webhook

from config.exceptions import ConflictError, InvalidInput
from config.task_retry import backoff_seconds
from realtime.models import (
    AttemptTrigger,
    DeliveryStatus,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookDeliveryPartialFiche,
)
from realtime.url_safety import validate_webhook_url

logger = logging.getLogger("realtime.webhooks")

USER_AGENT = "callcentre-webhooks/1.0"
RETRYABLE_STATUSES = frozenset({408, 429})
BODY_LOG_LIMIT = 4096


# --- Creating deliveries ------------------------------------------------------------------


def send_job_webhook(*, job, event: str) -> WebhookDelivery | None:
    """Store a delivery of ``event`` with the job's state as given (the caller's in-memory job,
    which may be ahead of its row inside the caller's transaction) and send it after commit.
    No-op when the job has no webhook URL or its webhooks were stopped (410)."""
    from fiches.selectors import partial_fiches_for_job

    if not job.webhook_url or job.webhooks_disabled:
        return None
    partial, truncated = partial_fiches_for_job(job, limit=settings.WEBHOOK_PARTIAL_DATA_LIMIT)
    query = urlencode({"startDate": job.start_date.isoformat(), "endDate": job.end_date.isoformat()})
    delivery = WebhookDelivery.objects.create(
        job=job,
        event=event,
        url=job.webhook_url,
        max_attempts=settings.WEBHOOK_MAX_ATTEMPTS,
        payload_timestamp=timezone.now(),
        payload_job_status=job.status,
        payload_progress=job.progress,
        payload_start_date=job.start_date,
        payload_end_date=job.end_date,
        payload_completed_days=job.completed_days,
        payload_total_days=job.total_days,
        payload_total_fiches=job.total_fiches,
        payload_dates_completed=sorted(job.dates_already_fetched),
        payload_dates_remaining=sorted(job.dates_remaining),
        payload_dates_failed=sorted(job.dates_failed),
        payload_error=job.error,
        payload_data_url=f"{settings.API_BASE_URL}/api/fiches/status/by-date-range?{query}",
        payload_partial_truncated=truncated,
    )
    WebhookDeliveryPartialFiche.objects.bulk_create(
        WebhookDeliveryPartialFiche(delivery=delivery, position=i, **row) for i, row in enumerate(partial)
    )
    logger.info("webhook_delivery_created", extra={"delivery_id": delivery.pk, "job_id": str(job.pk), "event": event})
    from realtime.tasks import deliver_webhook

    transaction.on_commit(lambda: deliver_webhook.delay(delivery.pk))
    return delivery


# --- The message --------------------------------------------------------------------------


def _iso_dates(values) -> list[str]:
    return [d.isoformat() for d in values]


def build_body(delivery: WebhookDelivery) -> bytes:
    """``{"type", "timestamp", "data"}`` rebuilt from the stored fields (same bytes every time)."""
    partial = [
        {
            "fiche_id": p.fiche_id,
            "sales_date": p.sales_date.isoformat(),
            "prospect_name": " ".join(x for x in (p.prospect_prenom, p.prospect_nom) if x),
            "groupe": p.groupe,
            "recordings_count": p.recordings_count,
        }
        for p in delivery.partial_fiches.order_by("position")
    ]
    data = {
        "jobId": str(delivery.job_id),
        "status": delivery.payload_job_status,
        "startDate": delivery.payload_start_date.isoformat(),
        "endDate": delivery.payload_end_date.isoformat(),
        "progress": delivery.payload_progress,
        "completedDays": delivery.payload_completed_days,
        "totalDays": delivery.payload_total_days,
        "totalFiches": delivery.payload_total_fiches,
        "datesCompleted": _iso_dates(delivery.payload_dates_completed),
        "datesRemaining": _iso_dates(delivery.payload_dates_remaining),
        "datesFailed": _iso_dates(delivery.payload_dates_failed),
        "error": delivery.payload_error,
        "dataUrl": delivery.payload_data_url,
        "partialData": partial,
        "partialDataTruncated": delivery.payload_partial_truncated,
    }
    timestamp = delivery.payload_timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return orjson.dumps({"type": delivery.event, "timestamp": timestamp, "data": data})


def secret_bytes(secret: str) -> bytes:
    """``whsec_<base64>`` → the decoded key (Standard Webhooks); any other string → its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_"):], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("webhookSecret starts with whsec_ but is not valid base64.") from None
    return secret.encode()


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
    config = HardenedConfig(
        ip_filter_enable=not allowlisted,
        ip_filter_allow_loopback_ips=False,
        never_redirect=True,
        default_timeout=(5, settings.WEBHOOK_TIMEOUT_SECONDS),
        user_agent_override=USER_AGENT,
    )
    return HardenedManager(config).get_session()


@dataclass(frozen=True)
class AttemptResult:
    status: str  # the delivery's status after the attempt
    retry_in: float | None  # seconds until the next scheduled attempt, when one is due


def _retry_after(response: requests.Response | None) -> float | None:
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def attempt_delivery(*, delivery_id: int, trigger: str = AttemptTrigger.SCHEDULED, task_id: str | None = None) -> AttemptResult:
    """One attempt of a delivery, recorded whatever happens. Callers serialize attempts of one
    delivery (the task holds a Redis lock keyed by the delivery id)."""
    delivery = WebhookDelivery.objects.select_related("job").get(pk=delivery_id)
    if delivery.status != DeliveryStatus.PENDING:
        return AttemptResult(status=delivery.status, retry_in=None)
    number = delivery.attempts + 1
    started = timezone.now()
    clock = time.perf_counter()
    body = build_body(delivery)
    headers: dict[str, str] = {}
    response, error, retryable = None, None, False
    try:
        headers = signed_headers(webhook_id=delivery.webhook_id, body=body, secret=delivery.job.webhook_secret)
        safe = validate_webhook_url(delivery.url)  # again at send time
        logger.info("sending_webhook", extra={"delivery_id": delivery.pk, "attempt": number, "event": delivery.event})
        with _session(safe.allowlisted) as session:
            response = session.post(delivery.url, data=body, headers=headers, allow_redirects=False)
    except InvalidInput as exc:  # an unsafe URL, or a secret that cannot be used
        error = exc.message
    except requests.RequestException as exc:  # connection errors, timeouts, a private address at connect time
        error = f"{type(exc).__name__}: {exc}"[:1000]
        retryable = not isinstance(exc, (InvalidIPAddress, requests.exceptions.InvalidURL))
    duration_ms = int((time.perf_counter() - clock) * 1000)

    code = response.status_code if response is not None else None
    success = code is not None and 200 <= code < 300
    if code is not None and not success:
        error = f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
        retryable = code >= 500 or code in RETRYABLE_STATUSES
    with transaction.atomic():
        WebhookDeliveryAttempt.objects.create(
            delivery=delivery,
            number=number,
            trigger=trigger,
            task_id=task_id,
            started_at=started,
            duration_ms=duration_ms,
            request_headers=headers,
            response_status=code,
            response_headers=dict(response.headers) if response is not None else {},
            response_body=(response.text[:BODY_LOG_LIMIT] if response is not None else ""),
            error=error,
        )
        retry_in = None
        if success:
            status = DeliveryStatus.SUCCESS
        elif retryable and trigger == AttemptTrigger.SCHEDULED and number < delivery.max_attempts:
            status = DeliveryStatus.PENDING
            retry_in = backoff_seconds(
                number - 1, base=settings.WEBHOOK_RETRY_BASE_SECONDS, cap=settings.WEBHOOK_RETRY_MAX_SECONDS
            )
            hinted = _retry_after(response) if code in (429, 503) else None
            if hinted is not None:
                retry_in = min(max(retry_in, hinted), settings.WEBHOOK_RETRY_MAX_SECONDS)
        else:
            status = DeliveryStatus.FAILED
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=status,
            attempts=number,
            last_status_code=code,
            last_error=error,
            next_retry_at=(timezone.now() + timedelta(seconds=retry_in)) if retry_in is not None else None,
            delivered_at=timezone.now() if success else None,
            updated_at=timezone.now(),
        )
        job_updates = {
            "webhook_attempts": F("webhook_attempts") + 1,
            "webhook_last_status_code": code,
            "webhook_last_error": error,
            "webhook_last_attempt_at": started,
        }
        if code == 410:
            job_updates["webhooks_disabled"] = True
        type(delivery.job).objects.filter(pk=delivery.job_id).update(**job_updates)
    log = logger.info if success else logger.warning
    log(
        "webhook_delivered" if success else "webhook_delivery_failed",
        extra={"delivery_id": delivery.pk, "attempt": number, "status_code": code, "error": error,
               "delivery_status": status, "retry_in": retry_in},
    )
    return AttemptResult(status=status, retry_in=retry_in)


# --- Operator actions ---------------------------------------------------------------------


def delivery_redeliver(*, delivery: WebhookDelivery) -> None:
    """Manual redelivery (same ``webhook-id``, a new attempt with trigger ``manual``): allowed
    for a failed delivery; a successful one may be redelivered too (receivers deduplicate by id)."""
    from realtime.tasks import deliver_webhook

    if delivery.status == DeliveryStatus.PENDING:
        raise ConflictError("This delivery is still pending; wait for it or cancel it.", code="delivery_pending")
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.PENDING, next_retry_at=None)
    transaction.on_commit(lambda: deliver_webhook.delay(delivery.pk, trigger=AttemptTrigger.MANUAL))


def delivery_cancel(*, delivery: WebhookDelivery) -> bool:
    """Stop a pending delivery (it ends failed with the reason recorded)."""
    return bool(
        WebhookDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.FAILED, last_error="cancelled by an operator", next_retry_at=None,
            updated_at=timezone.now(),
        )
    )


def purge_old_deliveries(*, older_than_days: int, batch_size: int = 1000) -> int:
    """Delete successful deliveries older than the retention, in batches; returns the count."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    total = 0
    while True:
        ids = list(
            WebhookDelivery.objects.filter(status=DeliveryStatus.SUCCESS, created_at__lt=cutoff)
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return total
        WebhookDelivery.objects.filter(pk__in=ids).delete()
        total += len(ids)
