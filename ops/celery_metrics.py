"""Celery task metrics from Celery's signals, in the worker processes: runtime per task, queue and end state,
retries, failures (``core.metrics``). Nothing here may raise into a task: a metric that cannot be recorded is
dropped."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals

from core.metrics import TASK_FAILURES, TASK_RETRIES, TASK_RUNTIME

logger = logging.getLogger("ops.celery_metrics")

_started: dict[str, float] = {}  # task id -> perf_counter at prerun (this process's tasks in flight)


def _queue(request: Any) -> str:
    """The queue a task's message came from (its request's delivery info)."""
    info = getattr(request, "delivery_info", None) or {}
    return str(info.get("routing_key") or info.get("queue") or "unknown")


def _prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


def _postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    started = _started.pop(task_id or "", None)
    if started is None or task is None:
        return
    try:
        TASK_RUNTIME.labels(task.name, _queue(getattr(task, "request", None)), (state or "unknown").lower()).observe(
            time.perf_counter() - started
        )
    except Exception:  # metrics never break a task
        logger.debug("task_metric_dropped", exc_info=True)


def _retry(request: Any = None, sender: Any = None, **_: Any) -> None:
    try:
        TASK_RETRIES.labels(getattr(sender, "name", "unknown"), _queue(request)).inc()
    except Exception:
        logger.debug("task_metric_dropped", exc_info=True)


def _failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    try:
        TASK_FAILURES.labels(
            getattr(sender, "name", "unknown"),
            _queue(getattr(sender, "request", None)),
            type(exception).__name__ if exception else "unknown",
        ).inc()
    except Exception:
        logger.debug("task_metric_dropped", exc_info=True)


def connect() -> None:
    """Connect the handlers (once: Celery's signals keep weak references to module functions, which live on)."""
    signals.task_prerun.connect(_prerun, weak=False, dispatch_uid="ops.task_prerun")
    signals.task_postrun.connect(_postrun, weak=False, dispatch_uid="ops.task_postrun")
    signals.task_retry.connect(_retry, weak=False, dispatch_uid="ops.task_retry")
    signals.task_failure.connect(_failure, weak=False, dispatch_uid="ops.task_failure")
