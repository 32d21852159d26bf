"""Celery tasks of the realtime app. Webhook tasks run on the ``webhooks`` queue, which its own
worker pool consumes (an I/O pool: slow receivers never take CRM or orchestration slots)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from core.locks import LockNotAcquired, redis_lock
from core.retry import retry_waiting
from realtime import publisher, webhooks
from realtime.models import AttemptTrigger

logger = logging.getLogger("realtime.tasks")

# The sweeper re-dispatches an attempt this long after it was due (a countdown message that is
# only late must not be doubled; the attempt number makes a double harmless anyway).
SWEEP_GRACE_SECONDS = 60.0


@shared_task(name="realtime.tasks.send_pusher_messages", ignore_result=True)
def send_pusher_messages(messages: list[dict]) -> int:
    """Pusher batch triggers for events published during a web request (requests never wait)."""
    return publisher.send_messages(messages)


@shared_task(bind=True, name="realtime.tasks.webhooks.deliver", ignore_result=True)
def deliver_webhook(self, delivery_id: int, trigger: str = AttemptTrigger.SCHEDULED, attempt: int | None = None) -> str:
    """One attempt of a webhook delivery (``attempt``: the number it is for; a message for an
    attempt already made is a no-op); schedules the next attempt when one is due."""
    try:
        with redis_lock(f"webhook-delivery:{delivery_id}", timeout=settings.WEBHOOK_TIMEOUT_SECONDS + 60):
            result = webhooks.attempt_delivery(
                delivery_id=delivery_id, trigger=trigger, task_id=self.request.id, attempt=attempt
            )
    except LockNotAcquired:  # an attempt of this delivery is running: try again shortly
        raise retry_waiting(self, countdown=2) from None
    if result.retry_in is not None and result.number is not None:
        deliver_webhook.apply_async((delivery_id,), {"attempt": result.number + 1}, countdown=result.retry_in)
    return result.status


@shared_task(name="realtime.tasks.sweep_webhook_deliveries", ignore_result=True)
def sweep_webhook_deliveries() -> int:
    """Beat (every minute): re-dispatch pending deliveries whose next attempt is overdue (their
    scheduled message was lost, e.g. with the broker's data) or that were never attempted. The
    delivery keeps its ``webhook-id``."""
    due = webhooks.overdue_deliveries(grace_seconds=SWEEP_GRACE_SECONDS)
    for delivery_id, attempt in due:
        deliver_webhook.delay(delivery_id, attempt=attempt)
    if due:
        logger.warning("webhook_deliveries_swept", extra={"deliveries": len(due)})
    return len(due)


@shared_task(name="realtime.tasks.purge_webhook_deliveries", ignore_result=True)
def purge_webhook_deliveries() -> int:
    """Beat: delete successful deliveries older than ``WEBHOOK_RETENTION_DAYS``, in batches."""
    deleted = webhooks.purge_old_deliveries(older_than_days=settings.WEBHOOK_RETENTION_DAYS)
    logger.info("webhook_deliveries_purged", extra={"deleted": deleted})
    return deleted
