"""Global limits held in Redis (Celery's own limits are per worker process).

``Semaphore``: at most ``limit`` holders at once across every worker. A holder is a member of a
sorted set scored by its expiry time, so a crashed holder frees its slot when its lease expires.
Acquisition is one Lua script (atomic). Work that cannot get a slot waits and retries; it is
never dropped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from config.redis import get_redis


class LimitBusy(Exception):
    """A global limit is saturated: the work must wait (and retry), never be dropped."""

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

    def acquire_wait(self, holder: str, *, wait: float, step: float = 0.01) -> bool:
        """Try for up to ``wait`` seconds (keeps a worker slot hot instead of re-enqueueing)."""
        deadline = time.monotonic() + wait
        while not self.acquire(holder):
            if time.monotonic() >= deadline:
                return False
            time.sleep(step)
        return True

    @contextmanager
    def slot(self, holder: str, *, wait: float) -> Iterator[None]:
        """Hold a slot for the block; ``LimitBusy`` when none frees up within ``wait`` seconds."""
        if not self.acquire_wait(holder, wait=wait):
            raise LimitBusy(self.key)
        try:
            yield
        finally:
            self.release(holder)

    def release(self, holder: str) -> None:
        get_redis().zrem(self.key, holder)

    def holders(self) -> list[str]:
        redis = get_redis()
        redis.zremrangebyscore(self.key, "-inf", time.time())
        return [m.decode() for m in redis.zrange(self.key, 0, -1)]
