"""``dispatch_on_commit``: the one place that sends a workflow's task after the transaction that made
its work, and decides what a broker failure means.

A task is sent once the current transaction commits (at once outside one), so a worker never looks
for a row that is not there yet, and nothing is sent for work a rollback undid. A broker that is down
at that moment is logged, never raised: the caller's answer (an API response, a run's end) must not
turn into an error, and every workflow's reconciler re-drives what was not sent (a run never
dispatched, or without progress, is re-driven after its stall time).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

logger = logging.getLogger("core.dispatch")


def send(task: Any, *args: Any, task_id: str | None = None, queue: str | None = None, **kwargs: Any) -> bool:
    """Send ``task`` now; ``False`` (logged) when the broker refused it."""
    options: dict[str, Any] = {}
    if task_id is not None:
        options["task_id"] = task_id
    if queue is not None:
        options["queue"] = queue
    try:
        task.apply_async(args=args, kwargs=kwargs or None, **options)
    except Exception:  # the broker is down: the reconciler drives the work later
        logger.exception("dispatch_failed", extra={"task": getattr(task, "name", repr(task)), "args": args})
        return False
    return True


def dispatch_on_commit(
    task: Any, *args: Any, task_id: str | None = None, queue: str | None = None, **kwargs: Any
) -> None:
    """Send ``task(*args, **kwargs)`` after the current transaction commits (see the module)."""
    transaction.on_commit(lambda: send(task, *args, task_id=task_id, queue=queue, **kwargs))
