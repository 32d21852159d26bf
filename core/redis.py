"""One Redis client per process (for locks and counters), built from ``settings.REDIS_URL``."""

from __future__ import annotations

import os
import threading

import redis
from django.conf import settings

_lock = threading.Lock()
_clients: dict[tuple[int, str], redis.Redis] = {}


def get_redis() -> redis.Redis:
    key = (os.getpid(), settings.REDIS_URL)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = redis.Redis.from_url(
                    settings.REDIS_URL, socket_connect_timeout=5, socket_timeout=10, health_check_interval=30
                )
                _clients[key] = client
    return client


def require_redis(purpose: str) -> None:
    """503 ``dependency_unavailable`` at once when Redis is not configured or does not answer."""
    from redis.exceptions import RedisError

    from core.exceptions import DependencyUnavailable

    if not (settings.REDIS_URL or "").strip():
        raise DependencyUnavailable(f"{purpose} needs Redis: set REDIS_URL.", details={"setting": "REDIS_URL"})
    try:
        get_redis().ping()
    except RedisError as exc:
        raise DependencyUnavailable(
            f"{purpose} needs Redis, which is unavailable.", details={"reason": type(exc).__name__}
        ) from None
