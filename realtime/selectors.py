"""Reads of the realtime app."""

from realtime.models import WebhookDelivery


def delivery_dict(d: WebhookDelivery) -> dict:
    """A delivery as the API shows it (never the secret)."""
    return {
        "id": d.pk,
        "event": d.event,
        "status": d.status,
        "attempts": d.attempts,
        "lastStatusCode": d.last_status_code,
        "lastError": d.last_error,
        "nextRetryAt": d.next_retry_at.isoformat() if d.next_retry_at else None,
        "createdAt": d.created_at.isoformat(),
    }


def job_webhook_deliveries(job, *, limit: int = 10) -> list[dict]:
    """The job's latest webhook deliveries, newest first."""
    return [delivery_dict(d) for d in WebhookDelivery.objects.filter(job=job).order_by("-created_at", "-id")[:limit]]
