"""Shared fixtures. Tests run against the real Postgres and a dedicated Redis database."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from accounts.grants import PERMISSION_KEYS, Scope
from accounts.models import Role, RolePermission, User
from accounts.tokens import issue_tokens

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def _flush_test_redis(request):
    """Each test starts with an empty test Redis database (throttles, locks, counters).

    With a live Celery worker (``workflow`` tests) only our own keys go: flushing would also drop
    the broker's queue bindings under the worker's feet.
    """
    client = redis.Redis.from_url(settings.REDIS_URL)
    if client.connection_pool.connection_kwargs.get("db", 0) == 0:
        pytest.exit("Refusing to flush Redis db 0: point TEST_REDIS_URL at a dedicated database.")
    if request.node.get_closest_marker("workflow"):
        for pattern in ("lock:*", "sem:*", "limit:*", f"{settings.CACHES['default']['KEY_PREFIX']}:*"):
            keys = list(client.scan_iter(pattern))
            if keys:
                client.delete(*keys)
    else:
        client.flushdb()
    yield
    client.close()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def make_role(db):
    """``make_role("mgr", fiches=("rw", "GROUP"), users=("r", "ALL"))``."""

    def _make(key: str, **grants: tuple[str, str]) -> Role:
        role = Role.objects.create(key=key, name=key.title())
        RolePermission.objects.bulk_create(
            RolePermission(
                role=role,
                permission_key=perm_key.replace("_", "-"),
                can_read="r" in flags,
                can_write="w" in flags,
                scope=Scope(scope),
            )
            for perm_key, (flags, scope) in grants.items()
        )
        return role

    return _make


@pytest.fixture
def make_user(db):
    counter = iter(range(1, 10_000))

    def _make(*roles: Role, email: str | None = None, password: str = PASSWORD, **fields) -> User:
        user = User.objects.create_user(email=email or f"user{next(counter)}@example.com", password=password, **fields)
        user.roles.set(roles)
        return user

    return _make


@pytest.fixture
def auth_client():
    """An APIClient authenticated as the given user with a real JWT access token."""

    def _client(user: User) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_tokens(user).access}")
        return client

    return _client


@pytest.fixture
def admin_user(make_role, make_user) -> User:
    role = make_role("admin", **{k.replace("-", "_"): ("rw", "ALL") for k in PERMISSION_KEYS})
    return make_user(role, email="admin@example.com")
