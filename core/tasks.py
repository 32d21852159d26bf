"""The kernel's own task: the durable per-run updater of every outcome inbox (``core.inbox``)."""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import shared_task

from core.inbox import apply_pending, inbox_named
from core.locks import LockNotAcquired
from core.retry import INFRA_MAX_ERRORS, TRANSIENT_INFRA_ERRORS, error_budget_left, retry_after_error, retry_waiting

logger = logging.getLogger("core.tasks")


@shared_task(bind=True, name="core.tasks.apply_outcome", ignore_result=True)
def apply_outcome(self: Any, inbox: str, run_id: str, outcome: list[Any], infra_attempts: int = 0) -> str:
    """A run's updater for one outcome (and every one pending): serialized by the run's Redis lock (the
    filter) and row lock (the fence). A lock it cannot get in time means retry later, never a drop; so
    does a transient database or Redis error (bounded, with backoff). An outcome already applied (by an
    updater that drained the pending list) is a quick no-op."""
    box = inbox_named(inbox)
    try:
        if box.is_applied(run_id, outcome):
            return "already applied"
        result = apply_pending(box, run_id, outcome, wait=0.5)
    except LockNotAcquired:
        raise retry_waiting(self, countdown=random.uniform(0.1, 0.5)) from None
    except TRANSIENT_INFRA_ERRORS as exc:
        if not error_budget_left(self, max_errors=INFRA_MAX_ERRORS, counter="infra_attempts"):
            logger.error("updater_infra_failed", extra={"inbox": inbox, "run_id": run_id, "error": str(exc)})
            raise
        logger.warning("updater_infra_retry", extra={"inbox": inbox, "run_id": run_id, "error": str(exc)})
        raise retry_after_error(self, exc, base=0.5, cap=10.0, counter="infra_attempts") from None
    return "finalized" if result.finalized else "applied"
