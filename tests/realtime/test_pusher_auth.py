"""Pusher private-channel authorization: ``POST /api/realtime/pusher/auth``.

The signature is ``<key>:<hex HMAC-SHA256(secret, "<socket_id>:<channel_name>")>``; who may
subscribe follows the HTTP APIs' rules (job owner or fiches ALL, fiche in scope, automation.read,
any authenticated user for the global channel; an audit's channel: tests/audits/test_api.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, date, datetime
from urllib.parse import urlencode

import pytest

from fiches.services.cache import cache_fiche_sales_summaries
from realtime.publisher import pusher_client

from .conftest import make_job, sale

pytestmark = pytest.mark.django_db

URL = "/api/realtime/pusher/auth"
DOC_KEY, DOC_SECRET = "278d425bdf160c739803", "7ad3773142a6692b25b8"
SOCKET = "1234.1234"
DAY = date(2026, 3, 4)


@pytest.fixture(autouse=True)
def pusher_settings(settings):
    settings.PUSHER_APP_ID = "3"
    settings.PUSHER_KEY = DOC_KEY
    settings.PUSHER_SECRET = DOC_SECRET
    settings.PUSHER_CLUSTER = ""
    settings.PUSHER_HOST = ""
    settings.PUSHER_PORT = None
    settings.PUSHER_USE_TLS = True


def expected_auth(channel: str, socket_id: str = SOCKET) -> str:
    digest = hmac.new(DOC_SECRET.encode(), f"{socket_id}:{channel}".encode(), hashlib.sha256).hexdigest()
    return f"{DOC_KEY}:{digest}"


def post_form(client, channel: str, socket_id: str = SOCKET):
    return client.post(
        URL,
        data=urlencode({"socket_id": socket_id, "channel_name": channel}),
        content_type="application/x-www-form-urlencoded",
    )


def post_json(client, channel: str, socket_id: str = SOCKET):
    return client.post(URL, data={"socket_id": socket_id, "channel_name": channel}, format="json")


def assert_allowed(response, channel: str, socket_id: str = SOCKET) -> None:
    assert response.status_code == 200, response.content
    assert response.json() == {"auth": expected_auth(channel, socket_id)}
    assert response.content == json.dumps({"auth": expected_auth(channel, socket_id)}, separators=(",", ":")).encode()


def assert_denied(response) -> None:
    assert response.status_code == 403, response.content
    assert response.json()["error"]["code"] == "permission_denied"
    assert "auth" not in response.json()


# --- Users and data -----------------------------------------------------------------------------------


@pytest.fixture
def plain(make_user):
    return make_user(email="plain@example.com")


@pytest.fixture
def all_reader(make_role, make_user):
    return make_user(make_role("all-reader", fiches=("r", "ALL")), email="all@example.com")


@pytest.fixture
def lyon(make_role, make_user):
    return make_user(make_role("lyon", fiches=("r", "GROUP")), email="lyon@example.com", groupes=["Lyon-2"])


@pytest.fixture
def lyon_colleague(make_role, make_user):
    return make_user(make_role("lyon-b", fiches=("r", "GROUP")), email="lyon-b@example.com", groupes=["Lyon-2"])


@pytest.fixture
def self_user(make_role, make_user):
    return make_user(
        make_role("self", fiches=("r", "SELF")), email="self@example.com", crm_user_id="u-417", groupes=["Lyon-2"]
    )


@pytest.fixture
def no_fiches(make_role, make_user):
    return make_user(
        make_role("no-fiches", recordings=("r", "ALL"), automation=("r", "ALL")),
        email="nofiches@example.com",
        groupes=["Lyon-2"],
        crm_user_id="u-417",
    )


@pytest.fixture
def fiches_cached():
    cache_fiche_sales_summaries(
        [
            sale("F-LYON", DAY, groupe="Lyon-2", crm_user_id="u-417"),
            sale("F-PARIS", DAY, groupe="Paris-Est", crm_user_id="u-999"),
        ],
        revalidated_at=datetime(2026, 3, 5, tzinfo=UTC),
    )


# --- The signature --------------------------------------------------------------------------------------


def test_the_pusher_documentation_example():
    assert pusher_client().authenticate(channel="private-foobar", socket_id="1234.1234") == {
        "auth": "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    }
    assert expected_auth("private-foobar") == (
        "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    )


@pytest.mark.parametrize("post", [post_form, post_json])
def test_the_endpoint_signs_the_global_channel_form_or_json(post, plain, auth_client):
    assert_allowed(post(auth_client(plain), "private-global"), "private-global")
    assert_allowed(post(auth_client(plain), "private-global", "98765.4321"), "private-global", "98765.4321")


def test_the_signature_depends_on_the_secret(plain, auth_client, settings):
    settings.PUSHER_SECRET = "another-secret"
    response = post_form(auth_client(plain), "private-global")
    assert response.status_code == 200
    assert response.json()["auth"] != expected_auth("private-global")
    assert response.json()["auth"].startswith(f"{DOC_KEY}:")


def test_anonymous_is_401(api_client):
    response = post_form(api_client, "private-global")
    assert response.status_code == 401
    assert "auth" not in response.json()


# --- Job channels ----------------------------------------------------------------------------------------


def test_job_channel_owner_and_all_scope_yes_others_no(lyon, lyon_colleague, all_reader, plain, auth_client):
    job = make_job(lyon)
    channel = f"private-job-{job.id}"
    assert_allowed(post_form(auth_client(lyon), channel), channel)
    assert_allowed(post_json(auth_client(all_reader), channel), channel)
    assert_denied(post_form(auth_client(lyon_colleague), channel))
    assert_denied(post_form(auth_client(plain), channel))


def test_job_channel_needs_fiches_read_like_the_job_api(lyon, auth_client):
    job = make_job(lyon)
    lyon.roles.set([])  # fiches.read revoked
    assert auth_client(lyon).get(f"/api/fiches/jobs/{job.id}").status_code == 403  # the HTTP API says no
    assert_denied(post_form(auth_client(lyon), f"private-job-{job.id}"))


def test_unknown_or_malformed_job_channel_is_403(all_reader, auth_client):
    assert_denied(post_form(auth_client(all_reader), f"private-job-{uuid.uuid4()}"))
    assert_denied(post_form(auth_client(all_reader), "private-job-not-a-uuid"))


# --- Fiche channels --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fiches_cached")
def test_fiche_channel_follows_the_fiches_scope(all_reader, lyon, self_user, auth_client):
    for fiche in ("F-LYON", "F-PARIS"):
        assert_allowed(post_form(auth_client(all_reader), f"private-fiche-{fiche}"), f"private-fiche-{fiche}")
    assert_allowed(post_form(auth_client(lyon), "private-fiche-F-LYON"), "private-fiche-F-LYON")
    assert_denied(post_form(auth_client(lyon), "private-fiche-F-PARIS"))
    assert_allowed(post_json(auth_client(self_user), "private-fiche-F-LYON"), "private-fiche-F-LYON")
    assert_denied(post_json(auth_client(self_user), "private-fiche-F-PARIS"))


@pytest.mark.usefixtures("fiches_cached")
def test_fiche_channel_needs_fiches_read(no_fiches, plain, auth_client):
    assert_denied(post_form(auth_client(no_fiches), "private-fiche-F-LYON"))
    assert_denied(post_form(auth_client(plain), "private-fiche-F-LYON"))


@pytest.mark.usefixtures("fiches_cached")
def test_uncached_fiche_channel_is_403_even_for_all_scope(all_reader, auth_client):
    assert_denied(post_form(auth_client(all_reader), "private-fiche-F-UNKNOWN"))


# --- Audit, automation and unknown channels ------------------------------------------------------------------


def test_an_audit_channel_of_no_audit_is_denied(admin_user, auth_client):
    assert_denied(post_form(auth_client(admin_user), "private-audit-A1"))
    assert_denied(post_form(auth_client(admin_user), "private-audit-5b1729ee-d708-4b5e-b363-4a2fc5623fc6"))


def test_automation_run_channel_needs_automation_read(make_role, make_user, all_reader, auth_client):
    automation = make_user(make_role("automation-reader", automation=("r", "SELF")), email="auto@example.com")
    channel = "private-job-automation-run-run-42"
    assert_allowed(post_form(auth_client(automation), channel), channel)
    assert_denied(post_form(auth_client(all_reader), channel))  # fiches ALL is not automation.read


@pytest.mark.usefixtures("fiches_cached")
def test_transcription_channel_follows_the_transcriptions_scope(make_role, make_user, all_reader, auth_client):
    lyon_tx = make_user(
        make_role("lyon-tx", transcriptions=("r", "GROUP")), email="lyon-tx@example.com", groupes=["Lyon-2"]
    )
    assert_allowed(post_form(auth_client(lyon_tx), "private-transcription-F-LYON"), "private-transcription-F-LYON")
    assert_denied(post_form(auth_client(lyon_tx), "private-transcription-F-PARIS"))
    assert_denied(post_form(auth_client(lyon_tx), "private-transcription-F-UNKNOWN"))
    assert_denied(post_form(auth_client(all_reader), "private-transcription-F-LYON"))  # fiches ALL is not enough


def test_a_user_channel_is_its_users_only(plain, all_reader, admin_user, auth_client):
    own = f"private-user-{plain.pk}"
    assert_allowed(post_form(auth_client(plain), own), own)
    assert_denied(post_form(auth_client(all_reader), own))
    assert_denied(post_form(auth_client(admin_user), own))  # not even an admin: it is one person's
    assert_denied(post_form(auth_client(plain), f"private-user-{plain.pk}0"))


@pytest.mark.parametrize(
    "channel", ["private-foo", "private-foo-1", "private-globals", "private-encrypted-x", "private-fiches-1"]
)
def test_unknown_private_channels_are_403(channel, admin_user, auth_client):
    assert_denied(post_form(auth_client(admin_user), channel))


# --- Malformed input and configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "socket_id", ["abc", "1234", "1234.", ".1234", "1234.1234:private-global", "12a4.1234", "1.2.3", ""]
)
def test_malformed_socket_id_is_400(socket_id, plain, auth_client):
    response = post_form(auth_client(plain), "private-global", socket_id)
    assert response.status_code == 400, response.content
    assert "auth" not in response.json()


@pytest.mark.parametrize(
    "channel",
    [
        "private-a:b",
        "private-" + "a" * 192,
        "private-" + "a" * 193,
        "private-a b",
        "presence-room",
        "public-channel",
        "private-fiche-é",
        "",
    ],
)
def test_malformed_channel_is_400(channel, plain, auth_client):
    response = post_form(auth_client(plain), channel)
    assert response.status_code == 400, response.content
    assert "auth" not in response.json()


def test_a_200_character_channel_is_400(plain, auth_client):
    channel = "private-job-" + "1" * 188
    assert len(channel) == 200
    response = post_json(auth_client(plain), channel)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"


def test_missing_fields_are_400(plain, auth_client):
    response = auth_client(plain).post(URL, data={"socket_id": SOCKET}, format="json")
    assert response.status_code == 400


@pytest.mark.parametrize("missing", ["PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET"])
def test_pusher_not_configured_is_503(missing, plain, auth_client, settings):
    setattr(settings, missing, "")
    response = post_form(auth_client(plain), "private-global")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "realtime_disabled"
