"""The admin API: roles with their grants, users with roles / groupes / crm_user_id."""

import pytest
from rest_framework.test import APIClient

from accounts.models import Role, RolePermission, User
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

ROLES, USERS = "/api/admin/roles", "/api/admin/users"
STRONG_PASSWORD = "violet-tractor-moonlight-42"


@pytest.fixture
def admin(admin_user, auth_client) -> APIClient:
    return auth_client(admin_user)


def _grants(role_key: str) -> set[tuple]:
    return set(
        RolePermission.objects.filter(role__key=role_key).values_list(
            "permission_key", "can_read", "can_write", "scope"
        )
    )


def _assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


# --- Roles -----------------------------------------------------------------------------------


def test_list_roles_is_paginated(admin, make_role):
    for i in range(3):
        make_role(f"role-{i}", fiches=("r", "SELF"))
    response = admin.get(ROLES, {"limit": 2})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 4  # the admin fixture's role + 3
    assert [r["key"] for r in body["results"]] == ["admin", "role-0"]
    assert body["next"] is not None and body["previous"] is None
    assert body["results"][1]["permission_grants"] == [
        {"key": "fiches", "can_read": True, "can_write": False, "scope": "SELF"}
    ]
    page2 = admin.get(body["next"]).json()
    assert [r["key"] for r in page2["results"]] == ["role-1", "role-2"]


def test_create_role_with_grants(admin):
    response = admin.post(
        ROLES,
        {
            "key": "team-lead",
            "name": "Team lead",
            "description": "Leads a team",
            "permission_grants": [
                {"key": "fiches", "can_read": True, "can_write": True, "scope": "GROUP"},
                {"key": "audit-configs", "can_read": True, "scope": "ALL"},
                {"key": "chat", "can_read": True},
            ],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["key"] == "team-lead" and body["name"] == "Team lead" and body["description"] == "Leads a team"
    assert _grants("team-lead") == {
        ("fiches", True, True, "GROUP"),
        ("audit-configs", True, False, "ALL"),
        ("chat", True, False, "ALL"),
    }
    assert {g["key"] for g in body["permission_grants"]} == {"fiches", "audit-configs", "chat"}


def test_create_role_with_legacy_permission_keys(admin):
    response = admin.post(
        ROLES,
        {"key": "legacy", "name": "Legacy", "permission_keys": ["fiches.read", "fiches.write", "audits.read"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert _grants("legacy") == {("fiches", True, True, "ALL"), ("audits", True, False, "ALL")}


def test_create_role_with_both_grant_forms_is_400(admin):
    response = admin.post(
        ROLES,
        {
            "key": "both",
            "name": "Both",
            "permission_keys": ["fiches.read"],
            "permission_grants": [{"key": "fiches", "can_read": True}],
        },
        format="json",
    )
    _assert_error(response, 400, "validation_error")
    assert not Role.objects.filter(key="both").exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"permission_grants": [{"key": "fichez", "can_read": True}]},
        {"permission_grants": [{"key": "fiches", "can_read": True, "scope": "WORLD"}]},
        {"permission_grants": [{"key": "fiches", "can_read": True}, {"key": "fiches", "can_write": True}]},
        {"permission_keys": ["foo.read"]},
        {"permission_keys": ["fiches.delete"]},
        {"permission_keys": ["fiches"]},
    ],
    ids=[
        "unknown-key",
        "unknown-scope",
        "duplicate-key",
        "legacy-unknown-key",
        "legacy-unknown-action",
        "legacy-no-action",
    ],
)
def test_create_role_with_invalid_grants_is_400(admin, payload):
    response = admin.post(ROLES, {"key": "bad", "name": "Bad", **payload}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] in ("validation_error", "invalid_input")
    assert not Role.objects.filter(key="bad").exists()


def test_create_role_with_taken_key_is_409(admin, make_role):
    make_role("manager", fiches=("r", "GROUP"))
    response = admin.post(ROLES, {"key": "manager", "name": "Another"}, format="json")
    _assert_error(response, 409, "role_key_taken")
    assert Role.objects.get(key="manager").name == "Manager"


def test_get_role(admin, make_role):
    role = make_role("viewer", fiches=("r", "ALL"))
    response = admin.get(f"{ROLES}/{role.pk}")
    assert response.status_code == 200
    assert response.json()["key"] == "viewer"
    assert response.json()["permission_grants"] == [
        {"key": "fiches", "can_read": True, "can_write": False, "scope": "ALL"}
    ]


def test_patch_role_replaces_grants(admin, make_role):
    role = make_role("viewer", fiches=("r", "ALL"), audits=("r", "ALL"))
    response = admin.patch(
        f"{ROLES}/{role.pk}",
        {"permission_grants": [{"key": "chat", "can_read": True, "can_write": True, "scope": "SELF"}]},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert _grants("viewer") == {("chat", True, True, "SELF")}
    assert response.json()["permission_grants"] == [
        {"key": "chat", "can_read": True, "can_write": True, "scope": "SELF"}
    ]


def test_patch_role_without_grants_keeps_them(admin, make_role):
    role = make_role("viewer", fiches=("r", "ALL"), audits=("r", "ALL"))
    response = admin.patch(f"{ROLES}/{role.pk}", {"name": "Read-only", "description": "d"}, format="json")
    assert response.status_code == 200, response.content
    role.refresh_from_db()
    assert (role.key, role.name, role.description) == ("viewer", "Read-only", "d")
    assert _grants("viewer") == {("fiches", True, False, "ALL"), ("audits", True, False, "ALL")}


def test_patch_role_with_empty_grants_clears_them(admin, make_role):
    role = make_role("viewer", fiches=("r", "ALL"))
    assert admin.patch(f"{ROLES}/{role.pk}", {"permission_grants": []}, format="json").status_code == 200
    assert _grants("viewer") == set()


def test_patch_role_key_to_a_taken_key_is_409(admin, make_role):
    make_role("manager")
    role = make_role("viewer", fiches=("r", "ALL"))
    _assert_error(admin.patch(f"{ROLES}/{role.pk}", {"key": "manager"}, format="json"), 409, "role_key_taken")
    role.refresh_from_db()
    assert role.key == "viewer"


def test_patch_role_grant_change_applies_to_holders_next_request(admin, make_role, make_user, auth_client):
    role = make_role("helpdesk", users=("r", "ALL"))
    holder = auth_client(make_user(role))
    assert holder.get(USERS).status_code == 200
    grants = [{"key": "fiches", "can_read": True, "can_write": False, "scope": "ALL"}]
    assert admin.patch(f"{ROLES}/{role.pk}", {"permission_grants": grants}, format="json").status_code == 200
    _assert_error(holder.get(USERS), 403, "permission_denied")


def test_patch_role_grant_defaults_like_create(admin, make_role):
    role = make_role("viewer", fiches=("r", "ALL"))
    response = admin.patch(
        f"{ROLES}/{role.pk}", {"permission_grants": [{"key": "audits", "can_read": True}]}, format="json"
    )
    assert response.status_code == 200, response.content
    assert _grants("viewer") == {("audits", True, False, "ALL")}


def test_delete_unassigned_role(admin, make_role):
    role = make_role("temp", fiches=("r", "ALL"))
    response = admin.delete(f"{ROLES}/{role.pk}")
    assert response.status_code == 204
    assert not Role.objects.filter(pk=role.pk).exists()
    assert not RolePermission.objects.filter(role_id=role.pk).exists()


def test_delete_assigned_role_is_409(admin, make_role, make_user):
    role = make_role("agent", fiches=("r", "SELF"))
    make_user(role)
    err = _assert_error(admin.delete(f"{ROLES}/{role.pk}"), 409, "role_in_use")
    assert err["details"]["assigned_users"] == 1
    assert Role.objects.filter(pk=role.pk).exists()


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_unknown_role_is_404(admin, method):
    response = getattr(admin, method)(f"{ROLES}/999999", {}, format="json")
    _assert_error(response, 404, "not_found")


# --- Users ----------------------------------------------------------------------------------


def test_create_user_then_log_in(admin, make_role, api_client):
    make_role("agent", fiches=("r", "SELF"))
    make_role("viewer", audits=("r", "ALL"))
    response = admin.post(
        USERS,
        {
            "email": "New.Agent@Example.com",
            "password": STRONG_PASSWORD,
            "first_name": "Julien",
            "crm_user_id": "u-417",
            "groupes": ["Lyon-2"],
            "roles": ["agent", "viewer"],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert "password" not in body
    assert body["email"] == "new.agent@example.com"
    assert body["crm_user_id"] == "u-417"
    assert body["groupes"] == ["Lyon-2"]
    assert body["roles"] == ["agent", "viewer"]
    assert body["is_active"] is True
    assert body["permissions"] == [
        {"key": "fiches", "read": True, "write": False, "scope": "SELF", "read_scope": "SELF", "write_scope": None},
        {"key": "audits", "read": True, "write": False, "scope": "ALL", "read_scope": "ALL", "write_scope": None},
    ]
    user = User.objects.get(email="new.agent@example.com")
    assert user.check_password(STRONG_PASSWORD)

    login = api_client.post(
        "/api/auth/login", {"email": "new.agent@example.com", "password": STRONG_PASSWORD}, format="json"
    )
    assert login.status_code == 200
    assert login.json()["user"]["id"] == user.pk


def test_create_user_with_weak_password_is_400(admin):
    response = admin.post(USERS, {"email": "weak@example.com", "password": "123"}, format="json")
    err = _assert_error(response, 400)
    assert "password" in err["details"]
    assert not User.objects.filter(email="weak@example.com").exists()


def test_create_user_with_unknown_role_is_400_and_creates_nothing(admin, make_role):
    make_role("agent")
    response = admin.post(
        USERS, {"email": "x@example.com", "password": STRONG_PASSWORD, "roles": ["agent", "ghost"]}, format="json"
    )
    err = _assert_error(response, 400)
    assert err["details"]["roles"] == ["ghost"]
    assert not User.objects.filter(email="x@example.com").exists()


def test_create_user_with_taken_email_is_409(admin, make_user):
    make_user(email="taken@example.com")
    response = admin.post(USERS, {"email": "TAKEN@example.com", "password": STRONG_PASSWORD}, format="json")
    _assert_error(response, 409)
    assert User.objects.filter(email__iexact="taken@example.com").count() == 1


def test_create_user_with_taken_crm_user_id_is_409(admin, make_user):
    make_user(email="first@example.com", crm_user_id="u-417")
    response = admin.post(
        USERS, {"email": "second@example.com", "password": STRONG_PASSWORD, "crm_user_id": "u-417"}, format="json"
    )
    _assert_error(response, 409)
    assert not User.objects.filter(email="second@example.com").exists()


def test_list_and_get_users(admin, admin_user, make_role, make_user):
    agent = make_user(make_role("agent", fiches=("r", "SELF")), email="agent@example.com", crm_user_id="u-417")
    response = admin.get(USERS)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [u["email"] for u in body["results"]] == ["admin@example.com", "agent@example.com"]
    assert body["results"][1]["roles"] == ["agent"]
    assert body["results"][1]["permissions"] == [
        {"key": "fiches", "read": True, "write": False, "scope": "SELF", "read_scope": "SELF", "write_scope": None}
    ]

    detail = admin.get(f"{USERS}/{agent.pk}")
    assert detail.status_code == 200
    assert detail.json()["email"] == "agent@example.com"
    assert detail.json()["crm_user_id"] == "u-417"
    _assert_error(admin.get(f"{USERS}/999999"), 404, "not_found")


def test_patch_user_roles_groupes_crm_user_id(admin, make_role, make_user):
    make_role("manager", fiches=("rw", "GROUP"))
    user = make_user(make_role("agent", fiches=("r", "SELF")), crm_user_id="u-417", groupes=["Lyon-2"])
    response = admin.patch(
        f"{USERS}/{user.pk}",
        {"roles": ["manager"], "groupes": ["Lyon-1", "Paris-Est"], "crm_user_id": "u-999"},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["roles"] == ["manager"]
    assert body["groupes"] == ["Lyon-1", "Paris-Est"]
    assert body["crm_user_id"] == "u-999"
    assert body["permissions"] == [
        {"key": "fiches", "read": True, "write": True, "scope": "GROUP", "read_scope": "GROUP", "write_scope": "GROUP"}
    ]
    user.refresh_from_db()
    assert list(user.roles.values_list("key", flat=True)) == ["manager"]
    assert user.groupes == ["Lyon-1", "Paris-Est"]
    assert user.crm_user_id == "u-999"


def test_patch_user_clear_crm_user_id(admin, make_user):
    user = make_user(crm_user_id="u-417")
    assert admin.patch(f"{USERS}/{user.pk}", {"crm_user_id": None}, format="json").status_code == 200
    user.refresh_from_db()
    assert user.crm_user_id is None


def test_patch_user_to_taken_crm_user_id_is_409(admin, make_user):
    make_user(crm_user_id="u-417")
    user = make_user(crm_user_id="u-418")
    _assert_error(admin.patch(f"{USERS}/{user.pk}", {"crm_user_id": "u-417"}, format="json"), 409)
    user.refresh_from_db()
    assert user.crm_user_id == "u-418"


def test_patch_user_with_unknown_role_is_400_and_changes_nothing(admin, make_role, make_user):
    user = make_user(make_role("agent"), groupes=["Lyon-2"])
    response = admin.patch(f"{USERS}/{user.pk}", {"roles": ["ghost"], "groupes": ["Lyon-1"]}, format="json")
    _assert_error(response, 400)
    user.refresh_from_db()
    assert user.groupes == ["Lyon-2"]
    assert list(user.roles.values_list("key", flat=True)) == ["agent"]


def test_patch_user_deactivate_revokes_existing_token(admin, make_role, make_user, auth_client):
    user = make_user(make_role("agent", fiches=("r", "SELF")))
    client = auth_client(user)
    assert client.get("/api/auth/me").status_code == 200

    response = admin.patch(f"{USERS}/{user.pk}", {"is_active": False}, format="json")

    assert response.status_code == 200
    assert response.json()["is_active"] is False
    assert response.json()["permissions"] == []
    assert client.get("/api/auth/me").status_code == 401


def test_patch_user_password(admin, make_user, api_client):
    user = make_user(email="pw@example.com")
    _assert_error(admin.patch(f"{USERS}/{user.pk}", {"password": "123"}, format="json"), 400)
    assert admin.patch(f"{USERS}/{user.pk}", {"password": STRONG_PASSWORD}, format="json").status_code == 200
    login = lambda pw: api_client.post("/api/auth/login", {"email": "pw@example.com", "password": pw}, format="json")  # noqa: E731
    assert login(PASSWORD).status_code == 401
    assert login(STRONG_PASSWORD).status_code == 200


# --- Permissions on the admin API ---------------------------------------------------------------


@pytest.fixture
def reader(make_role, make_user, auth_client) -> APIClient:
    return auth_client(make_user(make_role("auditor", users=("r", "ALL")), email="reader@example.com"))


def test_users_read_only_can_read_but_not_write(reader, make_role, make_user):
    role = make_role("agent", fiches=("r", "SELF"))
    target = make_user(email="target@example.com")

    assert reader.get(ROLES).status_code == 200
    assert reader.get(f"{ROLES}/{role.pk}").status_code == 200
    assert reader.get(USERS).status_code == 200
    assert reader.get(f"{USERS}/{target.pk}").status_code == 200

    writes = [
        reader.post(ROLES, {"key": "x", "name": "X"}, format="json"),
        reader.patch(f"{ROLES}/{role.pk}", {"name": "Hacked"}, format="json"),
        reader.delete(f"{ROLES}/{role.pk}"),
        reader.post(USERS, {"email": "x@example.com", "password": STRONG_PASSWORD}, format="json"),
        reader.patch(f"{USERS}/{target.pk}", {"is_active": False}, format="json"),
    ]
    for response in writes:
        err = _assert_error(response, 403, "permission_denied")
        assert err["details"]["required"] == "users.write"
    role.refresh_from_db()
    target.refresh_from_db()
    assert role.name == "Agent" and target.is_active
    assert not Role.objects.filter(key="x").exists()
    assert not User.objects.filter(email="x@example.com").exists()


def test_user_without_users_grant_is_403(make_role, make_user, auth_client):
    client = auth_client(make_user(make_role("viewer", fiches=("rw", "ALL"))))
    for url in (ROLES, USERS):
        err = _assert_error(client.get(url), 403, "permission_denied")
        assert err["details"]["required"] == "users.read"


@pytest.mark.parametrize("url", [ROLES, USERS, f"{ROLES}/1", f"{USERS}/1"])
def test_admin_api_without_token_is_401(api_client, url):
    _assert_error(api_client.get(url), 401, "not_authenticated")
    _assert_error(api_client.post(url, {}, format="json"), 401)
