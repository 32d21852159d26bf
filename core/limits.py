"""Global limits held in Redis (Celery's own limits are per worker process).

``Semaphore``: at most ``limit`` holders at once across every worker. A holder is a member of a
sorted set scored by its expiry time, so a crashed holder frees its slot when its lease expires.
Acquisition is one Lua script (atomic). Work that cannot get a slot waits and retries; it is
never dropped.

``RateLimiter``: a GCRA rate shared by every process. ``throttle_user`` applies one per user to
expensive requests (429 with Retry-After); ``spending(user, kind)`` is the per-user budget of the
requests that cost LLM or speech-to-text money (``SPEND_KINDS``, ``{KIND}_USER_RATE`` / ``_BURST``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import redis
from django.conf import settings

from core.exceptions import ApplicationError, DependencyUnavailable, InvalidInput, ThrottledError
from core.redis import get_redis

logger = logging.getLogger("core.limits")


class LimitBusy(Exception):
    """A global limit is saturated: the work must wait (and retry), never be dropped."""

    def __init__(self, name: str, retry_after: float = 1.0):
        super().__init__(f"{name} busy; retry in {retry_after:.2f}s")
        self.retry_after = retry_after


_ACQUIRE = """
local key, member, limit, now, expires = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZSCORE', key, member) then
  redis.call('ZADD', key, expires, member)
  return 1
end
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, expires, member)
  redis.call('PEXPIRE', key, math.ceil((expires - now) * 1000) + 1000)
  return 1
end
return 0
"""


class Semaphore:
    def __init__(self, name: str, *, limit: int, lease_seconds: float):
        self.key = f"sem:{name}"
        self.limit = max(1, int(limit))
        self.lease_seconds = lease_seconds

    def acquire(self, holder: str) -> bool:
        now = time.time()
        script = get_redis().register_script(_ACQUIRE)
        return bool(script(keys=[self.key], args=[holder, self.limit, now, now + self.lease_seconds]))

    def acquire_wait(self, holder: str, *, wait: float, step: float = 0.01, max_step: float = 0.05) -> bool:
        """Try for up to ``wait`` seconds (keeps a worker slot hot instead of re-enqueueing), polling every
        ``step`` seconds at first, then less often (up to ``max_step``): a freed slot is still taken
        within tens of milliseconds, and a long wait costs Redis 20 calls a second, not 100."""
        deadline = time.monotonic() + wait
        while not self.acquire(holder):
            if time.monotonic() >= deadline:
                return False
            time.sleep(step)
            step = min(max_step, step * 1.5)
        return True

    @contextmanager
    def slot(self, holder: str, *, wait: float, heartbeat: bool = False) -> Iterator[None]:
        """Hold a slot for the block; ``LimitBusy`` when none frees up within ``wait`` seconds. With
        ``heartbeat`` the slot's lease is renewed every heartbeat while the block runs (``core.leases``):
        a short lease then covers a long call, and a holder that dies frees its slot within one lease."""
        if not self.acquire_wait(holder, wait=wait):
            raise LimitBusy(self.key)
        try:
            if heartbeat:
                from core.leases import Lease, keep_alive

                with keep_alive(Lease(f"{self.key}:{holder}", lambda: self.renew(holder))):
                    yield
            else:
                yield
        finally:
            self.release(holder)

    def renew(self, holder: str) -> bool:
        """Move ``holder``'s lease out by ``lease_seconds`` (False when it is no longer a holder)."""
        redis = get_redis()
        expires = time.time() + self.lease_seconds
        changed = redis.zadd(self.key, {holder: expires}, xx=True, ch=True)
        redis.pexpire(self.key, math.ceil(self.lease_seconds * 1000) + 1000)
        return bool(changed) or redis.zscore(self.key, holder) is not None

    def release(self, holder: str) -> None:
        get_redis().zrem(self.key, holder)

    def holders(self) -> list[str]:
        redis = get_redis()
        redis.zremrangebyscore(self.key, "-inf", time.time())
        return [m.decode() for m in cast(list[bytes], redis.zrange(self.key, 0, -1))]


# GCRA (generic cell rate algorithm): one key holding the theoretical arrival time. A call is
# allowed when it would not run ahead of the schedule by more than the burst; otherwise the
# script answers how long to wait. Atomic, so every worker process shares one rate. A call may
# cost several units (ARGV[4], default 1: a batch counted in fiches).
_GCRA = """
local key, now, interval, burst = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cost = tonumber(ARGV[4] or '1')
local tat = tonumber(redis.call('GET', key) or now)
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - interval * burst
if allow_at > now then
  return tostring(allow_at - now)
end
redis.call('SET', key, tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return '0'
"""

# Give back ``amount`` seconds of schedule (a counted request that was refused after all).
_GCRA_REFUND = """
local key, now, amount = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', key))
if not tat then return 0 end
tat = tat - amount
if tat <= now then
  redis.call('DEL', key)
else
  redis.call('SET', key, tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end
return 1
"""

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(rate: str) -> float | None:
    """``"20/m"`` → seconds between calls (3.0); ``""``, ``"0"`` or ``"off"`` → None (no limit)."""
    rate = (rate or "").strip().lower()
    if rate in ("", "0", "off", "none"):
        return None
    count, _, unit = rate.partition("/")
    try:
        calls = float(count)
        seconds = _UNITS[unit or "s"]
    except (ValueError, KeyError):
        raise ValueError(f"Invalid rate {rate!r}; expected e.g. '20/m', '5/s' or 'off'.") from None
    if calls <= 0:
        return None
    return seconds / calls


class RateLimiter:
    """At most one call per ``interval`` seconds on average across every process (burst 1 by
    default: calls are spaced, so no window holds more than its share)."""

    def __init__(self, name: str, *, rate: str, burst: int = 1):
        self.key = f"limit:{name}"
        self.interval = parse_rate(rate)
        self.burst = max(1, burst)

    def try_acquire(self, cost: int = 1) -> float:
        """0 when the call may go now (and is counted, ``cost`` units), else the seconds to wait.
        A cost above the burst never fits: check ``cost <= burst`` first."""
        if self.interval is None:
            return 0.0
        script = get_redis().register_script(_GCRA)
        return float(script(keys=[self.key], args=[time.time(), self.interval, self.burst, max(1, int(cost))]))

    def refund(self, cost: int = 1) -> None:
        """Give back ``cost`` units counted by ``try_acquire`` (the request was refused after all)."""
        if self.interval is None:
            return
        script = get_redis().register_script(_GCRA_REFUND)
        script(keys=[self.key], args=[time.time(), self.interval * max(1, int(cost))])

    def acquire(self, *, max_wait: float) -> None:
        """Wait in place up to ``max_wait`` seconds; beyond that raise ``LimitBusy`` (the task
        re-enqueues itself with that countdown, which is not an error)."""
        deadline = time.monotonic() + max_wait
        while True:
            wait = self.try_acquire()
            if wait <= 0:
                return
            if time.monotonic() + wait > deadline:
                raise LimitBusy(self.key, retry_after=wait)
            time.sleep(wait)


def throttle_user(
    user, *, name: str, rate: str, burst: int, what: str, cost: int = 1, code: str | None = None
) -> RateLimiter:
    """Per-user throttle of expensive requests (GCRA in Redis, key ``limit:user:{name}:{user id}``):
    over the rate, 429 ``{name}_requests_throttled`` (or ``code``) with Retry-After. ``cost``: the
    units this request counts (a batch: its fiches); more than ``burst`` can never pass: 400
    ``{name}_request_too_large``. Returns the limiter (to ``refund`` a request refused later).

    Redis unavailable: fails closed with a 503 (the requests this guards cost outside quota)."""
    limiter = RateLimiter(f"user:{name}:{user.pk}", rate=rate, burst=burst)
    cost = max(1, int(cost))
    if limiter.interval is not None and cost > limiter.burst:
        raise InvalidInput(
            f"This request counts {cost} against a limit of {limiter.burst} at once for {what} requests; "
            "send a smaller one.",
            code=f"{name}_request_too_large",
            details={"cost": cost, "burst": limiter.burst},
        )
    try:
        wait = limiter.try_acquire(cost)
    except redis.RedisError:
        raise DependencyUnavailable(
            f"Cannot check the request rate of {what} right now (Redis is unavailable); try again shortly.",
            code="rate_limiter_unavailable",
        ) from None
    if wait > 0:
        raise ThrottledError(
            f"Too many {what} requests; retry in {math.ceil(wait)} s.",
            code=code or f"{name}_requests_throttled",
            retry_after=math.ceil(wait),
        )
    return limiter


def throttle_crm_requests(user) -> None:
    """CRM-bound requests of one user: ``CRM_USER_THROTTLE_RATE`` with ``CRM_USER_THROTTLE_BURST``."""
    throttle_user(
        user, name="crm", rate=settings.CRM_USER_THROTTLE_RATE, burst=settings.CRM_USER_THROTTLE_BURST, what="CRM-bound"
    )


# --- Spending: per-user budgets of the requests that cost LLM or speech-to-text money --------------------

# kind -> what the messages call it. Each kind reads ``{KIND}_USER_RATE`` and ``{KIND}_USER_BURST``
# from the settings, and answers 429 ``{kind}_requests_throttled`` over them.
SPEND_KINDS: dict[str, str] = {
    "audit": "audit",  # POST /api/audits/run
    "rerun": "audit rerun",  # step and control-point reruns
    "transcription": "transcription",  # POST /api/transcriptions/{fiche_id}, forced or not
    "batch": "batch",  # POST /api/audits/batch and /api/transcriptions/batch, counted in fiches
    "chat": "chat",  # chat messages (the chat app's)
}


def spend_limit(kind: str) -> tuple[str, int]:
    """``(rate, burst)`` of a spending kind, from ``{KIND}_USER_RATE`` / ``{KIND}_USER_BURST``."""
    if kind not in SPEND_KINDS:
        raise ValueError(f"Unknown spending kind {kind!r}; one of {', '.join(SPEND_KINDS)}.")
    prefix = kind.upper()
    return str(getattr(settings, f"{prefix}_USER_RATE")), int(getattr(settings, f"{prefix}_USER_BURST"))


def throttle_spend(user, kind: str, *, cost: int = 1) -> RateLimiter:
    """Count ``cost`` units of the user's ``kind`` budget now: 429 over it (``Retry-After``), 503
    with Redis down (fails closed). Call it after input validation and permission checks, before any
    side effect; see ``spending`` for a block whose refusals are refunded."""
    rate, burst = spend_limit(kind)
    return throttle_user(user, name=kind, rate=rate, burst=burst, what=SPEND_KINDS[kind], cost=cost)


@contextmanager
def spending(user, kind: str, *, cost: int = 1) -> Iterator[None]:
    """Run the block as one request of the user's ``kind`` budget: counted on entry (429 over the
    budget, before anything in the block happens); refunded when the block refuses the request with
    an ``ApplicationError`` (invalid input, scope, not found, conflict, a dependency down): only
    accepted requests count."""
    limiter = throttle_spend(user, kind, cost=cost)
    try:
        yield
    except ApplicationError:
        try:
            limiter.refund(cost)
        except redis.RedisError:  # the refund is a courtesy: the refusal is the answer
            logger.warning("spend_refund_failed", extra={"kind": kind, "user_id": getattr(user, "pk", None)})
        raise
