"""The auth cache's version (``accounts.auth_cache``): one Redis counter that every change to a user,
a role, a role's grants or who holds a role bumps, so that every cached user and their grants are
stale at once.

Called by the tables' bulk writes (``accounts.models``) and by the save/delete/m2m signal receivers
(``accounts.signals``, connected in ``AccountsConfig.ready``). Imports nothing of ``accounts``: the
tables bump it without importing the cache that reads it.
"""

from __future__ import annotations

import logging

import redis
from django.db import transaction

from core.redis import get_redis

logger = logging.getLogger("accounts.auth_cache")  # its log lines keep the logger they had

VERSION_KEY = "accounts:auth-version"


def _incr() -> None:
    try:
        get_redis().incr(VERSION_KEY)
    except redis.RedisError:
        logger.warning("auth_cache_version_bump_failed", exc_info=True)


def bump() -> None:
    """Invalidate every cached user and grants: now, and again once the current transaction commits
    (a request that read the old rows before the commit must not leave them cached). Never raises:
    with Redis down the bump is logged, and authentication reads the database anyway."""
    _incr()
    transaction.on_commit(_incr)
