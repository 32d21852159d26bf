"""Redis locks (redis-py ``Lock``): the efficiency filter in front of database fences."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import LockError

from core.redis import get_redis


class LockNotAcquired(Exception):
    """The lock is held elsewhere and could not be taken within the wait allowed."""


@contextmanager
def redis_lock(name: str, *, timeout: float, wait: float = 0.0) -> Iterator[None]:
    """Hold ``lock:{name}`` for at most ``timeout`` seconds; wait up to ``wait`` seconds for it.

    A holder that outlives ``timeout`` loses the lock silently (release then is a no-op), which is
    why callers keep a database fence (row lock or conditional update) behind it.
    """
    lock = get_redis().lock(
        f"lock:{name}", timeout=timeout, sleep=0.01, blocking=wait > 0, blocking_timeout=wait or None
    )
    if not lock.acquire():
        raise LockNotAcquired(name)
    try:
        yield
    finally:
        try:
            lock.release()
        except LockError:  # expired meanwhile, or taken over: nothing of ours to release
            pass
