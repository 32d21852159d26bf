"""Login, refresh, me, token validity and login throttling."""

from datetime import timedelta

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN, REFRESH, ME = "/api/auth/login", "/api/auth/refresh", "/api/auth/me"


@pytest.fixture
def agent(make_role, make_user):
    role = make_role("agent", fiches=("r", "SELF"), recordings=("r", "SELF"))
    return make_user(role, email="agent@example.com", crm_user_id="u-417", groupes=["Lyon-2"])


def _bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _assert_error(response, status: int, code: str | None = None):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


# --- Login ---------------------------------------------------------------------------------


def test_login_returns_tokens_user_and_claims(api_client, agent, make_role):
    agent.roles.add(make_role("manager", fiches=("rw", "GROUP")))

    response = api_client.post(LOGIN, {"email": "Agent@Example.com", "password": PASSWORD}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) >= {"access", "refresh", "user"}
    assert body["user"]["email"] == "agent@example.com"
    assert body["user"]["roles"] == ["agent", "manager"]
    assert body["user"]["last_login"] is not None

    claims = AccessToken(body["access"])
    assert claims["user_id"] in (agent.pk, str(agent.pk))
    assert claims["email"] == "agent@example.com"
    assert claims["crm_user_id"] == "u-417"
    assert claims["groupes"] == ["Lyon-2"]
    assert claims["roles"] == ["agent", "manager"]
    assert claims["permissions"] == [
        {"key": "fiches", "read": True, "write": True, "scope": "GROUP", "read_scope": "GROUP", "write_scope": "GROUP"},
        {"key": "recordings", "read": True, "write": False, "scope": "SELF", "read_scope": "SELF", "write_scope": None},
    ]
    assert body["user"]["permissions"] == claims["permissions"]
    assert RefreshToken(body["refresh"])["user_id"] in (agent.pk, str(agent.pk))


@pytest.mark.parametrize(
    "email, password",
    [
        ("agent@example.com", "wrong-password"),
        ("nobody@example.com", PASSWORD),
    ],
    ids=["wrong-password", "unknown-email"],
)
def test_login_bad_credentials_is_401(api_client, agent, email, password):
    response = api_client.post(LOGIN, {"email": email, "password": password}, format="json")
    err = _assert_error(response, 401, "invalid_credentials")
    assert "access" not in response.json()
    assert err["message"]


def test_login_inactive_user_is_401(api_client, agent):
    agent.is_active = False
    agent.save()
    response = api_client.post(LOGIN, {"email": "agent@example.com", "password": PASSWORD}, format="json")
    _assert_error(response, 401, "invalid_credentials")


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"email": "agent@example.com"}, "password"),
        ({"password": PASSWORD}, "email"),
        ({"email": "not-an-email", "password": "x"}, "email"),
    ],
)
def test_login_invalid_input_is_400_envelope(api_client, agent, payload, field):
    response = api_client.post(LOGIN, payload, format="json")
    err = _assert_error(response, 400, "validation_error")
    assert field in err["details"]


# --- Refresh -------------------------------------------------------------------------------


def test_refresh_issues_access_with_current_claims(api_client, agent, make_role):
    login = api_client.post(LOGIN, {"email": "agent@example.com", "password": PASSWORD}, format="json").json()
    assert [p["key"] for p in AccessToken(login["access"])["permissions"]] == ["fiches", "recordings"]

    agent.roles.set([make_role("viewer", audits=("r", "ALL"))])
    agent.groupes = ["Lyon-1", "Paris-Est"]
    agent.save()

    response = api_client.post(REFRESH, {"refresh": login["refresh"]}, format="json")

    assert response.status_code == 200, response.content
    claims = AccessToken(response.json()["access"])
    assert claims["roles"] == ["viewer"]
    assert claims["groupes"] == ["Lyon-1", "Paris-Est"]
    assert claims["permissions"] == [
        {"key": "audits", "read": True, "write": False, "scope": "ALL", "read_scope": "ALL", "write_scope": None}
    ]
    # The new access token works.
    assert _bearer(response.json()["access"]).get(ME).json()["roles"] == ["viewer"]


def test_refresh_with_garbage_token_is_401(api_client, agent):
    _assert_error(api_client.post(REFRESH, {"refresh": "garbage"}, format="json"), 401, "token_not_valid")


def test_refresh_without_token_is_400(api_client):
    err = _assert_error(api_client.post(REFRESH, {}, format="json"), 400, "validation_error")
    assert "refresh" in err["details"]


def test_refresh_rejects_an_access_token(api_client, agent):
    login = api_client.post(LOGIN, {"email": "agent@example.com", "password": PASSWORD}, format="json").json()
    response = api_client.post(REFRESH, {"refresh": login["access"]}, format="json")
    _assert_error(response, 401, "token_not_valid")


def test_refresh_of_deactivated_user_is_401(api_client, agent):
    login = api_client.post(LOGIN, {"email": "agent@example.com", "password": PASSWORD}, format="json").json()
    agent.is_active = False
    agent.save()
    response = api_client.post(REFRESH, {"refresh": login["refresh"]}, format="json")
    _assert_error(response, 401)
    assert "access" not in response.json()


def test_refresh_of_deleted_user_is_401(api_client, agent):
    refresh = str(RefreshToken.for_user(agent))
    agent.delete()
    _assert_error(api_client.post(REFRESH, {"refresh": refresh}, format="json"), 401)


# --- Me and token validity ------------------------------------------------------------------


def test_me_returns_roles_and_effective_permissions(agent, auth_client, make_role):
    agent.roles.add(make_role("viewer", fiches=("r", "ALL"), audits=("r", "ALL")))
    response = auth_client(agent).get(ME)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == agent.pk
    assert body["email"] == "agent@example.com"
    assert body["crm_user_id"] == "u-417"
    assert body["groupes"] == ["Lyon-2"]
    assert body["roles"] == ["agent", "viewer"]
    assert body["permissions"] == [
        {"key": "fiches", "read": True, "write": False, "scope": "ALL", "read_scope": "ALL", "write_scope": None},
        {"key": "recordings", "read": True, "write": False, "scope": "SELF", "read_scope": "SELF", "write_scope": None},
        {"key": "audits", "read": True, "write": False, "scope": "ALL", "read_scope": "ALL", "write_scope": None},
    ]
    assert "password" not in body


def test_me_without_token_is_401(api_client):
    response = api_client.get(ME)
    _assert_error(response, 401, "not_authenticated")
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


def test_me_with_garbage_token_is_401(agent):
    _assert_error(_bearer("not.a.jwt").get(ME), 401, "token_not_valid")


def test_me_with_token_signed_by_another_key_is_401(agent):
    import jwt

    forged = jwt.encode(
        {"user_id": agent.pk, "token_type": "access", "exp": 4102444800, "jti": "x"},
        "another-signing-key-of-sufficient-length-0123456789",
        "HS256",
    )
    _assert_error(_bearer(forged).get(ME), 401, "token_not_valid")


def test_me_with_expired_token_is_401(agent):
    token = AccessToken.for_user(agent)
    token.set_exp(lifetime=-timedelta(seconds=1))
    _assert_error(_bearer(str(token)).get(ME), 401, "token_not_valid")


def test_deactivated_user_with_valid_token_is_401(agent, auth_client):
    client = auth_client(agent)
    assert client.get(ME).status_code == 200
    agent.is_active = False
    agent.save()
    _assert_error(client.get(ME), 401)


def test_role_change_applies_on_next_request(make_role, make_user, auth_client):
    role = make_role("user-admin", users=("r", "ALL"), fiches=("r", "ALL"))
    user = make_user(role)
    client = auth_client(user)
    assert client.get("/api/admin/roles").status_code == 200

    user.roles.remove(role)

    response = client.get("/api/admin/roles")
    err = _assert_error(response, 403, "permission_denied")
    assert err["details"]["required"] == "users.read"
    # The (unchanged) token still claims the grant: authorization did not trust it.
    token = client._credentials["HTTP_AUTHORIZATION"].split()[1]
    assert {
        "key": "users",
        "read": True,
        "write": False,
        "scope": "ALL",
        "read_scope": "ALL",
        "write_scope": None,
    } in AccessToken(token)["permissions"]
    assert client.get(ME).json()["permissions"] == []


def test_grant_change_on_role_applies_on_next_request(make_role, make_user, auth_client):
    role = make_role("user-admin", users=("r", "ALL"))
    user = make_user(role)
    client = auth_client(user)
    assert client.get("/api/admin/roles").status_code == 200
    role.permissions.filter(permission_key="users").update(can_read=False)
    _assert_error(client.get("/api/admin/roles"), 403, "permission_denied")


# --- Throttling ----------------------------------------------------------------------------


def _login(client, email, password="wrong-password", **extra):
    return client.post(LOGIN, {"email": email, "password": password}, format="json", **extra)


def test_login_email_throttle(api_client, agent, settings):
    assert settings.LOGIN_THROTTLE_EMAIL_RATE == "5/min"
    for _ in range(5):
        _assert_error(_login(api_client, "agent@example.com"), 401, "invalid_credentials")

    # The sixth attempt is throttled, even with the right password (and another spelling of the email).
    response = _login(api_client, " AGENT@example.com", PASSWORD)
    err = _assert_error(response, 429, "throttled")
    retry_after = response.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) > 0
    assert isinstance(err["details"]["retry_after"], int) and err["details"]["retry_after"] > 0
    assert int(retry_after) <= 60

    # Another email from the same IP is still allowed.
    other = _login(api_client, "someone-else@example.com")
    _assert_error(other, 401, "invalid_credentials")


def test_login_ip_throttle(api_client, agent, settings):
    assert settings.LOGIN_THROTTLE_IP_RATE == "30/min"
    for i in range(30):
        response = _login(api_client, f"user{i}@example.com", REMOTE_ADDR="10.0.0.9")
        assert response.status_code == 401, (i, response.content)

    response = _login(api_client, "agent@example.com", PASSWORD, REMOTE_ADDR="10.0.0.9")
    _assert_error(response, 429, "throttled")
    assert int(response.headers["Retry-After"]) > 0

    # Another IP is not affected.
    response = _login(api_client, "agent@example.com", PASSWORD, REMOTE_ADDR="10.0.0.10")
    assert response.status_code == 200


def test_login_ip_throttle_cannot_be_bypassed_with_x_forwarded_for(api_client, agent):
    for i in range(30):
        _login(api_client, f"user{i}@example.com", REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")
    response = _login(api_client, "user99@example.com", REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR="192.0.2.200")
    assert response.status_code == 429
