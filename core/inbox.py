"""The outcome inbox and the serialized updater: how a unit's outcome reaches its run.

A unit task (a day of a job, a recording of a transcription run) ``report``\\s its outcome: one Redis
round trip appends it to the run's pending list and tries the run's Redis lock (the efficiency filter).

- **Lock taken**: the unit task is the run's updater. It applies every pending outcome in one call
  (``Inbox.apply``, which takes the run's row lock: the fence, and commits), then — after that commit —
  trims what it applied and, in the same round trip, either releases the lock or, if outcomes arrived
  meanwhile, keeps it and applies those too (a few passes at most). One database pass serves every
  outcome that queued behind it.
- **Lock busy**: the unit task waits (a moment, ``wait``) for the holder to drain its outcome; "drained"
  is positive evidence — a per-run counter the holder moves only after its commit, in the same script
  as the trim — never the mere absence of the entry (which a Redis restart would fake). If the lock
  frees first, it becomes the updater itself. If neither happens in time, or Redis or the database
  fails, it hands the outcome over as a durable updater task message (``core.tasks.apply_outcome``),
  which waits for the lock and never drops it: the Redis list is only an accelerator.

A holder that lost its lock (it outlived ``lock_seconds``) trims nothing: the next holder applies those
outcomes again and the updater treats a duplicate as a no-op. A run that ended drops its list.

``touch`` (optional) names the run's cache-version keys (e.g. its status snapshot's): the settle round
trip increments them after each pass that changed the run, so the updater invalidates the run's cached
views after its commit without a round trip of its own (``apply`` then need not do it).

Redis keys of a run: ``{pending_prefix}:{run_id}`` (the list), ``{pending_prefix}:{run_id}:seq`` (a hash:
``pushed`` / ``done`` counters and a generation, which a restart that lost the data changes), and
``lock:{lock_prefix}:{run_id}`` (the lock, compatible with ``core.locks.redis_lock``).

A workflow registers its inbox once (``register``, in its ``AppConfig.ready``); outcomes are JSON lists.
The durable updater task lives here, with the inbox it drains; ``core.tasks`` names it for autodiscovery.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson
from celery import shared_task

from core.locks import LockNotAcquired
from core.redis import get_redis
from core.retry import TRANSIENT_INFRA_ERRORS, retry_infra, retry_waiting

logger = logging.getLogger("core.inbox")

PENDING_TTL_SECONDS = 24 * 3600
MAX_PASSES = 16  # passes one holder makes for outcomes that queued behind it before letting go
Outcome = Sequence[Any]
Reported = Literal["applied", "drained", "handed_over"]


class Applied(Protocol):
    """What ``Inbox.apply`` returns: whether the run ended (and, optionally, ``changed``: whether the pass
    changed it; taken as true when absent)."""

    @property
    def finalized(self) -> bool: ...


@dataclass(frozen=True)
class Inbox:
    """``apply(run_id, outcomes)`` applies outcomes (in order) under the run's row lock, commits, and says
    whether the run ended; ``is_applied(run_id, outcome)`` is the durable task's cheap duplicate check
    (no lock). ``lock_seconds``: a number, or a callable read at each use (a setting)."""

    name: str
    pending_prefix: str  # Redis list "{prefix}:{run_id}"
    lock_prefix: str  # Redis lock "lock:{prefix}:{run_id}"
    lock_seconds: float | Callable[[], float]
    apply: Callable[[str, list[list[Any]]], Applied]
    is_applied: Callable[[str, list[Any]], bool]
    touch: Callable[[str], Sequence[str]] | None = None  # keys incremented after each pass that changed the run

    def pending_key(self, run_id: str) -> str:
        return f"{self.pending_prefix}:{run_id}"

    def lock_name(self, run_id: str) -> str:
        return f"{self.lock_prefix}:{run_id}"

    def keys(self, run_id: str) -> list[str]:
        pending = self.pending_key(run_id)
        return [pending, f"lock:{self.lock_name(run_id)}", f"{pending}:seq"]

    def lock_ms(self) -> int:
        seconds = self.lock_seconds() if callable(self.lock_seconds) else self.lock_seconds
        return max(1, int(seconds * 1000))


_inboxes: dict[str, Inbox] = {}


def register(inbox: Inbox) -> Inbox:
    _inboxes[inbox.name] = inbox
    return inbox


def inbox_named(name: str) -> Inbox:
    return _inboxes[name]


# KEYS: list, lock, counters. Every script is one round trip.

# ARGV: entry, token, lock ms, ttl s, generation candidate → {gen, seq, pending list if the lock was taken}
_PUSH = """
local gen = redis.call('HGET', KEYS[3], 'gen')
if not gen then
  gen = ARGV[5]
  redis.call('HSET', KEYS[3], 'gen', gen, 'done', 0)
end
local seq = redis.call('HINCRBY', KEYS[3], 'pushed', 1)
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return {gen, seq, redis.call('LRANGE', KEYS[1], 0, -1)}
end
return {gen, seq}
"""

# ARGV: gen, seq, token, lock ms → 0 drained (applied and committed), -1 lost (Redis lost the data: the
# caller applies it itself), 1 still pending, or the pending list (the lock was free: taken)
_POLL = """
if redis.call('HGET', KEYS[3], 'gen') ~= ARGV[1] then return -1 end
if tonumber(redis.call('HGET', KEYS[3], 'done') or '0') >= tonumber(ARGV[2]) then return 0 end
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then
  return redis.call('LRANGE', KEYS[1], 0, -1)
end
return 1
"""

# ARGV: token, lock ms → the pending list (lock taken) or nil (busy)
_ACQUIRE = """
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('LRANGE', KEYS[1], 0, -1)
end
return false
"""

# After the holder's commit. KEYS[4..]: the run's ``touch`` keys. ARGV: token, n applied (the list's head),
# run ended (0/1), lock ms, go on (0/1), changed (0/1), touch ttl s → nil (the lock was lost: nothing
# trimmed), {} (released), or the outcomes that queued meanwhile (the lock is kept for another pass)
_SETTLE = """
if ARGV[6] == '1' then
  for i = 4, #KEYS do
    redis.call('INCR', KEYS[i])
    redis.call('EXPIRE', KEYS[i], ARGV[7])
  end
end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return false end
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[3], 'done', redis.call('HGET', KEYS[3], 'pushed') or 0)
  redis.call('DEL', KEYS[2])
  return {}
end
local n = tonumber(ARGV[2])
if n > 0 then
  redis.call('LTRIM', KEYS[1], n, -1)
  redis.call('HINCRBY', KEYS[3], 'done', n)
end
if ARGV[5] == '1' then
  local rest = redis.call('LRANGE', KEYS[1], 0, -1)
  if #rest > 0 then
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
    return rest
  end
end
redis.call('DEL', KEYS[2])
return {}
"""

# ARGV: token
_RELEASE = """
if redis.call('GET', KEYS[2]) == ARGV[1] then return redis.call('DEL', KEYS[2]) end
return 0
"""


def _script(source: str) -> Any:
    return get_redis().register_script(source)


def _decode(entries: list[bytes]) -> list[list[Any]]:
    return [orjson.loads(raw) for raw in entries]


def _drain(inbox: Inbox, run_id: str, token: str, outcomes: list[list[Any]], queued: int) -> Applied:
    """Holding the lock: apply ``outcomes`` (whose last ``queued`` are the list's head), settle after the
    commit, and go on with what queued meanwhile (at most ``MAX_PASSES`` passes). The lock is released
    whatever happens."""
    keys = inbox.keys(run_id)
    settle_keys = [*keys, *(inbox.touch(run_id) if inbox.touch is not None else ())]
    settled = False
    try:
        for passes in range(1, MAX_PASSES + 1):
            result = inbox.apply(run_id, outcomes)
            more = passes < MAX_PASSES and not result.finalized
            changed = bool(getattr(result, "changed", True))
            flags = [int(result.finalized), inbox.lock_ms(), int(more), int(changed), PENDING_TTL_SECONDS]
            rest = _script(_SETTLE)(keys=settle_keys, args=[token, queued, *flags])
            if not rest:  # released (or lost: the next holder applies them again)
                settled = True
                return result
            outcomes = _decode(rest)
            queued = len(outcomes)
        raise AssertionError("unreachable")  # pragma: no cover (the last pass never goes on)
    finally:
        if not settled:
            try:
                _script(_RELEASE)(keys=keys, args=[token])
            except Exception:  # Redis is down: the lock expires by itself
                logger.warning("inbox_release_failed", extra={"inbox": inbox.name, "run_id": run_id})


def apply_pending(inbox: Inbox, run_id: str, outcome: Outcome, *, wait: float) -> Applied:
    """Under the run's Redis lock (waiting up to ``wait``; ``LockNotAcquired`` beyond): apply ``outcome``
    and every outcome pending in the list, in one call; trim the list after the commit (a crash in
    between applies them again: no-ops). The durable updater task's way in."""
    token = uuid.uuid4().hex
    keys = inbox.keys(run_id)
    acquire = _script(_ACQUIRE)
    deadline = time.monotonic() + wait
    pause = 0.002
    while (pending := acquire(keys=keys, args=[token, inbox.lock_ms()])) is None:
        if time.monotonic() >= deadline:
            raise LockNotAcquired(inbox.lock_name(run_id))
        time.sleep(pause)
        pause = min(pause * 1.5, 0.02)
    return _drain(inbox, run_id, token, [list(outcome), *_decode(pending)], len(pending))


def report(inbox: Inbox, run_id: str, outcome: Outcome, *, wait: float = 0.5) -> Reported:
    """Hand a unit's outcome to its run's updater (see the module): ``applied`` (this task was the
    updater), ``drained`` (the updater of the moment applied it) or ``handed_over`` (a durable updater
    task carries it). Raises only when that message cannot be sent either (the caller retries)."""
    entry = orjson.dumps(list(outcome))
    token = uuid.uuid4().hex
    keys = inbox.keys(run_id)
    try:
        pushed = _script(_PUSH)(keys=keys, args=[entry, token, inbox.lock_ms(), PENDING_TTL_SECONDS, token])
        generation, seq = pushed[0], int(pushed[1])
        if len(pushed) > 2:
            _drain(inbox, run_id, token, _decode(pushed[2]), len(pushed[2]))
            return "applied"
        poll = _script(_POLL)
        deadline = time.monotonic() + wait
        pause = 0.002
        while time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 1.5, 0.02)
            state = poll(keys=keys, args=[generation, seq, token, inbox.lock_ms()])
            if state == 0:
                return "drained"
            if state == -1:  # Redis lost the list: this outcome goes the durable way
                break
            if isinstance(state, list):  # the lock was free: this task is the updater now
                _drain(inbox, run_id, token, [list(outcome), *_decode(state)], len(state))
                return "applied"
    except TRANSIENT_INFRA_ERRORS:  # the durable message still carries it
        logger.warning("inline_update_failed", exc_info=True, extra={"inbox": inbox.name, "run_id": run_id})
    apply_outcome.delay(inbox.name, run_id, list(outcome))
    return "handed_over"


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
        retry_infra(self, exc)  # raises the retry while the budget lasts
        raise  # spent: this message fails; the run's reconciler drives what it carried
    return "finalized" if result.finalized else "applied"
