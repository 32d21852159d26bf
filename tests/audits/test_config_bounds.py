"""An audit config's bounds (``audits/api/serializers.py``): too many steps or control points, a weight
out of range (3,000,000,000 would overflow its integer column), texts too long — each a 400
naming the field, on create and on edit, and nothing written; the bounds themselves are accepted."""

from __future__ import annotations

from typing import Any

import pytest

from audits.api.serializers import MAX_CONTROL_POINTS_PER_STEP, MAX_LONG_TEXT, MAX_STEPS, MAX_TEXT, MAX_WEIGHT
from audits.models import AuditConfig, AuditConfigVersion
from audits.services import configs
from tests.audits.test_api import config_payload, error_of

pytestmark = pytest.mark.django_db

CONFIGS = "/api/audit-configs"


@pytest.fixture
def client(make_role, make_user, auth_client):
    return auth_client(make_user(make_role("cfg-admin", audit_configs=("rw", "ALL")), email="cfg@example.com"))


def step(position: int, **fields: Any) -> dict[str, Any]:
    return {"name": f"Étape {position}", "weight": 1, "control_points": [{"question": "Q ?"}], **fields}


def node_at(details: Any, path: list[str]) -> Any:
    for key in path:
        details = details[key]
    return details


# (what the config gets, where the error sits in details)
OUT_OF_BOUNDS = [
    pytest.param({"steps": [step(0, weight=3_000_000_000)]}, ["steps", "0", "weight"], id="weight-3e9"),
    pytest.param({"steps": [step(0, weight=MAX_WEIGHT + 1)]}, ["steps", "0", "weight"], id="weight-max+1"),
    pytest.param({"steps": [step(i) for i in range(2000)]}, ["steps"], id="2000-steps"),
    pytest.param({"steps": [step(i) for i in range(MAX_STEPS + 1)]}, ["steps"], id="max+1-steps"),
    pytest.param(
        {"steps": [step(0, control_points=[{"question": "Q ?"}] * (MAX_CONTROL_POINTS_PER_STEP + 1))]},
        ["steps", "0", "control_points"],
        id="max+1-control-points",
    ),
    pytest.param(
        {"steps": [step(0, control_points=[{"question": "Q" * (MAX_TEXT + 1)}])]},
        ["steps", "0", "control_points", "0", "question"],
        id="question-too-long",
    ),
    pytest.param(
        {"steps": [step(0, control_points=[{"question": "Q ?", "evidence_hint": "h" * (MAX_TEXT + 1)}])]},
        ["steps", "0", "control_points", "0", "evidence_hint"],
        id="hint-too-long",
    ),
    pytest.param(
        {"steps": [step(0, instructions="i" * (MAX_LONG_TEXT + 1))]}, ["steps", "0", "instructions"], id="instructions"
    ),
    pytest.param({"steps": [step(0, name="n" * 201)]}, ["steps", "0", "name"], id="step-name-too-long"),
    pytest.param({"description": "d" * (MAX_LONG_TEXT + 1)}, ["description"], id="description-too-long"),
    pytest.param({"name": "n" * 201}, ["name"], id="name-too-long"),
]


@pytest.mark.parametrize(("fields", "location"), OUT_OF_BOUNDS)
def test_create_out_of_bounds_is_a_400_naming_the_field(fields, location, client):
    response = client.post(CONFIGS, config_payload(**fields), format="json")
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert node_at(error["details"], location), error
    assert error["message"].startswith(f"{location[0]}:"), error["message"]
    assert not AuditConfig.objects.exists()


@pytest.mark.parametrize(("fields", "location"), OUT_OF_BOUNDS)
def test_edit_out_of_bounds_is_a_400_naming_the_field_and_makes_no_version(fields, location, client):
    config = configs.config_create(data=config_payload())
    response = client.patch(f"{CONFIGS}/{config.pk}", fields, format="json")
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "validation_error"
    assert node_at(error["details"], location), error
    assert AuditConfigVersion.objects.filter(config=config).count() == 1


def test_the_bounds_themselves_are_accepted(client):
    at_bounds = [
        step(
            i,
            weight=MAX_WEIGHT,
            instructions="i" * MAX_LONG_TEXT,
            control_points=[{"question": "Q" * MAX_TEXT, "evidence_hint": "h" * MAX_TEXT}]
            * (MAX_CONTROL_POINTS_PER_STEP if i == 0 else 1),
        )
        for i in range(MAX_STEPS)
    ]
    response = client.post(CONFIGS, config_payload(steps=at_bounds, description="d" * MAX_LONG_TEXT), format="json")
    assert response.status_code == 201, response.content[:500]
    created = response.json()
    assert len(created["steps"]) == MAX_STEPS
    assert len(created["steps"][0]["control_points"]) == MAX_CONTROL_POINTS_PER_STEP
    assert {s["weight"] for s in created["steps"]} == {MAX_WEIGHT}

    response = client.patch(f"{CONFIGS}/{created['id']}", {"steps": at_bounds[:2]}, format="json")
    assert response.status_code == 200, response.content[:500]
    assert response.json()["version"] == 2
