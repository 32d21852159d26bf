"""Celery tasks of the realtime app (the sender tasks live beside what they send — ``publisher``,
``webhooks`` — and are listed here for Celery). Webhook tasks run on the ``webhooks`` queue, which its own
worker pool consumes (an I/O pool: slow receivers never take CRM or orchestration slots)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from realtime import webhooks
from realtime.publisher import send_pusher_messages
from realtime.webhooks import deliver_webhook

logger = logging.getLogger("realtime.tasks")

# The sweeper re-dispatches an attempt this long after it was due (a countdown message that is
# only late must not be doubled; the attempt number makes a double harmless anyway).
SWEEP_GRACE_SECONDS = 60.0

__all__ = ["deliver_webhook", "purge_webhook_deliveries", "send_pusher_messages", "sweep_webhook_deliveries"]


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
