"""Foundation: Celery settings, health, request ids, OpenAPI, error envelope, production settings, logs."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command

from config.exceptions import api_exception_handler

REPO = Path(__file__).resolve().parent.parent
CLOSED_PORT_URL = "redis://127.0.0.1:1/15"


# --- Celery ---------------------------------------------------------------------------------


def test_celery_reliability_settings():
    from config.celery import app

    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert conf.task_soft_time_limit < conf.task_time_limit
    assert conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]
    assert {q.name for q in conf.task_queues} == {"default", "crm", "webhooks", "stt_high", "stt", "stt_low", "llm"}
    assert conf.task_default_queue == "default"
    assert conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"


# --- Health ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_health_ok(api_client):
    response = api_client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok", "broker": "ok"}}


@pytest.mark.django_db
def test_health_redis_down(api_client, settings):
    settings.REDIS_URL = CLOSED_PORT_URL
    response = api_client.get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["checks"]["redis"] == "unavailable"
    assert body["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_health_broker_down(api_client, settings):
    settings.CELERY_BROKER_URL = CLOSED_PORT_URL
    response = api_client.get("/api/health")
    assert response.status_code == 503
    assert response.json() == {
        "status": "error",
        "checks": {"database": "ok", "redis": "ok", "broker": "unavailable"},
    }


# --- Request id -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_request_id_generated_and_echoed(api_client):
    generated = api_client.get("/api/health")["X-Request-ID"]
    assert generated and len(generated) >= 16
    assert api_client.get("/api/health")["X-Request-ID"] != generated

    echoed = api_client.get("/api/health", HTTP_X_REQUEST_ID="abc-123.req_1")
    assert echoed["X-Request-ID"] == "abc-123.req_1"


@pytest.mark.django_db
def test_unsafe_request_id_is_replaced(api_client):
    for unsafe in ("bad id with spaces", "x" * 65, "inj\\r\\nSet-Cookie:1"):
        got = api_client.get("/api/health", HTTP_X_REQUEST_ID=unsafe)["X-Request-ID"]
        assert got != unsafe and got.isalnum()


# --- OpenAPI ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_openapi_schema(api_client):
    response = api_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert {"/api/auth/login", "/api/auth/me", "/api/admin/roles", "/api/health"} <= set(schema["paths"])
    login_responses = schema["paths"]["/api/auth/login"]["post"]["responses"]
    assert {"200", "400", "401", "429"} <= set(login_responses)


def test_openapi_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "s.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    assert "/api/auth/login" in target.read_text()


@pytest.mark.django_db
def test_swagger_ui(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"swagger" in response.content.lower()


# --- Error envelope -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_unknown_api_path_is_404_envelope(client):
    response = client.get("/api/does-not-exist")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_unhandled_exception_is_500_envelope():
    response = api_exception_handler(RuntimeError("secret internals"), {})
    assert response.status_code == 500
    assert response.data == {
        "error": {"code": "internal_error", "message": "An unexpected error occurred.", "details": {}}
    }
    assert "secret internals" not in json.dumps(response.data)


# --- Production settings and logging (subprocesses) -----------------------------------------------


def _run_django(code: str, **env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SECRET_KEY", "ALLOWED_HOSTS", "DEBUG"))}
    env.pop("JWT_SIGNING_KEY", None)
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


SETUP = "import django; django.setup()"


def test_production_refuses_missing_secret_key():
    result = _run_django(SETUP, DEBUG="false", SECRET_KEY=None, ALLOWED_HOSTS="example.com")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert "ImproperlyConfigured" in result.stderr


@pytest.mark.parametrize(
    "secret_key",
    ["django-insecure-xyz" + "a" * 40, "django-insecure-local-development-key-do-not-use-in-production", "short-key"],
)
def test_production_refuses_insecure_secret_key(secret_key):
    result = _run_django(SETUP, DEBUG="false", SECRET_KEY=secret_key, ALLOWED_HOSTS="example.com")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_wildcard_allowed_hosts():
    result = _run_django(SETUP, DEBUG="false", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="*")
    assert result.returncode != 0
    assert "ALLOWED_HOSTS" in result.stderr


def test_production_starts_with_secure_settings():
    code = SETUP + "; from django.conf import settings; print(settings.DEBUG, settings.ALLOWED_HOSTS)"
    result = _run_django(code, DEBUG="false", SECRET_KEY=secrets.token_urlsafe(50)[:50], ALLOWED_HOSTS="example.com")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False ['example.com']"


def test_json_log_format():
    code = SETUP + ('; import logging; logging.getLogger("x").warning("hello", extra={"job_id": "j1"})')
    result = _run_django(code, LOG_FORMAT="json", LOG_LEVEL="INFO")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    entry = json.loads(lines[0])
    assert entry["message"] == "hello"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "x"
    assert entry["request_id"] == "-"
    assert entry["job_id"] == "j1"


def test_invalid_log_format_is_refused():
    result = _run_django(SETUP, LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT" in result.stderr
