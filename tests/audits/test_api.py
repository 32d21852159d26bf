"""The audits API without a worker: audit configs (versions on every content change, audits keep
theirs, validation naming the field, soft delete), grants, the run request (dispatch after commit,
the LLM key missing, scope), audits read back (shape, citations verified and rejected, filters,
pagination, scope), and the ``private-audit-{id}`` channel authorizer."""

from __future__ import annotations

import copy
import hashlib
import hmac
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from audits.models import (
    Audit,
    AuditConfig,
    AuditConfigVersion,
    AuditStepDefinition,
    AuditStepResult,
    Citation,
    ControlPointResult,
)
from audits.services import configs
from fiches.models import FicheCache

pytestmark = pytest.mark.django_db

CONFIGS = "/api/audit-configs"
AUDITS = "/api/audits"
RUN = "/api/audits/run"
PUSHER_AUTH = "/api/realtime/pusher/auth"
PUSHER_KEY, PUSHER_SECRET = "278d425bdf160c739803", "7ad3773142a6692b25b8"
SOCKET = "123.456"
T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)

CONFIG_KEYS = {"id", "version", "name", "description", "is_active", "thresholds", "steps", "created_at", "updated_at"}
SUMMARY_KEYS = {
    "audit_id",
    "fiche_id",
    "audit_config_id",
    "config_version",
    "status",
    "use_rlm",
    "model",
    "overall_score",
    "max_score",
    "score_percentage",
    "niveau",
    "is_compliant",
    "critical_issues",
    "needs_review",
    "total_tokens",
    "duration_seconds",
    "error",
    "created_at",
    "completed_at",
    "purpose",
    "evaluation_id",
    "predecessor_id",
    "pinned",
    "counts",
}


def config_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": "Vente à distance",
        "description": "Mentions obligatoires.",
        "thresholds": {"excellent": 90, "bon": 75, "acceptable": 60},
        "steps": [
            {
                "name": "Présentation",
                "instructions": "L'agent se présente.",
                "weight": 15,
                "is_critical": True,
                "pass_ratio": 1.0,
                "control_points": [
                    {"question": "L'agent donne-t-il son nom ?", "evidence_hint": "je m'appelle", "is_critical": True},
                    {"question": "L'agent donne-t-il son numéro ORIAS ?"},
                ],
            },
            {
                "name": "Rétractation",
                "weight": 10,
                "control_points": [{"question": "Le délai de quatorze jours est-il annoncé ?"}],
            },
        ],
    }
    payload.update(overrides)
    return payload


def error_of(response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]


# --- Fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.LLM_API_KEY = "sk-test-key"
    settings.LLM_MODEL = "judge-1"
    settings.CRM_BASE_URL = "http://127.0.0.1:9"  # nothing listens: no test may need the CRM


@pytest.fixture
def fiches() -> dict[str, FicheCache]:
    """Cached fiches with their details fetched (so no CRM call): two in Lyon-2 (agents u-417 and
    u-500), one in Paris-Est (u-9)."""
    rows = [("F-LYON", "Lyon-2", "u-417"), ("F-LYON-B", "Lyon-2", "u-500"), ("F-PARIS", "Paris-Est", "u-9")]
    return {
        fiche_id: FicheCache.objects.create(
            fiche_id=fiche_id,
            sales_date=date(2026, 2, 2),
            groupe=groupe,
            crm_user_id=crm_user_id,
            details_success=True,
            details_fetched_at=T0,
            last_revalidated_at=T0,
        )
        for fiche_id, groupe, crm_user_id in rows
    }


@pytest.fixture
def config_admin(make_role, make_user):
    return make_user(make_role("cfg-admin", audit_configs=("rw", "ALL")), email="cfg-admin@example.com")


@pytest.fixture
def config_reader(make_role, make_user):
    return make_user(make_role("cfg-reader", audit_configs=("r", "ALL")), email="cfg-reader@example.com")


@pytest.fixture
def auditor(make_role, make_user):
    return make_user(make_role("auditor", audits=("rw", "ALL")), email="auditor@example.com")


@pytest.fixture
def lyon_auditor(make_role, make_user):
    return make_user(make_role("lyon-auditor", audits=("rw", "GROUP")), email="lyon@example.com", groupes=["Lyon-2"])


@pytest.fixture
def self_auditor(make_role, make_user):
    return make_user(
        make_role("self-auditor", audits=("rw", "SELF")),
        email="self@example.com",
        groupes=["Lyon-2"],
        crm_user_id="u-417",
    )


@pytest.fixture
def fiches_reader(make_role, make_user):
    """Everything on fiches and transcriptions, nothing on audits."""
    return make_user(
        make_role("fiches-reader", fiches=("r", "ALL"), transcriptions=("rw", "ALL"), audit_configs=("rw", "ALL")),
        email="fiches@example.com",
        groupes=["Lyon-2"],
    )


@pytest.fixture
def config() -> AuditConfig:
    return configs.config_create(data=config_payload())


@pytest.fixture
def dispatched(monkeypatch) -> list[str]:
    """The audit ids the orchestrator task ``audits.tasks.audit_run`` was asked to run: a stand-in
    task records its ``delay`` calls (no broker involved)."""
    calls: list[str] = []

    class RecordingTask:
        name = "audits.tasks.audit_run"

        @staticmethod
        def delay(audit_id: str) -> None:
            calls.append(audit_id)

    monkeypatch.setattr("audits.tasks.audit_run", RecordingTask)
    return calls


def make_audit(fiche: FicheCache, config: AuditConfig, *, created_at: datetime | None = None, **fields) -> Audit:
    audit = Audit.objects.create(fiche=fiche, config=config, config_version=config.current_version, **fields)
    if created_at is not None:
        Audit.objects.filter(pk=audit.pk).update(created_at=created_at)
        audit.refresh_from_db()
    return audit


def step_definitions(config_or_version) -> list[AuditStepDefinition]:
    version = getattr(config_or_version, "current_version", config_or_version)
    return list(AuditStepDefinition.objects.filter(config_version=version).order_by("position"))


# --- Audit configs: create, read ------------------------------------------------------------------------------


def test_create_makes_version_1_with_ordered_steps_and_control_points(config_admin, auth_client):
    client = auth_client(config_admin)
    response = client.post(CONFIGS, config_payload(), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == CONFIG_KEYS
    assert (body["version"], body["name"], body["description"], body["is_active"]) == (
        1,
        "Vente à distance",
        "Mentions obligatoires.",
        True,
    )
    assert body["thresholds"] == {"excellent": 90, "bon": 75, "acceptable": 60}
    assert body["steps"] == [
        {
            "position": 1,
            "name": "Présentation",
            "instructions": "L'agent se présente.",
            "weight": 15,
            "is_critical": True,
            "pass_ratio": 1.0,
            "control_points": [
                {
                    "index": 0,
                    "question": "L'agent donne-t-il son nom ?",
                    "evidence_hint": "je m'appelle",
                    "is_critical": True,
                    "conditional": False,
                    "speaker": "agent",
                },
                {
                    "index": 1,
                    "question": "L'agent donne-t-il son numéro ORIAS ?",
                    "evidence_hint": "",
                    "is_critical": False,
                    "conditional": False,
                    "speaker": "agent",
                },
            ],
        },
        {  # the defaults filled in
            "position": 2,
            "name": "Rétractation",
            "instructions": "",
            "weight": 10,
            "is_critical": False,
            "pass_ratio": 1.0,
            "control_points": [
                {
                    "index": 0,
                    "question": "Le délai de quatorze jours est-il annoncé ?",
                    "evidence_hint": "",
                    "is_critical": False,
                    "conditional": False,
                    "speaker": "agent",
                }
            ],
        },
    ]
    config = AuditConfig.objects.get(pk=body["id"])
    assert config.current_version is not None and config.current_version.version == 1
    assert config.versions.count() == 1

    assert client.get(f"{CONFIGS}/{body['id']}").json() == body
    listing = client.get(CONFIGS).json()
    assert (listing["count"], listing["results"]) == (1, [body])


def test_create_fills_the_default_thresholds_and_may_start_inactive(config_admin, auth_client):
    payload = config_payload(is_active=False)
    del payload["thresholds"]
    response = auth_client(config_admin).post(CONFIGS, payload, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["thresholds"] == {"excellent": 90, "bon": 75, "acceptable": 60}
    assert response.json()["is_active"] is False


def test_an_unknown_config_is_404(config_admin, auth_client):
    client = auth_client(config_admin)
    for method in ("get", "patch", "delete"):
        response = getattr(client, method)(f"{CONFIGS}/999999", {"name": "x"}, format="json")
        assert response.status_code == 404, (method, response.content)
        assert error_of(response)["code"] == "audit_config_not_found"


def test_the_list_is_paginated_and_includes_inactive_configs(config_admin, auth_client):
    for name in ("C", "A", "B"):
        configs.config_create(data=config_payload(name=name, is_active=name != "B"))
    client = auth_client(config_admin)
    everything = client.get(CONFIGS).json()
    assert [(c["name"], c["is_active"]) for c in everything["results"]] == [("A", True), ("B", False), ("C", True)]
    page = client.get(CONFIGS, {"limit": 1, "offset": 1}).json()
    assert page["count"] == 3 and [c["name"] for c in page["results"]] == ["B"]
    assert page["next"] and page["previous"]


# --- Audit configs: versions -------------------------------------------------------------------------------------


def test_a_content_change_makes_version_2_and_audits_keep_version_1(config, fiches, config_admin, auditor, auth_client):
    v1 = config.current_version
    v1_steps = step_definitions(v1)
    audit = make_audit(fiches["F-LYON"], config)
    for definition in v1_steps:
        AuditStepResult.objects.create(audit=audit, step=definition, position=definition.position)

    steps = copy.deepcopy(config_payload()["steps"])
    steps[0]["name"] = "Présentation et ORIAS"
    steps[0]["control_points"].append({"question": "L'agent dit-il qu'il est courtier ?"})
    steps.append({"name": "Conclusion", "weight": 5, "control_points": [{"question": "Récapitule-t-il ?"}]})
    response = auth_client(config_admin).patch(f"{CONFIGS}/{config.pk}", {"steps": steps}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == config.pk and body["version"] == 2
    assert [s["name"] for s in body["steps"]] == ["Présentation et ORIAS", "Rétractation", "Conclusion"]
    assert [s["position"] for s in body["steps"]] == [1, 2, 3]
    assert [p["index"] for p in body["steps"][0]["control_points"]] == [0, 1, 2]
    assert body["name"] == "Vente à distance"  # untouched content carried over
    assert list(config.versions.order_by("version").values_list("version", flat=True)) == [1, 2]
    # version 1 is immutable and the audit still points to it
    assert [s.name for s in step_definitions(v1)] == ["Présentation", "Rétractation"]
    audit.refresh_from_db()
    assert audit.config_version_id == v1.pk

    detail = auth_client(auditor).get(f"{AUDITS}/{audit.pk}").json()
    assert (detail["audit_config_id"], detail["config_version"]) == (config.pk, 1)
    assert [(s["position"], s["name"], s["weight"]) for s in detail["steps"]] == [
        (1, "Présentation", 15),
        (2, "Rétractation", 10),
    ]

    renamed = auth_client(config_admin).patch(f"{CONFIGS}/{config.pk}", {"name": "Vente v3"}, format="json").json()
    assert (renamed["version"], renamed["name"], len(renamed["steps"])) == (3, "Vente v3", 3)
    assert AuditConfig.objects.get(pk=config.pk).name == "Vente v3"


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param({}, id="empty"),
        pytest.param({"name": "Vente à distance"}, id="same-name"),
        pytest.param({"thresholds": {"excellent": 90.0, "bon": 75.0, "acceptable": 60.0}}, id="same-thresholds"),
        pytest.param(
            {k: v for k, v in config_payload().items() if k != "thresholds"}, id="same-content-defaults-omitted"
        ),
        pytest.param(config_payload(), id="same-content"),
    ],
)
def test_a_patch_without_a_content_change_makes_no_version(patch, config, config_admin, auth_client):
    response = auth_client(config_admin).patch(f"{CONFIGS}/{config.pk}", patch, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["version"] == 1
    assert AuditConfigVersion.objects.filter(config=config).count() == 1


def test_deactivating_is_not_a_new_version(config, config_admin, auth_client):
    client = auth_client(config_admin)
    off = client.patch(f"{CONFIGS}/{config.pk}", {"is_active": False}, format="json").json()
    assert (off["version"], off["is_active"]) == (1, False)
    both = client.patch(f"{CONFIGS}/{config.pk}", {"is_active": True, "description": "v2"}, format="json").json()
    assert (both["version"], both["is_active"], both["description"]) == (2, True, "v2")


# --- Audit configs: delete ---------------------------------------------------------------------------------------


def test_deleting_an_unused_config_removes_it(config, config_admin, auth_client):
    client = auth_client(config_admin)
    response = client.delete(f"{CONFIGS}/{config.pk}")
    assert response.status_code == 204
    assert not AuditConfig.objects.filter(pk=config.pk).exists()
    assert not AuditConfigVersion.objects.filter(config_id=config.pk).exists()
    assert client.get(f"{CONFIGS}/{config.pk}").status_code == 404


def test_deleting_a_config_audits_use_deactivates_it_and_runs_are_refused(
    config, fiches, config_admin, auditor, auth_client, dispatched, django_capture_on_commit_callbacks
):
    make_audit(fiches["F-PARIS"], config)
    response = auth_client(config_admin).delete(f"{CONFIGS}/{config.pk}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == CONFIG_KEYS and (body["id"], body["is_active"], body["version"]) == (config.pk, False, 1)
    assert AuditConfig.objects.filter(pk=config.pk, is_active=False).exists()
    assert auth_client(config_admin).get(f"{CONFIGS}/{config.pk}").json()["is_active"] is False

    with django_capture_on_commit_callbacks(execute=True):
        run = auth_client(auditor).post(RUN, {"fiche_id": "F-LYON", "audit_config_id": config.pk}, format="json")
    assert run.status_code == 409, run.content
    error = error_of(run)
    assert error["code"] == "audit_config_inactive" and error["details"] == {"audit_config_id": config.pk}
    assert Audit.objects.count() == 1 and dispatched == []


# --- Audit configs: validation -------------------------------------------------------------------------------------


def _without_steps(p):
    del p["steps"]


def _set(path: str, value: Any):
    """A mutation setting ``steps.0.weight``-like paths of the payload."""

    def mutate(p):
        *parents, last = path.split(".")
        target = p
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[int(last) if last.isdigit() else last] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "location"),
    [
        pytest.param(_set("steps", []), ["steps"], id="no-steps"),
        pytest.param(_without_steps, ["steps"], id="steps-missing"),
        pytest.param(_set("name", ""), ["name"], id="blank-name"),
        pytest.param(_set("steps.1.weight", 0), ["steps", "1", "weight"], id="weight-0"),
        pytest.param(_set("steps.0.weight", -5), ["steps", "0", "weight"], id="weight-negative"),
        pytest.param(_set("steps.0.pass_ratio", 1.5), ["steps", "0", "pass_ratio"], id="pass-ratio-above-1"),
        pytest.param(_set("steps.1.control_points", []), ["steps", "1", "control_points"], id="no-control-points"),
        pytest.param(
            _set("steps.0.control_points.1.question", ""),
            ["steps", "0", "control_points", "1", "question"],
            id="empty-question",
        ),
        pytest.param(
            _set("steps.0.control_points.0.question", "   "),
            ["steps", "0", "control_points", "0", "question"],
            id="blank-question",
        ),
        pytest.param(
            _set("thresholds", {"excellent": 70, "bon": 75, "acceptable": 60}), ["thresholds"], id="thresholds-up"
        ),
        pytest.param(
            _set("thresholds", {"excellent": 90, "bon": 60, "acceptable": 60}), ["thresholds"], id="thresholds-equal"
        ),
        pytest.param(
            _set("thresholds", {"excellent": 120, "bon": 75, "acceptable": 60}),
            ["thresholds", "excellent"],
            id="threshold-above-100",
        ),
    ],
)
def test_invalid_configs_are_400_naming_the_field(mutate, location, config_admin, auth_client):
    payload = config_payload()
    mutate(payload)
    response = auth_client(config_admin).post(CONFIGS, payload, format="json")
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "validation_error"
    node: Any = error["details"]
    for key in location:  # the error sits at the field's path
        node = node[key]
    assert node, error
    assert location[0] in error["message"]
    assert not AuditConfig.objects.exists()


def test_unknown_fields_are_ignored(config_admin, auth_client):
    """The serializers do not reject unknown fields: they are dropped."""
    payload = config_payload(colour="red")
    payload["steps"][0]["score"] = 99
    response = auth_client(config_admin).post(CONFIGS, payload, format="json")
    assert response.status_code == 201, response.content
    assert "colour" not in response.json() and "score" not in response.json()["steps"][0]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"steps": []}, "steps"),
        ({"thresholds": {"excellent": 70, "bon": 75, "acceptable": 60}}, "thresholds"),
        ({"steps": [{"name": "S", "weight": 0, "control_points": [{"question": "Q ?"}]}]}, "steps"),
        ({"steps": [{"name": "S", "weight": 3, "control_points": []}]}, "steps"),
        ({"steps": [{"name": "S", "weight": 3, "control_points": [{"question": ""}]}]}, "steps"),
    ],
)
def test_an_invalid_patch_is_400_and_makes_no_version(patch, field, config, config_admin, auth_client):
    response = auth_client(config_admin).patch(f"{CONFIGS}/{config.pk}", patch, format="json")
    assert response.status_code == 400, response.content
    assert field in error_of(response)["details"] or field in error_of(response)["message"]
    assert AuditConfigVersion.objects.filter(config=config).count() == 1


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param({"thresholds": {"excellent": 95}}, id="partial-thresholds"),
        pytest.param({"steps": [{"name": "S", "control_points": [{"question": "Q ?"}]}]}, id="step-without-weight"),
        pytest.param({"steps": [{"name": "S", "weight": 3}]}, id="step-without-control-points"),
    ],
)
def test_a_patch_with_incomplete_nested_objects_is_400(patch, config, config_admin, auth_client):
    response = auth_client(config_admin).patch(f"{CONFIGS}/{config.pk}", patch, format="json")
    assert response.status_code == 400, response.status_code
    assert AuditConfigVersion.objects.filter(config=config).count() == 1


# --- Audit configs: grants ------------------------------------------------------------------------------------------


def test_config_routes_need_a_token(config, api_client):
    for method, url in (
        ("get", CONFIGS),
        ("post", CONFIGS),
        ("get", f"{CONFIGS}/{config.pk}"),
        ("patch", f"{CONFIGS}/{config.pk}"),
        ("delete", f"{CONFIGS}/{config.pk}"),
    ):
        response = getattr(api_client, method)(url, {}, format="json")
        assert response.status_code == 401, (method, url)
        assert error_of(response)["code"] == "not_authenticated"


def test_config_routes_need_the_audit_configs_grant(config, auditor, config_reader, auth_client):
    """audits.* is not audit-configs.*; audit-configs.read is not audit-configs.write."""
    routes = [
        ("get", CONFIGS, "read"),
        ("post", CONFIGS, "write"),
        ("get", f"{CONFIGS}/{config.pk}", "read"),
        ("patch", f"{CONFIGS}/{config.pk}", "write"),
        ("delete", f"{CONFIGS}/{config.pk}", "write"),
    ]
    for method, url, action in routes:
        response = getattr(auth_client(auditor), method)(url, config_payload(), format="json")
        assert response.status_code == 403, (method, url)
        error = error_of(response)
        assert error["code"] == "permission_denied" and error["details"] == {"required": f"audit-configs.{action}"}

        response = getattr(auth_client(config_reader), method)(url, config_payload(name="Changed"), format="json")
        if action == "read":
            assert response.status_code == 200, (method, url)
        else:
            assert response.status_code == 403, (method, url)
            assert error_of(response)["details"] == {"required": "audit-configs.write"}
    config.refresh_from_db()
    assert (config.name, config.is_active, config.current_version.version) == ("Vente à distance", True, 1)
    assert AuditConfig.objects.count() == 1


# --- The run request -----------------------------------------------------------------------------------------------


def test_a_run_creates_a_pending_audit_and_dispatches_its_orchestrator_once_after_commit(
    config, fiches, auditor, auth_client, dispatched, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = auth_client(auditor).post(RUN, {"fiche_id": "F-PARIS", "audit_config_id": config.pk}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert set(body) == {"audit_id", "status", "reused"} and (body["status"], body["reused"]) == ("pending", False)
    assert dispatched == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert dispatched == [body["audit_id"]]

    audit = Audit.objects.get(pk=body["audit_id"])
    assert (audit.fiche.fiche_id, audit.config_id, audit.config_version_id) == (
        "F-PARIS",
        config.pk,
        config.current_version_id,
    )
    assert (audit.status, audit.tools_mode, audit.model, audit.requested_by_id) == (
        "pending",
        False,
        "judge-1",
        auditor.pk,
    )

    shown = auth_client(auditor).get(f"{AUDITS}/{audit.pk}").json()
    assert (shown["status"], shown["steps"], shown["niveau"], shown["completed_at"]) == ("pending", [], None, None)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, False),
        ({"use_rlm": True}, True),
        ({"useRlm": True}, True),
        ({"useRlm": "true"}, True),
        ({"use_rlm": False, "useRlm": True}, False),  # the canonical name wins
    ],
)
def test_use_rlm_and_its_alias(
    flags, expected, config, fiches, auditor, auth_client, dispatched, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client(auditor).post(
            RUN, {"fiche_id": "F-LYON", "audit_config_id": config.pk, **flags}, format="json"
        )
    assert response.status_code == 202, response.content
    assert Audit.objects.get(pk=response.json()["audit_id"]).tools_mode is expected
    assert dispatched == [response.json()["audit_id"]]


def test_use_rlm_alias_in_a_form_post(config, fiches, auditor, auth_client, dispatched):
    response = auth_client(auditor).post(RUN, {"fiche_id": "F-LYON", "audit_config_id": config.pk, "useRlm": "true"})
    assert response.status_code == 202, response.content
    assert Audit.objects.get(pk=response.json()["audit_id"]).tools_mode is True


def test_a_form_post_without_the_alias_works(config, fiches, auditor, auth_client, dispatched):
    response = auth_client(auditor).post(RUN, {"fiche_id": "F-LYON", "audit_config_id": config.pk, "use_rlm": "true"})
    assert response.status_code == 202, response.content
    assert Audit.objects.get(pk=response.json()["audit_id"]).tools_mode is True


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        ({"audit_config_id": "CONFIG"}, "validation_error", "fiche_id"),
        ({"fiche_id": "", "audit_config_id": "CONFIG"}, "validation_error", "fiche_id"),
        ({"fiche_id": "F-LYON"}, "validation_error", "audit_config_id"),
        ({"fiche_id": "F-LYON", "audit_config_id": "abc"}, "validation_error", "audit_config_id"),
        ({"fiche_id": "F-LYON", "audit_config_id": 0}, "validation_error", "audit_config_id"),
        ({"fiche_id": "F-LYON", "audit_config_id": 999999}, "audit_config_not_found", "audit_config_id"),
        ({"fiche_id": "F-LYON", "audit_config_id": "CONFIG", "use_rlm": "maybe"}, "validation_error", "use_rlm"),
    ],
)
def test_bad_run_requests_are_400(payload, code, field, config, fiches, auditor, auth_client, dispatched):
    payload = {k: config.pk if v == "CONFIG" else v for k, v in payload.items()}
    response = auth_client(auditor).post(RUN, payload, format="json")
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == code and field in error["details"]
    assert not Audit.objects.exists() and dispatched == []


@pytest.mark.parametrize("key", ["", "   "])
def test_a_run_without_the_llm_key_is_503(key, config, fiches, auditor, auth_client, settings, dispatched):
    settings.LLM_API_KEY = key
    response = auth_client(auditor).post(RUN, {"fiche_id": "F-LYON", "audit_config_id": config.pk}, format="json")
    assert response.status_code == 503, response.content
    error = error_of(response)
    assert error["code"] == "dependency_unavailable"
    assert "LLM_API_KEY" in error["message"] and error["details"] == {"setting": "LLM_API_KEY"}
    assert not Audit.objects.exists() and dispatched == []


@pytest.mark.parametrize(
    ("user", "allowed", "denied"),
    [
        ("lyon_auditor", ["F-LYON", "F-LYON-B"], ["F-PARIS"]),
        ("self_auditor", ["F-LYON"], ["F-LYON-B", "F-PARIS"]),
        ("auditor", ["F-LYON", "F-LYON-B", "F-PARIS"], []),
    ],
)
def test_a_run_needs_the_fiche_in_the_audits_write_scope(
    user, allowed, denied, request, config, fiches, auth_client, dispatched, django_capture_on_commit_callbacks
):
    client = auth_client(request.getfixturevalue(user))
    for fiche_id in denied:
        response = client.post(RUN, {"fiche_id": fiche_id, "audit_config_id": config.pk}, format="json")
        assert response.status_code == 403, (fiche_id, response.content)
        error = error_of(response)
        assert error["code"] == "scope_denied" and error["details"] == {"fiche_id": fiche_id}
    assert not Audit.objects.exists()
    for fiche_id in allowed:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(RUN, {"fiche_id": fiche_id, "audit_config_id": config.pk}, format="json")
        assert response.status_code == 202, (fiche_id, response.content)
    assert sorted(Audit.objects.values_list("fiche__fiche_id", flat=True)) == sorted(allowed)
    assert len(dispatched) == len(allowed)


def test_a_run_needs_audits_write(config, fiches, make_role, make_user, auth_client, api_client, fiches_reader):
    payload = {"fiche_id": "F-LYON", "audit_config_id": config.pk}
    assert api_client.post(RUN, payload, format="json").status_code == 401
    reader = make_user(make_role("audit-reader", audits=("r", "ALL")), email="reader@example.com")
    for user in (reader, fiches_reader):
        response = auth_client(user).post(RUN, payload, format="json")
        assert response.status_code == 403
        assert error_of(response)["details"] == {"required": "audits.write"}
    assert not Audit.objects.exists()


# --- Audits read back -------------------------------------------------------------------------------------------


@pytest.fixture
def audits(config, fiches) -> dict[str, Audit]:
    """Four audits, one an hour from T0 (newest last): a completed BON on F-LYON with its step
    results, control point results and citations; a failed one on F-LYON-B; a REJET on F-PARIS; a
    pending one on F-LYON with another config."""
    other = configs.config_create(data=config_payload(name="Autre"))
    done = make_audit(
        fiches["F-LYON"],
        config,
        created_at=T0,
        status="completed",
        tools_mode=True,
        model="judge-1",
        overall_score=17.5,
        max_score=25.0,
        score_percentage=70.0,
        niveau="ACCEPTABLE",
        is_compliant=True,
        critical_issues=[],
        needs_review=False,
        total_tokens=420,
        duration_seconds=12.5,
        started_at=T0,
        completed_at=T0 + timedelta(seconds=13),
    )
    step1, step2 = step_definitions(config)
    r1 = AuditStepResult.objects.create(
        audit=done,
        step=step1,
        position=1,
        status="completed",
        score=7.5,
        max_score=15.0,
        conforme=False,
        prompt_tokens=300,
        completion_tokens=20,
    )
    r2 = AuditStepResult.objects.create(
        audit=done, step=step2, position=2, status="completed", score=10.0, max_score=10.0, conforme=True
    )
    # created out of order: the API orders points by index and citations by position
    p1 = ControlPointResult.objects.create(
        step_result=r1, index=1, ai_status="pass", status="uncertain", rationale="Numéro déformé."
    )
    p0 = ControlPointResult.objects.create(
        step_result=r1, index=0, ai_status="pass", status="pass", rationale="Il se présente."
    )
    ControlPointResult.objects.create(step_result=r2, index=0, ai_status="fail", status="fail", rationale="")
    Citation.objects.create(
        control_point=p0,
        position=1,
        quote="je suis Camille Martin",
        text="je m'appelle Camille Martin",
        speaker="agent",
        call_id="c-1",
        start=3.5,
        end=6.0,
        verified=True,
        score=0.93,
    )
    Citation.objects.create(
        control_point=p0, position=0, quote="Sérénis Courtage à l'appareil", verified=False, reason="not_found"
    )
    Citation.objects.create(
        control_point=p0,
        position=2,
        quote="de Sérénis Courtage",
        text="de Sérénis Courtage",
        speaker="agent",
        call_id="c-2",
        start=7.0,
        end=8.25,
        verified=True,
        score=1.0,
    )
    Citation.objects.create(
        control_point=p1, position=0, quote="ORIAS numéro 07 999 999", verified=False, reason="number_mismatch"
    )
    failed = make_audit(
        fiches["F-LYON-B"],
        config,
        created_at=T0 + timedelta(hours=1),
        status="failed",
        error="1 of 2 step(s) failed: step 2: HTTP 500",
        completed_at=T0 + timedelta(hours=1, minutes=1),
    )
    rejected = make_audit(
        fiches["F-PARIS"],
        config,
        created_at=T0 + timedelta(hours=2),
        status="completed",
        overall_score=20.0,
        max_score=25.0,
        score_percentage=80.0,
        niveau="REJET",
        is_compliant=False,
        needs_review=True,
        critical_issues=[
            {
                "step_position": 1,
                "step_name": "Présentation",
                "control_point_index": 0,
                "question": "L'agent donne-t-il son nom ?",
                "status": "uncertain",
            }
        ],
        completed_at=T0 + timedelta(hours=2, minutes=1),
    )
    pending = make_audit(fiches["F-LYON"], other, created_at=T0 + timedelta(hours=3))
    return {"done": done, "failed": failed, "rejected": rejected, "pending": pending}


def test_an_audit_in_the_documented_shape(audits, config, auditor, auth_client):
    done = audits["done"]
    response = auth_client(auditor).get(f"{AUDITS}/{done.pk}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == SUMMARY_KEYS | {"steps", "cost"}
    assert body["cost"]["llm_cost"] == "0.000000" and body["cost"]["calls"] == 0  # no usage recorded here
    assert {k: v for k, v in body.items() if k not in ("steps", "cost")} == {
        "audit_id": str(done.pk),
        "fiche_id": "F-LYON",
        "audit_config_id": config.pk,
        "config_version": 1,
        "status": "completed",
        "use_rlm": True,
        "model": "judge-1",
        "overall_score": 17.5,
        "max_score": 25.0,
        "score_percentage": 70.0,
        "niveau": "ACCEPTABLE",
        "is_compliant": True,
        "critical_issues": [],
        "needs_review": False,
        "total_tokens": 420,
        "duration_seconds": 12.5,
        "error": None,
        "created_at": T0.isoformat(),
        "completed_at": (T0 + timedelta(seconds=13)).isoformat(),
        "purpose": "production",
        "evaluation_id": None,
        "predecessor_id": None,
        "pinned": False,
        "counts": True,  # the fiche's latest completed audit of the config's active version
    }
    assert body["steps"] == [
        {
            "position": 1,
            "name": "Présentation",
            "weight": 15,
            "is_critical": True,
            "status": "completed",
            "score": 7.5,
            "max_score": 15.0,
            "conforme": False,
            "tokens_used": 320,
            "error": None,
            "control_points": [
                {
                    "index": 0,
                    "question": "L'agent donne-t-il son nom ?",
                    "is_critical": True,
                    "status": "pass",
                    "ai_status": "pass",
                    "model_status": "pass",
                    "gate_reason": None,
                    "guided": False,
                    "unguided_ai_status": "pass",
                    "conditional": False,
                    "speaker": "agent",
                    "human_status": None,
                    "advisory": False,
                    "pending_review": False,
                    "rationale": "Il se présente.",
                    # verified quotes only, in the transcript's own words, by position
                    "citations": [
                        {
                            "text": "je m'appelle Camille Martin",
                            "speaker": "agent",
                            "call_id": "c-1",
                            "start": 3.5,
                            "end": 6.0,
                        },
                        {
                            "text": "de Sérénis Courtage",
                            "speaker": "agent",
                            "call_id": "c-2",
                            "start": 7.0,
                            "end": 8.25,
                        },
                    ],
                    # rejected quotes only, as the LLM gave them, with the reason
                    "rejected_citations": [{"text": "Sérénis Courtage à l'appareil", "reason": "not_found"}],
                },
                {
                    "index": 1,
                    "question": "L'agent donne-t-il son numéro ORIAS ?",
                    "is_critical": False,
                    "status": "uncertain",
                    "ai_status": "uncertain",
                    "model_status": "pass",
                    "gate_reason": None,
                    "guided": False,
                    "unguided_ai_status": "uncertain",
                    "conditional": False,
                    "speaker": "agent",
                    "human_status": None,
                    "advisory": False,
                    "pending_review": False,
                    "rationale": "Numéro déformé.",
                    "citations": [],
                    "rejected_citations": [{"text": "ORIAS numéro 07 999 999", "reason": "number_mismatch"}],
                },
            ],
        },
        {
            "position": 2,
            "name": "Rétractation",
            "weight": 10,
            "is_critical": False,
            "status": "completed",
            "score": 10.0,
            "max_score": 10.0,
            "conforme": True,
            "tokens_used": 0,
            "error": None,
            "control_points": [
                {
                    "index": 0,
                    "question": "Le délai de quatorze jours est-il annoncé ?",
                    "is_critical": False,
                    "status": "fail",
                    "ai_status": "fail",
                    "model_status": "fail",
                    "gate_reason": None,
                    "guided": False,
                    "unguided_ai_status": "fail",
                    "conditional": False,
                    "speaker": "agent",
                    "human_status": None,
                    "advisory": False,
                    "pending_review": False,
                    "rationale": "",
                    "citations": [],
                    "rejected_citations": [],
                }
            ],
        },
    ]


def test_a_failed_and_a_rejected_audit_read_back(audits, auditor, auth_client):
    client = auth_client(auditor)
    failed = client.get(f"{AUDITS}/{audits['failed'].pk}").json()
    assert (failed["status"], failed["error"], failed["niveau"], failed["is_compliant"], failed["steps"]) == (
        "failed",
        "1 of 2 step(s) failed: step 2: HTTP 500",
        None,
        None,
        [],
    )
    rejected = client.get(f"{AUDITS}/{audits['rejected'].pk}").json()
    assert (rejected["niveau"], rejected["is_compliant"], rejected["needs_review"]) == ("REJET", False, True)
    assert rejected["critical_issues"] == audits["rejected"].critical_issues


def test_the_list_newest_first_without_steps(audits, auditor, auth_client):
    body = auth_client(auditor).get(AUDITS).json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 4 and body["next"] is None and body["previous"] is None
    order = ["pending", "rejected", "failed", "done"]
    assert [r["audit_id"] for r in body["results"]] == [str(audits[k].pk) for k in order]
    assert all(set(r) == SUMMARY_KEYS for r in body["results"])
    detail = auth_client(auditor).get(f"{AUDITS}/{audits['done'].pk}").json()
    assert body["results"][3] == {k: v for k, v in detail.items() if k not in ("steps", "cost")}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"fiche_id": "F-LYON"}, ["pending", "done"]),
        ({"fiche_id": "F-NOPE"}, []),
        ({"status": "failed"}, ["failed"]),
        ({"status": "completed"}, ["rejected", "done"]),
        ({"audit_config_id": "OTHER"}, ["pending"]),
        ({"audit_config_id": "CONFIG"}, ["rejected", "failed", "done"]),
        ({"niveau": "REJET"}, ["rejected"]),
        ({"niveau": "ACCEPTABLE"}, ["done"]),
        ({"is_compliant": "true"}, ["done"]),
        ({"is_compliant": "false"}, ["rejected"]),
        ({"needs_review": "true"}, ["rejected"]),
        ({"needs_review": "false"}, ["pending", "failed", "done"]),
        ({"created_from": (T0 + timedelta(hours=1)).isoformat()}, ["pending", "rejected", "failed"]),
        ({"created_to": (T0 + timedelta(hours=1)).isoformat()}, ["failed", "done"]),
        (
            {"created_from": "2026-02-03T08:30:00Z", "created_to": "2026-02-03T10:30:00Z"},
            ["rejected", "failed"],
        ),
        ({"fiche_id": "F-LYON", "status": "completed"}, ["done"]),
        ({"limit": 2}, ["pending", "rejected"]),
        ({"limit": 2, "offset": 1}, ["rejected", "failed"]),
        ({"offset": 3}, ["done"]),
    ],
)
def test_list_filters(query, expected, audits, config, auditor, auth_client):
    other_id = audits["pending"].config_id
    params = {k: {"OTHER": other_id, "CONFIG": config.pk}.get(v, v) for k, v in query.items()}
    response = auth_client(auditor).get(AUDITS, params)
    assert response.status_code == 200, response.content
    body = response.json()
    assert [r["audit_id"] for r in body["results"]] == [str(audits[k].pk) for k in expected]
    if "limit" not in query and "offset" not in query:
        assert body["count"] == len(expected)
    else:
        assert body["count"] == 4


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "done"}, "status"),
        ({"niveau": "bon"}, "niveau"),
        ({"audit_config_id": "abc"}, "audit_config_id"),
        ({"is_compliant": "maybe"}, "is_compliant"),
        ({"needs_review": "2"}, "needs_review"),
        ({"created_from": "yesterday"}, "created_from"),
        ({"created_to": "2026-13-01"}, "created_to"),
    ],
)
def test_bad_list_filters_are_400(query, field, audits, auditor, auth_client):
    response = auth_client(auditor).get(AUDITS, query)
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "validation_error" and field in error["details"]


def test_audit_reads_need_a_token_and_audits_read(audits, api_client, auth_client, fiches_reader):
    for url in (AUDITS, f"{AUDITS}/{audits['done'].pk}"):
        assert api_client.get(url).status_code == 401
        response = auth_client(fiches_reader).get(url)
        assert response.status_code == 403
        assert error_of(response)["details"] == {"required": "audits.read"}


@pytest.mark.parametrize(
    ("user", "visible"),
    [
        ("lyon_auditor", ["pending", "failed", "done"]),
        ("self_auditor", ["pending", "done"]),
        ("auditor", ["pending", "rejected", "failed", "done"]),
    ],
)
def test_reads_follow_the_audits_scope(user, visible, audits, request, auth_client):
    client = auth_client(request.getfixturevalue(user))
    listed = client.get(AUDITS).json()
    assert [r["audit_id"] for r in listed["results"]] == [str(audits[k].pk) for k in visible]
    assert listed["count"] == len(visible)
    assert client.get(AUDITS, {"fiche_id": "F-PARIS"}).json()["count"] == (1 if "rejected" in visible else 0)
    for name, audit in audits.items():
        response = client.get(f"{AUDITS}/{audit.pk}")
        if name in visible:
            assert response.status_code == 200, (name, response.content)
        else:
            assert response.status_code == 403, name
            error = error_of(response)
            assert error["code"] == "scope_denied" and error["details"] == {"audit_id": str(audit.pk)}


def test_a_group_user_without_groupes_sees_nothing(audits, make_role, make_user, auth_client):
    user = make_user(make_role("groupless", audits=("r", "GROUP")), email="groupless@example.com")
    client = auth_client(user)
    assert client.get(AUDITS).json()["count"] == 0
    assert client.get(f"{AUDITS}/{audits['done'].pk}").status_code == 403


@pytest.mark.parametrize("user", ["lyon_auditor", "auditor"])
def test_unknown_and_malformed_audit_ids_are_404(user, audits, request, auth_client):
    client = auth_client(request.getfixturevalue(user))
    unknown = uuid.uuid4()
    response = client.get(f"{AUDITS}/{unknown}")
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "audit_not_found" and error["details"] == {"audit_id": str(unknown)}
    malformed = client.get(f"{AUDITS}/not-a-uuid")
    assert malformed.status_code == 404
    assert error_of(malformed)["code"] == "not_found"


# --- The private-audit-{id} channel -------------------------------------------------------------------------------


@pytest.fixture
def pusher(settings):
    settings.PUSHER_APP_ID = "3"
    settings.PUSHER_KEY = PUSHER_KEY
    settings.PUSHER_SECRET = PUSHER_SECRET
    settings.PUSHER_CLUSTER = ""
    settings.PUSHER_HOST = ""
    settings.PUSHER_PORT = None
    settings.PUSHER_USE_TLS = True


def subscribe(client, channel: str):
    return client.post(PUSHER_AUTH, {"socket_id": SOCKET, "channel_name": channel}, format="json")


def signature(channel: str) -> str:
    digest = hmac.new(PUSHER_SECRET.encode(), f"{SOCKET}:{channel}".encode(), hashlib.sha256).hexdigest()
    return f"{PUSHER_KEY}:{digest}"


@pytest.mark.usefixtures("pusher")
@pytest.mark.parametrize(
    ("user", "allowed", "denied"),
    [
        ("lyon_auditor", ["done", "failed", "pending"], ["rejected"]),
        ("self_auditor", ["done", "pending"], ["failed", "rejected"]),
        ("auditor", ["done", "failed", "rejected", "pending"], []),
        ("fiches_reader", [], ["done", "failed", "rejected", "pending"]),  # no audits.read
    ],
)
def test_the_audit_channel_follows_the_audits_scope(user, allowed, denied, audits, request, auth_client):
    client = auth_client(request.getfixturevalue(user))
    for name in allowed:
        channel = f"private-audit-{audits[name].pk}"
        response = subscribe(client, channel)
        assert response.status_code == 200, (name, response.content)
        assert response.json() == {"auth": signature(channel)}
    for name in denied:
        response = subscribe(client, f"private-audit-{audits[name].pk}")
        assert response.status_code == 403, (name, response.content)
        assert error_of(response)["code"] == "permission_denied"
        assert "auth" not in response.json()


@pytest.mark.usefixtures("pusher")
def test_the_audit_channel_of_an_unknown_audit_is_403(auditor, auth_client, api_client):
    assert subscribe(auth_client(auditor), f"private-audit-{uuid.uuid4()}").status_code == 403
    assert subscribe(auth_client(auditor), "private-audit-not-a-uuid").status_code == 403
    assert subscribe(api_client, f"private-audit-{uuid.uuid4()}").status_code == 401
