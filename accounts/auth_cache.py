"""Per-request authentication without per-request queries: the user's row and effective grants,
cached in Redis under a version that every user, role, role-grant or role-assignment change bumps.

- ``CachedJWTAuthentication`` (the DRF authentication class): validates the JWT as simplejwt does,
  then takes the user and their grants from the cache entry when its version is current (one
  Redis round trip), else from the database (and refreshes the entry).
- The version (``accounts.cache_versions``) is bumped at once and again after the commit of any such
  change: by the tables' bulk writes (``accounts.models``) and by signal receivers
  (``accounts.signals``) for every save, delete and role assignment (admin, services, ORM), so a
  change applies on the next request. Entries also expire after ``AUTH_CACHE_SECONDS``.
- Redis unavailable: everything is read from the database, as without the cache.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken
from rest_framework_simplejwt.settings import api_settings

from accounts.cache_versions import VERSION_KEY
from accounts.grants import Grant, Scope, effective_grants, set_cached_grants
from core.redis import get_redis

logger = logging.getLogger("accounts.auth_cache")

_USER_FIELDS = ("email", "first_name", "last_name", "crm_user_id", "groupes", "is_active", "is_staff", "is_superuser")


def _entry_key(user_id: Any) -> str:
    return f"accounts:auth:{user_id}"


def _scope(value: str | None) -> Scope | None:
    return Scope(value) if value else None


def _snapshot(user, grants: dict[str, Grant], version: int) -> bytes:
    return orjson.dumps(
        {
            "v": version,
            "id": user.pk,
            "user": {name: getattr(user, name) for name in _USER_FIELDS},
            "grants": [[g.key, g.read, g.write, g.read_scope, g.write_scope] for g in grants.values()],
        }
    )


def _user_from(entry: dict):
    user = get_user_model()(id=entry["id"], **entry["user"])
    user._state.adding = False
    user._state.db = "default"
    grants = {
        key: Grant(key, read, write, _scope(read_scope), _scope(write_scope))
        for key, read, write, read_scope, write_scope in entry["grants"]
    }
    set_cached_grants(user, grants)
    return user


def cached_user(user_id: Any):
    """The user and grants from a current cache entry, or ``None`` (missing, stale, Redis down)."""
    try:
        version, raw = get_redis().mget(VERSION_KEY, _entry_key(user_id))
    except redis.RedisError:
        return None
    if raw is None:
        return None
    entry = orjson.loads(raw)
    if entry["v"] != int(version or 0):
        return None
    return _user_from(entry)


def remember_user(user) -> None:
    """Cache ``user`` and their effective grants under the current version."""
    ttl = settings.AUTH_CACHE_SECONDS
    if ttl <= 0:
        return
    try:
        client = get_redis()
        version = int(client.get(VERSION_KEY) or 0)
        grants = effective_grants(user)  # read after the version: a concurrent bump makes it stale
        client.set(_entry_key(user.pk), _snapshot(user, grants, version), ex=ttl)
    except redis.RedisError:
        logger.warning("auth_cache_store_failed", exc_info=True)


_VALIDATED_MAX = 4096
_validated: dict[bytes, Any] = {}


class CachedJWTAuthentication(JWTAuthentication):
    """simplejwt's authentication with the user (and grants) served from the auth cache, and each
    access token's signature checked once per process (the same bytes verify the same way; its
    expiry is still checked on every request)."""

    def get_validated_token(self, raw_token: bytes):
        token = _validated.get(raw_token)
        if token is not None and token.payload.get("exp", 0) > time.time():
            return token
        token = super().get_validated_token(raw_token)
        if len(_validated) >= _VALIDATED_MAX:
            _validated.clear()
        _validated[raw_token] = token
        return token

    def get_user(self, validated_token):
        try:
            user_id = validated_token[api_settings.USER_ID_CLAIM]
        except KeyError:
            raise InvalidToken("Token contained no recognizable user identification") from None
        if settings.AUTH_CACHE_SECONDS > 0:
            user = cached_user(user_id)
            if user is not None:
                if not user.is_active:
                    raise AuthenticationFailed("User is inactive", code="user_inactive")
                return user
        user = super().get_user(validated_token)
        remember_user(user)
        return user
