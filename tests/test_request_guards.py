"""``core/request_guards.py`` and the body errors of the exception handler.

Request bodies over ``API_MAX_BODY_BYTES`` are ``413 payload_too_large`` in the error envelope
(``details.max_bytes``) on every path: DRF's JSON, form and multipart parsers, the login, the Pusher
auth form, chat's SSE POST. A ``Content-Length`` over the limit is refused before the body is read
(checked on a live server with a body that never arrives); a chunked body is read up to the limit
(checked on the production server, gunicorn). Other bodies Django or DRF refused with a 500 — too
many form fields, JSON nested too deeply, a lone surrogate (``\\ud800``) in the login's email or quoted
by an error message — are 400s. A NUL character in the path (a 500 where a path segment reached
Postgres) is a 404."""

from __future__ import annotations

import http.client
import io
import json
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings as django_settings

from core.redis import get_redis

pytestmark = pytest.mark.django_db

BOUNDARY = "limit-test-boundary"


def padded_body(kind: str, size: int) -> tuple[bytes, str]:
    """A body of exactly ``size`` bytes carrying one unknown field (``padding``) and nothing else."""
    if kind == "json":
        shell, content_type = '{"padding": ""}', "application/json"
        return shell.replace('""', '"' + "x" * (size - len(shell)) + '"').encode(), content_type
    if kind == "form":
        shell, content_type = "padding=", "application/x-www-form-urlencoded"
        return (shell + "x" * (size - len(shell))).encode(), content_type
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="padding"\r\n\r\n'
    tail = f"\r\n--{BOUNDARY}--\r\n"
    body = head + "x" * (size - len(head) - len(tail)) + tail
    return body.encode(), f"multipart/form-data; boundary={BOUNDARY}"


def assert_payload_too_large(response_json: dict, limit: int) -> None:
    assert response_json == {
        "error": {
            "code": "payload_too_large",
            "message": f"The request body is larger than {limit} bytes.",
            "details": {"max_bytes": limit},
        }
    }


# The endpoints the issue names, each with the parser its clients use; ``auth``: sent with a token.
ENDPOINTS = [
    pytest.param("/api/auth/login", "json", False, id="login-json"),
    pytest.param("/api/auth/login", "form", False, id="login-form"),
    pytest.param("/api/realtime/pusher/auth", "form", True, id="pusher-auth-form"),
    pytest.param("/api/realtime/pusher/auth", "json", True, id="pusher-auth-json"),
    pytest.param("/api/fiches/F-1/chat", "json", True, id="chat-sse-post"),
    pytest.param("/api/audit-configs", "json", True, id="drf-json"),
    pytest.param("/api/audit-configs", "multipart", True, id="drf-multipart"),
]


@pytest.fixture
def client_for(admin_user, auth_client, api_client):
    return lambda auth: auth_client(admin_user) if auth else api_client


def test_the_limit_is_django_s_body_limit_and_1_mib_by_default():
    from config import settings as production_settings

    assert django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE == django_settings.API_MAX_BODY_BYTES
    assert production_settings.env.int("API_MAX_BODY_BYTES", default=1024 * 1024) == django_settings.API_MAX_BODY_BYTES


@pytest.mark.parametrize(("path", "kind", "auth"), ENDPOINTS)
def test_one_byte_over_the_limit_is_a_413_in_the_envelope(path, kind, auth, client_for):
    limit = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    client = client_for(auth)

    at_limit, content_type = padded_body(kind, limit)
    response = client.generic("POST", path, at_limit, content_type=content_type)
    assert response.status_code == 400, response.content  # read and validated: a required field is missing
    assert response.json()["error"]["code"] == "validation_error"

    over, content_type = padded_body(kind, limit + 1)
    response = client.generic("POST", path, over, content_type=content_type)
    assert response.status_code == 413, response.content
    assert_payload_too_large(response.json(), limit)


def test_outside_the_api_a_413_is_plain_text(api_client):
    body, content_type = padded_body("form", django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    response = api_client.generic("POST", "/admin/login/", body, content_type=content_type)
    assert response.status_code == 413
    assert response["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("kind", ["json", "form", "multipart"])
def test_without_the_middleware_the_exception_handler_still_answers_413(kind, admin_user, auth_client, settings):
    """Belt and braces: Django's own limit, raised while DRF reads the body, maps to the same 413."""
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != "core.request_guards.BodySizeLimitMiddleware"]
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    body, content_type = padded_body(kind, 3000)
    response = auth_client(admin_user).generic("POST", "/api/realtime/pusher/auth", body, content_type=content_type)
    assert response.status_code == 413, response.content
    assert_payload_too_large(response.json(), 2000)


# --- Chunked bodies (no Content-Length) -------------------------------------------------------------


def chunked(client, path: str, body: bytes, *, terminated: bool = True, content_type: str = "application/json"):
    """A request as gunicorn hands it over for ``Transfer-Encoding: chunked``: no CONTENT_LENGTH, the
    de-chunked body in ``wsgi.input``, and ``wsgi.input_terminated`` (the server knows where it ends)."""
    extra = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": io.BytesIO(body)}
    if terminated:
        extra["wsgi.input_terminated"] = True
    return client.generic("POST", path, b"", content_type=content_type, **extra)


def test_a_chunked_body_over_the_limit_is_a_413(api_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body, _ = padded_body("json", 1001)
    response = chunked(api_client, "/api/auth/refresh", body)
    assert response.status_code == 413, response.content
    assert_payload_too_large(response.json(), 1000)


def test_a_chunked_body_within_the_limit_is_read_as_a_body(api_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = chunked(api_client, "/api/auth/refresh", b'{"refresh": "not-a-token"}')
    assert response.status_code == 401, response.content  # the token was read (without it: 400, field missing)
    assert response.json()["error"]["code"] == "token_not_valid"

    form = chunked(
        api_client, "/api/auth/refresh", b"refresh=not-a-token", content_type="application/x-www-form-urlencoded"
    )
    assert form.status_code == 401, form.content


def test_a_chunked_body_a_server_cannot_delimit_is_not_read(api_client):
    """Django's runserver hands the chunked stream over raw: reading it could block, so it is left alone
    and Django sees no body, as before."""
    stream = io.BytesIO(b'{"refresh": "not-a-token"}')
    extra = {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": stream}
    response = api_client.generic("POST", "/api/auth/refresh", b"", content_type="application/json", **extra)
    assert response.status_code == 400 and "refresh" in response.json()["error"]["details"]
    assert stream.tell() == 0


# --- Other bodies that were 500s -------------------------------------------------------------------------


def test_too_many_form_fields_is_a_400(admin_user, auth_client):
    fields = "&".join(f"f{i}=1" for i in range(django_settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
    response = auth_client(admin_user).generic(
        "POST", "/api/realtime/pusher/auth", fields, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "too_many_fields"
    assert error["details"]["max_fields"] == django_settings.DATA_UPLOAD_MAX_NUMBER_FIELDS


def test_json_nested_too_deeply_is_a_400(api_client):
    response = api_client.generic("POST", "/api/auth/login", "[" * 100_000, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "parse_error"


def test_a_lone_surrogate_in_a_login_email_is_a_400_naming_the_field(api_client):
    """The email throttle reads the email before validation; its cache key could not be encoded (a 500)."""
    body = b'{"email": "agent\\ud800@example.com", "password": "x"}'
    response = api_client.generic("POST", "/api/auth/login", body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert "email" in response.json()["error"]["details"]


def test_the_login_email_throttle_keys_a_digest_not_the_email(api_client):
    email = "a" * 100_000 + "@example.com"
    api_client.post("/api/auth/login", {"email": email, "password": "x"}, format="json")
    keys = [key.decode() for key in get_redis().scan_iter("*throttle_login_email*")]
    assert len(keys) == 1 and len(keys[0]) < 120, keys


def test_an_error_quoting_a_lone_surrogate_is_rendered_escaped(admin_user, auth_client):
    """A ``ChoiceField`` quotes the invalid value; rendering ``\\ud800`` as UTF-8 failed (a 500)."""
    body = b'{"fiche_ids": ["F-1"], "priority": "\\ud800"}'
    response = auth_client(admin_user).generic(
        "POST", "/api/transcriptions/batch", body, content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["details"] == {"priority": ['"\\ud800" is not a valid choice.']}


def test_the_schema_documents_the_413_on_every_operation_with_a_body(api_client):
    schema = api_client.get("/api/schema/", {"format": "json"}).json()
    with_body = [
        (path, method, operation)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    ]
    assert len(with_body) > 20
    for path, method, operation in with_body:
        assert "413" in operation["responses"], (method, path)
    assert str(django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in with_body[0][2]["responses"]["413"]["description"]


# --- NUL characters ---------------------------------------------------------------------------------------

NUL_PATHS = [
    "/api/fiches/%00",
    "/api/fiches/a%00b/chat",
    "/api/recordings/%00",
    "/api/transcriptions/%00",
    "/api/transcriptions/%00/timeline",
    "/api/transcriptions/F-1/recordings/%00",
    "/api/automation/runs/%00",
]


@pytest.mark.parametrize("path", NUL_PATHS)
def test_a_nul_character_in_the_path_is_a_404(path, admin_user, auth_client):
    client = auth_client(admin_user)
    for response in (client.get(path), client.post(path, {"message": "?"}, format="json")):
        assert response.status_code == 404, (path, response.content)
        assert response.json()["error"]["code"] == "not_found"


def test_a_nul_character_in_the_query_is_the_serializer_s_400_naming_the_field(admin_user, auth_client):
    response = auth_client(admin_user).get("/api/audits?fiche_id=a%00b")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["details"] == {"fiche_id": ["Null characters are not allowed."]}


# --- Over real HTTP ----------------------------------------------------------------------------------------


def test_a_content_length_over_the_limit_is_refused_before_the_body_is_read(live_server):
    """Only the first bytes of the announced body are sent: a server that read the body would wait for
    the rest until the client's timeout; the 413 comes at once."""
    limit = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    url = urlsplit(live_server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.putrequest("POST", "/api/auth/login")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(limit + 1))
        connection.endheaders(b'{"email": "')
        response = connection.getresponse()
        assert response.status == 413
        assert response.getheader("Content-Type") == "application/json"
        assert_payload_too_large(json.loads(response.read()), limit)
    finally:
        connection.close()


@pytest.fixture(scope="module")
def gunicorn(django_db_setup, django_db_blocker):
    from tests.chat.conftest import Web
    from tests.workflow.conftest import worker_env

    with django_db_blocker.unblock():
        env = worker_env("http://127.0.0.1:9", API_MAX_BODY_BYTES="1000", LOG_LEVEL="WARNING")
        server = Web(env).start()
    yield server
    server.stop()


def test_on_gunicorn_a_chunked_body_is_read_up_to_the_limit(gunicorn):
    def chunks(body: bytes):
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    headers = {"Content-Type": "application/json"}
    over, _ = padded_body("json", 1001)
    response = httpx.post(f"{gunicorn.url}/api/auth/refresh", content=chunks(over), headers=headers, timeout=10)
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 413, response.text
    assert_payload_too_large(response.json(), 1000)

    within = b'{"refresh": "not-a-token"}'
    response = httpx.post(f"{gunicorn.url}/api/auth/refresh", content=chunks(within), headers=headers, timeout=10)
    assert response.status_code == 401, response.text  # read: without the body it would be 400
    assert response.json()["error"]["code"] == "token_not_valid"

    response = httpx.post(f"{gunicorn.url}/api/auth/refresh", content=over, headers=headers, timeout=10)
    assert response.status_code == 413, response.text  # with its Content-Length
