"""Retry helpers for Celery tasks: an error budget separate from waiting.

Celery counts every ``retry`` in ``request.retries``. Our tasks distinguish:

- *waiting* (a lock or a global limit is busy): re-enqueue with a countdown; never dropped and
  never counted against the error budget;
- *errors* (typed transient errors): retried with exponential backoff and full jitter, at most
  ``max_errors`` times; the count travels in the task's ``error_attempts`` keyword argument.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import redis
from celery import Task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError

logger = logging.getLogger("core.retry")

# Upper bound of re-enqueues of one task (waits + errors) so that nothing loops forever.
MAX_REENQUEUES = 10_000

# Errors of our own infrastructure that pass: a dropped or refused database connection, Redis
# unreachable or timing out, the broker refusing a publish. Retried like transient CRM errors.
TRANSIENT_INFRA_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
    BrokerOperationalError,
)
INFRA_MAX_ERRORS = 6

# Celery options of a task whose only failures worth retrying are those of our infrastructure
# (an orchestrator, an updater, a finalizer): bounded, with backoff.
INFRA_RETRY: dict[str, Any] = {
    "autoretry_for": TRANSIENT_INFRA_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 10,
    "max_retries": INFRA_MAX_ERRORS,
}


def delay(seconds: float) -> float:
    """A countdown the broker can honour: on RabbitMQ, Celery delays a message in the broker in whole seconds
    (native delayed delivery, with quorum queues) and refuses one under a second, so a sub-second delay is
    rounded up to one second there; on Redis it is kept as it is."""
    if getattr(settings, "CELERY_BROKER_IS_AMQP", False) and 0 < seconds < 1:
        return 1.0
    return seconds


def backoff_seconds(attempt: int, *, base: float = 2.0, cap: float = 60.0) -> float:
    """Full-jitter exponential backoff: uniform in [base/2, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2**attempt))
    return random.uniform(min(base / 2, ceiling), ceiling)


def wait_backoff(task: Task, *, base: float = 0.5, cap: float = 30.0, counter: str = "wait_attempts"):
    """Re-enqueue a task that waits for something a live holder keeps (a claim, a slot): after an
    exponential, capped, jittered delay that grows with each wait (``counter`` counts them), instead of
    polling at a fixed pace. Not an error."""
    attempt = int(_kwargs(task).get(counter) or 0)
    kwargs = {**_kwargs(task), counter: attempt + 1}
    countdown = delay(backoff_seconds(attempt, base=base, cap=cap))
    return task.retry(countdown=countdown, max_retries=MAX_REENQUEUES, kwargs=kwargs)


def retry_waiting(task: Task, *, countdown: float, kwargs: dict | None = None):
    """Re-enqueue the task after ``countdown`` seconds (not an error), unchanged or with ``kwargs``
    (e.g. where to resume)."""
    return task.retry(countdown=delay(countdown), max_retries=MAX_REENQUEUES, kwargs=kwargs)


def _kwargs(task: Task) -> dict[str, Any]:
    return dict(task.request.kwargs or {})


def error_budget_left(task: Task, *, max_errors: int, counter: str = "error_attempts") -> bool:
    return int(_kwargs(task).get(counter) or 0) < max_errors


def retry_after_error(
    task: Task,
    exc: Exception,
    *,
    base: float = 2.0,
    cap: float = 60.0,
    counter: str = "error_attempts",
    extra_kwargs: dict | None = None,
):
    """Re-enqueue with ``counter + 1`` (the task's keyword argument counting this kind of error)
    after a jittered exponential backoff; ``extra_kwargs`` are added to the task's kwargs."""
    attempt = int(_kwargs(task).get(counter) or 0)
    kwargs = {**_kwargs(task), **(extra_kwargs or {}), counter: attempt + 1}
    countdown = delay(backoff_seconds(attempt, base=base, cap=cap))
    return task.retry(exc=exc, kwargs=kwargs, countdown=countdown, max_retries=MAX_REENQUEUES)


def retry_infra(task: Task, exc: Exception, *, keep: dict[str, Any] | None = None) -> None:
    """A transient error of our own infrastructure (``TRANSIENT_INFRA_ERRORS``) in a unit task: re-enqueue
    it with backoff while its budget lasts (``INFRA_MAX_ERRORS``, counted in ``infra_attempts``; ``keep``:
    kwargs the retry carries, e.g. an outcome still to hand over, so the work is not done twice) —
    raises the retry — else return: the caller gives up on this message (logged) and the workflow's
    reconciler drives the unit again."""
    if error_budget_left(task, max_errors=INFRA_MAX_ERRORS, counter="infra_attempts"):
        logger.warning("infra_retry", extra={"task": task.name, "error": str(exc)})
        raise retry_after_error(task, exc, base=0.5, cap=10.0, counter="infra_attempts", extra_kwargs=keep)
    logger.error("infra_gave_up", extra={"task": task.name, "error": str(exc)})
