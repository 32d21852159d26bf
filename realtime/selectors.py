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


def deliveries_of(*, source: str, source_id: str, limit: int = 10) -> list[dict]:
    """The latest webhook deliveries of one app object, newest first."""
    rows = WebhookDelivery.objects.filter(source=source, source_id=str(source_id)).order_by("-created_at", "-id")
    return [delivery_dict(d) for d in rows[:limit]]
