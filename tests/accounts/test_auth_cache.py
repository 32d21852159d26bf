"""The auth cache: a request authenticates without querying users or grants once the cache holds
the user; any change to the user, a role, its grants or role assignments applies on the next
request; with Redis down, authentication reads the database."""

from __future__ import annotations

import socket

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Role, RolePermission

pytestmark = pytest.mark.django_db

ROLES = "/api/admin/roles"


def auth_queries(client, url: str = ROLES) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as ctx:
        status = client.get(url).status_code
    tables = [q["sql"] for q in ctx.captured_queries if '"users"' in q["sql"] or '"role_permissions"' in q["sql"]]
    return status, tables


@pytest.fixture
def admin_reader(make_role, make_user):
    return make_user(make_role("user-admin", users=("r", "ALL")), email="ua@example.com")


def test_a_cached_user_authenticates_without_user_or_grant_queries(make_role, make_user, auth_client):
    client = auth_client(make_user(make_role("jobs-reader", fiches=("r", "ALL"))))
    status, first = auth_queries(client, "/api/fiches/jobs")
    assert status == 200 and first  # the first request reads the user and their grants
    status, second = auth_queries(client, "/api/fiches/jobs")
    assert status == 200
    assert second == []


@pytest.mark.parametrize("change", ["remove_role", "grant_update", "grant_delete", "deactivate", "role_delete"])
def test_every_kind_of_change_applies_on_the_next_request(change, admin_reader, auth_client):
    client = auth_client(admin_reader)
    assert client.get(ROLES).status_code == 200
    assert client.get(ROLES).status_code == 200  # served from the cache
    role = Role.objects.get(key="user-admin")
    if change == "remove_role":
        admin_reader.roles.remove(role)
    elif change == "grant_update":
        RolePermission.objects.filter(role=role).update(can_read=False)  # a bulk update, no signal
    elif change == "grant_delete":
        role.permissions.all().delete()
    elif change == "deactivate":
        admin_reader.is_active = False
        admin_reader.save()
    elif change == "role_delete":
        admin_reader.roles.clear()
        role.delete()
    expected = 401 if change == "deactivate" else 403
    assert client.get(ROLES).status_code == expected


def test_a_grant_change_through_the_api_applies_to_other_users_at_once(make_role, make_user, auth_client, admin_user):
    role = make_role("viewer", fiches=("r", "ALL"))
    user = make_user(role, email="v@example.com")
    client = auth_client(user)
    assert client.get("/api/fiches/jobs").status_code == 200
    response = auth_client(admin_user).patch(f"/api/admin/roles/{role.pk}", {"permission_grants": []}, format="json")
    assert response.status_code == 200
    assert client.get("/api/fiches/jobs").status_code == 403


def test_with_redis_down_authentication_reads_the_database(admin_reader, auth_client, settings):
    client = auth_client(admin_reader)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{dead}/0"
    status, queries = auth_queries(client)
    assert status == 200 and queries
    admin_reader.roles.clear()  # the version bump fails (logged); the database is the truth
    assert client.get(ROLES).status_code == 403
