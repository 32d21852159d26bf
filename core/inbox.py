"""The outcome inbox and the serialized updater: how a unit's outcome reaches its run.

A unit task (a day of a job, a recording of a transcription run) ``report``\\s its outcome. The outcome
goes into the run's pending list in Redis; then the unit task runs the run's updater itself, under the
run's Redis lock (the efficiency filter) if it gets it within a moment, applying every pending outcome
in one call (``Inbox.apply``, which takes the run's row lock: the fence). A unit that cannot (the lock
is busy, Redis or the database fails) hands its outcome over as a durable updater task message instead
(``core.tasks.apply_outcome``), which waits for the lock and never drops it: the Redis list is only an
accelerator. The list is trimmed only after the updater's commit, so a crash in between applies the
outcomes again — the updater treats a duplicate as a no-op.

A workflow registers its inbox once (``register``, in its ``AppConfig.ready``); outcomes are JSON lists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from core.locks import redis_lock
from core.redis import get_redis
from core.retry import TRANSIENT_INFRA_ERRORS

logger = logging.getLogger("core.inbox")

PENDING_TTL_SECONDS = 24 * 3600
Outcome = Sequence[Any]


class Applied(Protocol):
    @property
    def finalized(self) -> bool: ...


@dataclass(frozen=True)
class Inbox:
    """``apply(run_id, outcomes)`` applies outcomes under the run's row lock and says whether the run
    ended; ``is_applied(run_id, outcome)`` is the durable task's cheap duplicate check (no lock)."""

    name: str
    pending_prefix: str  # Redis list "{prefix}:{run_id}"
    lock_prefix: str  # Redis lock "{prefix}:{run_id}"
    lock_seconds: float
    apply: Callable[[str, list[list[Any]]], Applied]
    is_applied: Callable[[str, list[Any]], bool]

    def pending_key(self, run_id: str) -> str:
        return f"{self.pending_prefix}:{run_id}"

    def lock_name(self, run_id: str) -> str:
        return f"{self.lock_prefix}:{run_id}"


_inboxes: dict[str, Inbox] = {}


def register(inbox: Inbox) -> Inbox:
    _inboxes[inbox.name] = inbox
    return inbox


def inbox_named(name: str) -> Inbox:
    return _inboxes[name]


def apply_pending(inbox: Inbox, run_id: str, outcome: Outcome, *, wait: float) -> Applied:
    """Under the run's Redis lock (waiting up to ``wait``; ``LockNotAcquired`` beyond): apply ``outcome``
    and every outcome pending in the list, in one call; trim the list after (a crash in between applies
    them again: no-ops)."""
    redis = get_redis()
    key = inbox.pending_key(run_id)
    with redis_lock(inbox.lock_name(run_id), timeout=inbox.lock_seconds, wait=wait):
        pending = redis.lrange(key, 0, -1)
        outcomes = [list(outcome), *(orjson.loads(raw) for raw in pending)]
        result = inbox.apply(run_id, outcomes)
        if pending:
            redis.ltrim(key, len(pending), -1)
        if result.finalized:
            redis.delete(key)
    return result


def report(inbox: Inbox, run_id: str, outcome: Outcome, *, wait: float = 0.5) -> None:
    """Hand a unit's outcome to its run's updater (see the module). Raises only when the durable
    message cannot be sent either (the caller retries)."""
    from core.locks import LockNotAcquired
    from core.tasks import apply_outcome

    try:
        redis = get_redis()
        key = inbox.pending_key(run_id)
        redis.rpush(key, orjson.dumps(list(outcome)))
        redis.expire(key, PENDING_TTL_SECONDS)
        apply_pending(inbox, run_id, outcome, wait=wait)
        return
    except LockNotAcquired:
        pass
    except TRANSIENT_INFRA_ERRORS:  # the durable message still carries it
        logger.warning("inline_update_failed", exc_info=True, extra={"inbox": inbox.name, "run_id": run_id})
    apply_outcome.delay(inbox.name, run_id, list(outcome))
