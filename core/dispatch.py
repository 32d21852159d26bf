"""``dispatch_on_commit``: the one place that sends a workflow's task after the transaction that made
its work, and decides what a broker failure means.

``fan_out`` sends a workflow's units: one message per unit, no group or chord (no result bookkeeping,
no chord counter: a run's serialized updater ends it, its reconciler is the safety net).

A task is sent once the current transaction commits (at once outside one), so a worker never looks
for a row that is not there yet, and nothing is sent for work a rollback undid. A broker that is down
at that moment is logged, never raised: the caller's answer (an API response, a run's end) must not
turn into an error, and every workflow's reconciler re-drives what was not sent (a run never
dispatched, or without progress, is re-driven after its stall time).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
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
        if options:
            task.apply_async(args=args, kwargs=kwargs or None, **options)
        else:
            task.delay(*args, **kwargs)
    except Exception:  # the broker is down: the reconciler drives the work later
        # (not "args": a LogRecord attribute, which ``extra`` may not overwrite)
        logger.exception("dispatch_failed", extra={"task": getattr(task, "name", repr(task)), "task_args": args})
        return False
    return True


def dispatch_on_commit(
    task: Any, *args: Any, task_id: str | None = None, queue: str | None = None, **kwargs: Any
) -> None:
    """Send ``task(*args, **kwargs)`` after the current transaction commits (see the module)."""
    transaction.on_commit(lambda: send(task, *args, task_id=task_id, queue=queue, **kwargs))


def fan_out(task: Any, arg_lists: Iterable[Sequence[Any]], *, queue: str | None = None) -> int:
    """Send one ``task`` message per argument list, now, over one broker connection; the number sent.
    A broker error is raised (the orchestrator retries; units are idempotent on their natural keys)."""
    options: dict[str, Any] = {} if queue is None else {"queue": queue}
    sent = 0
    with task.app.producer_or_acquire() as producer:
        for args in arg_lists:
            task.apply_async(args=tuple(args), producer=producer, **options)
            sent += 1
    return sent


def queue_depth(queue: str) -> int | None:
    """Messages waiting in the broker's ``queue`` (not those a worker reserved); ``None`` when the broker
    cannot tell (it is down). A queue that does not exist holds none."""
    return queue_depths([queue]).get(queue)


def queue_depths(queues: Iterable[str]) -> dict[str, int | None]:
    """``queue_depth`` of each queue over one broker connection (Redis lists, RabbitMQ queues alike); every
    value ``None`` when the broker is down."""
    from celery import current_app
    from kombu.exceptions import ChannelError

    names = list(queues)
    try:
        with current_app.connection_for_read() as conn:
            depths: dict[str, int | None] = {}
            for name in names:
                channel: Any = conn.channel()  # one per queue: a failed passive declare closes its channel (AMQP)
                try:
                    depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
                except ChannelError:
                    depths[name] = 0
                finally:
                    try:
                        channel.close()
                    except Exception:  # closed by the broker already
                        pass
            return depths
    except Exception:
        logger.warning("queue_depth_unknown", exc_info=True, extra={"queues": ",".join(names)})
        return dict.fromkeys(names)
