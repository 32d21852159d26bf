"""Spending is bounded per user on the audits API: ``POST /api/audits/run`` (AUDIT_USER_RATE), step
and control-point reruns (RERUN_USER_RATE) and ``POST /api/audits/batch`` (BATCH_USER_RATE, counted
in fiches) answer 429 with Retry-After in the error envelope once the user's budget is spent, before
any side effect (no audit row, no CRM call, no task); requests refused for their input, scope or
state do not count; Redis down is a 503."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from audits.models import Audit, AuditConfig, AuditStepResult, ControlPointResult, RerunEvent
from batches.models import Batch
from fiches.models import FicheCache
from tests.audits.conftest import cached_fiches

pytestmark = pytest.mark.django_db

RUN = "/api/audits/run"
T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.LLM_API_KEY = "sk-test"
    settings.CRM_BASE_URL = "http://127.0.0.1:9"  # nothing listens: a CRM call would be a 503


@pytest.fixture
def fiches() -> dict[str, FicheCache]:
    return cached_fiches(
        ("F-LYON", "Lyon-2"),
        ("F-LYON-B", "Lyon-2"),
        ("F-LYON-C", "Lyon-2"),
        ("F-LYON-D", "Lyon-2"),
        ("F-PARIS", "Paris-Est"),
    )


@pytest.fixture
def lyon(make_role, make_user):
    return make_user(make_role("lyon", audits=("rw", "GROUP")), email="lyon@example.com", groupes=["Lyon-2"])


@pytest.fixture
def other_lyon(make_role, make_user):
    return make_user(make_role("lyon-2", audits=("rw", "GROUP")), email="lyon2@example.com", groupes=["Lyon-2"])


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, str]]:
    """Task messages the requests sent (``delay`` recorded instead of reaching a broker)."""
    calls: list[tuple[str, str]] = []
    for path in ("audits.tasks.audit_run", "audits.tasks.audit_step_rerun", "batches.tasks.batch_start"):
        monkeypatch.setattr(f"{path}.delay", lambda arg, _path=path: calls.append((_path.rsplit(".", 1)[1], arg)))
    return calls


def assert_throttled(response, code: str) -> int:
    assert response.status_code == 429, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    retry_after = int(response["Retry-After"])
    assert retry_after >= 1 and body["error"]["details"]["retry_after"] == retry_after
    return retry_after


def test_audit_runs_are_limited_per_user_and_refused_requests_do_not_count(
    config, fiches, lyon, other_lyon, auth_client, settings, sent, django_capture_on_commit_callbacks
):
    settings.AUDIT_USER_RATE, settings.AUDIT_USER_BURST = "1/h", 2
    client = auth_client(lyon)
    for _ in range(3):  # refused: unknown config (400), fiche outside the scope (403), config inactive (409)
        assert client.post(RUN, {"fiche_id": "F-LYON", "audit_config_id": 999}, format="json").status_code == 400
        assert client.post(RUN, {"fiche_id": "F-PARIS", "audit_config_id": config.pk}, format="json").status_code == 403
        assert client.post(RUN, {"fiche_id": "F-LYON"}, format="json").status_code == 400
    assert not Audit.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(RUN, {"fiche_id": "F-LYON", "audit_config_id": config.pk}, format="json")
        second = client.post(RUN, {"fiche_id": "F-LYON-B", "audit_config_id": config.pk}, format="json")
    assert (first.status_code, second.status_code) == (202, 202)

    with django_capture_on_commit_callbacks(execute=True):
        third = client.post(RUN, {"fiche_id": "F-LYON", "audit_config_id": config.pk, "use_rlm": True}, format="json")
        uncached = client.post(RUN, {"fiche_id": "F-NEW", "audit_config_id": config.pk}, format="json")
    assert 3590 <= assert_throttled(third, "audit_requests_throttled") <= 3600
    assert_throttled(uncached, "audit_requests_throttled")  # checked before the CRM fetch (which would be a 503)
    assert Audit.objects.count() == 2
    assert sent == [("audit_run", first.json()["audit_id"]), ("audit_run", second.json()["audit_id"])]

    other = auth_client(other_lyon).post(RUN, {"fiche_id": "F-LYON", "audit_config_id": config.pk}, format="json")
    assert other.status_code == 202  # another user's budget (and the same audit, still pending)
    assert other.json() == {"audit_id": first.json()["audit_id"], "status": "pending", "reused": True}


def test_a_request_that_reuses_a_running_audit_still_counts(config, fiches, lyon, auth_client, settings, sent):
    settings.AUDIT_USER_RATE, settings.AUDIT_USER_BURST = "1/h", 2
    client = auth_client(lyon)
    payload = {"fiche_id": "F-LYON", "audit_config_id": config.pk}
    assert [client.post(RUN, payload, format="json").json()["reused"] for _ in range(2)] == [False, True]
    assert_throttled(client.post(RUN, payload, format="json"), "audit_requests_throttled")


def test_with_redis_down_an_audit_run_is_refused_with_a_503(config, fiches, lyon, auth_client, settings, sent):
    client = auth_client(lyon)
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens
    response = client.post(RUN, {"fiche_id": "F-LYON", "audit_config_id": config.pk}, format="json")
    assert response.status_code == 503 and response.json()["error"]["code"] == "rate_limiter_unavailable"
    assert not Audit.objects.exists() and sent == []


def completed_audit(fiche: FicheCache, config: AuditConfig) -> Audit:
    audit = Audit.objects.create(
        fiche=fiche, config=config, config_version=config.current_version, status="completed", completed_at=T0
    )
    for step in config.current_version.steps.all():
        row = AuditStepResult.objects.create(audit=audit, step=step, position=step.position, status="completed")
        for point in step.control_points.all():
            ControlPointResult.objects.create(step_result=row, index=point.index, ai_status="pass", status="pass")
    return audit


def test_reruns_are_limited_per_user_and_refused_reruns_do_not_count(
    config, fiches, lyon, auth_client, settings, sent, django_capture_on_commit_callbacks
):
    settings.RERUN_USER_RATE, settings.RERUN_USER_BURST = "1/h", 2
    audit = completed_audit(fiches["F-LYON"], config)
    running = Audit.objects.create(
        fiche=fiches["F-LYON-B"], config=config, config_version=config.current_version, status="running"
    )
    paris = completed_audit(fiches["F-PARIS"], config)
    client = auth_client(lyon)
    base = f"/api/audits/{audit.pk}/steps"
    for _ in range(3):  # refused: unknown step / point (404), audit not completed (409), out of scope (403)
        assert client.post(f"{base}/42/rerun").status_code == 404
        assert client.post(f"{base}/1/control-points/99/rerun").status_code == 404
        assert client.post(f"/api/audits/{running.pk}/steps/1/rerun").status_code == 409
        assert client.post(f"/api/audits/{paris.pk}/steps/1/rerun").status_code == 403
        assert client.post(f"{base}/1/rerun", {"instructions": "x" * 4001}, format="json").status_code == 400

    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(f"{base}/1/rerun")
        assert client.post(f"{base}/1/rerun").status_code == 409  # the same step again: refused, not counted
        second = client.post(f"{base}/2/control-points/0/rerun")
        third = client.post(f"{base}/3/rerun")
        point = client.post(f"{base}/4/control-points/0/rerun")
    assert (first.status_code, second.status_code) == (202, 202)
    assert_throttled(third, "rerun_requests_throttled")
    assert_throttled(point, "rerun_requests_throttled")
    assert RerunEvent.objects.count() == 2
    assert [name for name, _ in sent] == ["audit_step_rerun", "audit_step_rerun"]


def test_audit_batches_count_their_fiches_against_the_batch_budget(
    config, fiches, lyon, auth_client, settings, sent, django_capture_on_commit_callbacks
):
    settings.BATCH_USER_RATE, settings.BATCH_USER_BURST = "1/h", 3
    settings.AUDIT_BATCH_MAX = 10
    client = auth_client(lyon)
    url = "/api/audits/batch"
    refused = [
        client.post(url, {"fiche_ids": ["F-LYON", "F-PARIS"]}, format="json"),  # 403: out of scope
        client.post(url, {"fiche_ids": ["F-LYON"], "audit_config_id": 999}, format="json"),  # 400: unknown config
        client.post(url, {"fiche_ids": []}, format="json"),  # 400
    ]
    assert [r.status_code for r in refused] == [403, 400, 400]
    too_large = client.post(url, {"fiche_ids": ["F-LYON", "F-LYON-B", "F-LYON-C", "F-LYON-D"]}, format="json")
    assert too_large.status_code == 400 and too_large.json()["error"]["code"] == "batch_request_too_large", (
        too_large.content
    )
    assert too_large.json()["error"]["details"] == {"cost": 4, "burst": 3}

    with django_capture_on_commit_callbacks(execute=True):
        # Duplicates count once: two fiches.
        first = client.post(url, {"fiche_ids": ["F-LYON", "F-LYON-B", "F-LYON"]}, format="json")
        second = client.post(url, {"fiche_ids": ["F-LYON", "F-LYON-B"]}, format="json")
        third = client.post(url, {"fiche_ids": ["F-LYON"]}, format="json")
    assert first.status_code == 202
    assert 3590 <= assert_throttled(second, "batch_requests_throttled") <= 3600  # 2 more do not fit: wait an hour
    assert third.status_code == 202  # the third unit of the burst
    assert Batch.objects.count() == 2
    assert [name for name, _ in sent] == ["batch_start", "batch_start"]
