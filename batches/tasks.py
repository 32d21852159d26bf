"""Celery tasks of batches: thin wrappers that call one service (on the ``default`` queue)."""

from __future__ import annotations

from celery import shared_task

from batches import services
from core.dispatch import dispatch_on_commit
from core.retry import INFRA_RETRY


@shared_task(name="batches.tasks.batch_start", ignore_result=True, **INFRA_RETRY)
def batch_start(batch_id: str) -> int:
    """Start the batch's items (idempotent: each item is claimed before it starts)."""
    return services.batch_start_items(batch_id=batch_id)


@shared_task(name="batches.tasks.reconcile_batches", ignore_result=True)
def reconcile_batches() -> dict[str, list[str]]:
    """Beat (every minute): every batch ends; batches with items to start again are re-driven."""
    actions = services.batch_reconcile()
    for batch_id in actions["restarted"]:
        dispatch_on_commit(batch_start, batch_id)
    return actions
