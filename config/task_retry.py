"""Retry helpers for Celery tasks: an error budget separate from waiting.

Celery counts every ``retry`` in ``request.retries``. Our tasks distinguish:

- *waiting* (a lock or a global limit is busy): re-enqueue with a countdown; never dropped and
  never counted against the error budget;
- *errors* (typed transient errors): retried with exponential backoff and full jitter, at most
  ``max_errors`` times; the count travels in the task's ``error_attempts`` keyword argument.
"""

from __future__ import annotations

import random

from celery import Task

# Upper bound of re-enqueues of one task (waits + errors) so that nothing loops forever.
MAX_REENQUEUES = 10_000


def backoff_seconds(attempt: int, *, base: float = 2.0, cap: float = 60.0) -> float:
    """Full-jitter exponential backoff: uniform in [base/2, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2**attempt))
    return random.uniform(min(base / 2, ceiling), ceiling)


def retry_waiting(task: Task, *, countdown: float):
    """Re-enqueue the task unchanged after ``countdown`` seconds (not an error)."""
    return task.retry(countdown=countdown, max_retries=MAX_REENQUEUES)


def error_budget_left(task: Task, *, max_errors: int) -> bool:
    return int(task.request.kwargs.get("error_attempts", 0)) < max_errors


def retry_after_error(task: Task, exc: Exception, *, base: float = 2.0, cap: float = 60.0):
    """Re-enqueue with ``error_attempts + 1`` after a jittered exponential backoff."""
    attempt = int(task.request.kwargs.get("error_attempts", 0))
    kwargs = {**task.request.kwargs, "error_attempts": attempt + 1}
    return task.retry(
        exc=exc, kwargs=kwargs, countdown=backoff_seconds(attempt, base=base, cap=cap), max_retries=MAX_REENQUEUES
    )
