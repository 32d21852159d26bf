"""Review queue tasks: thin, idempotent (an item is unique per queue and audit)."""

from __future__ import annotations

from celery import shared_task

from core.retry import INFRA_RETRY
from review_queues import services


@shared_task(name="review_queues.tasks.review_queue_enter_audit", ignore_result=True, **INFRA_RETRY)
def review_queue_enter_audit(audit_id: str) -> int:
    """A completed audit enters the queues that pick it."""
    return services.enter_audit(audit_id=audit_id)


@shared_task(name="review_queues.tasks.sweep_review_queues", ignore_result=True)
def sweep_review_queues() -> dict[str, int]:
    """Beat: expired claims back to waiting, lost entries re-entered, closed weeks' samples topped up."""
    return services.sweep()
