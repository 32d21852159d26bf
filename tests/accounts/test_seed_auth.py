"""``manage.py seed_auth``: default roles and grants, the seeded admin, demo users; idempotent."""

import re
from io import StringIO

import pytest
from django.core.management import call_command

from accounts.grants import PERMISSION_KEYS
from accounts.models import Role, RolePermission, User

pytestmark = pytest.mark.django_db

RW, R = (True, True), (True, False)

EXPECTED = {
    "admin": {key: (*RW, "ALL") for key in PERMISSION_KEYS},
    "manager": {
        "fiches": (*RW, "GROUP"),
        "recordings": (*RW, "GROUP"),
        "transcriptions": (*RW, "GROUP"),
        "audits": (*RW, "GROUP"),
        "automation": (*RW, "GROUP"),
        "audit-configs": (*R, "ALL"),
        "products": (*R, "ALL"),
        "chat": (*RW, "GROUP"),
    },
    "agent": {k: (*R, "SELF") for k in ("fiches", "recordings", "audits", "chat")},
    "viewer": {k: (*R, "ALL") for k in ("fiches", "audits")},
}


def _seed(*args) -> str:
    out = StringIO()
    call_command("seed_auth", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _state() -> dict:
    return {
        role.key: {p.permission_key: (p.can_read, p.can_write, p.scope) for p in role.permissions.all()}
        for role in Role.objects.prefetch_related("permissions")
    }


def _login(client, email, password):
    return client.post("/api/auth/login", {"email": email, "password": password}, format="json")


def test_seed_creates_default_roles_and_is_idempotent():
    _seed()
    assert _state() == EXPECTED
    counts = (Role.objects.count(), RolePermission.objects.count(), User.objects.count())
    assert counts == (4, 9 + 8 + 4 + 2, 0)

    _seed()
    assert _state() == EXPECTED
    assert (Role.objects.count(), RolePermission.objects.count(), User.objects.count()) == counts


def test_seed_admin_from_settings(settings, api_client):
    settings.AUTH_SEED_ADMIN_EMAIL = " Ops@Example.com "
    settings.AUTH_SEED_ADMIN_PASSWORD = "first-admin-password-2026"
    _seed()

    admin = User.objects.get(email="ops@example.com")
    assert admin.is_superuser and admin.is_staff and admin.is_active
    assert list(admin.roles.values_list("key", flat=True)) == ["admin"]
    response = _login(api_client, "ops@example.com", "first-admin-password-2026")
    assert response.status_code == 200
    assert response.json()["user"]["roles"] == ["admin"]
    assert len(response.json()["user"]["permissions"]) == len(PERMISSION_KEYS)

    settings.AUTH_SEED_ADMIN_PASSWORD = "a-different-password-2026"
    _seed()
    admin.refresh_from_db()
    assert admin.check_password("first-admin-password-2026")
    assert not admin.check_password("a-different-password-2026")
    assert User.objects.count() == 1
    assert admin.roles.count() == 1


def test_seed_admin_without_password_creates_no_user(settings):
    settings.AUTH_SEED_ADMIN_EMAIL = "ops@example.com"
    settings.AUTH_SEED_ADMIN_PASSWORD = ""
    _seed()
    assert not User.objects.exists()
    assert Role.objects.count() == 4


def test_operator_changes_survive_rerun_until_reset_roles():
    _seed()
    manager = Role.objects.get(key="manager")
    RolePermission.objects.filter(role=manager, permission_key="fiches").update(scope="ALL", can_write=False)
    RolePermission.objects.filter(role=manager, permission_key="chat").delete()
    RolePermission.objects.create(role=manager, permission_key="users", can_read=True, scope="ALL")

    _seed()
    state = _state()["manager"]
    assert state["fiches"] == (True, False, "ALL")  # the operator's change is kept
    assert state["users"] == (True, False, "ALL")  # as is the operator's extra grant
    assert state["chat"] == (True, True, "GROUP")  # a missing default grant is re-created

    _seed("--reset-roles")
    assert _state() == EXPECTED


def test_reset_roles_leaves_custom_roles_alone(make_role):
    make_role("custom", users=("rw", "ALL"))
    _seed("--reset-roles")
    assert _state()["custom"] == {"users": (True, True, "ALL")}
    assert Role.objects.count() == 5


def test_seed_demo_users(api_client):
    out = _seed("--demo")
    match = re.search(r"password for all: (\S+?)\)", out)
    assert match, out
    password = match.group(1)

    users = {u.email: u for u in User.objects.prefetch_related("roles")}
    assert set(users) == {
        "admin@demo.example",
        "manager@demo.example",
        "agent@demo.example",
        "viewer@demo.example",
    }
    for email, user in users.items():
        assert [r.key for r in user.roles.all()] == [email.split("@")[0]]
        assert _login(api_client, email, password).status_code == 200, email

    agent, manager = users["agent@demo.example"], users["manager@demo.example"]
    assert agent.crm_user_id == "u-417"
    assert agent.groupes == ["Lyon-2"]
    assert manager.groupes == ["Lyon-2"]
    assert users["admin@demo.example"].is_superuser
    assert not agent.is_staff

    claims = _login(api_client, "agent@demo.example", password).json()["user"]
    assert claims["permissions"][0] == {
        "key": "fiches",
        "read": True,
        "write": False,
        "scope": "SELF",
        "read_scope": "SELF",
        "write_scope": None,
    }

    before = {e: (u.pk, u.password) for e, u in users.items()}
    _seed("--demo")
    after = {u.email: (u.pk, u.password) for u in User.objects.all()}
    assert after == before
    assert sum(u.roles.count() for u in User.objects.all()) == 4
    assert _state() == EXPECTED
