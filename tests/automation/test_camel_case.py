"""camelCase at the automation API's edge, snake_case behind it (``automation.api.camel``, with
``djangorestframework-camel-case``): a nested ``ficheSelection`` goes in camelCase, is stored in
snake_case and comes back in camelCase (JSON, form and query string); values are never touched (codes,
messages, ids and names with underscores); errors name input fields in camelCase and keep their
snake_case context keys; a body nested too deeply is still a 400; the data migration converts stored
selections and run snapshots forward and back; the OpenAPI schema documents the automation components in
camelCase and leaves the rest of the API as it is."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from automation.api.camel import CamelCaseJSONRenderer
from automation.models import AutomationRun, AutomationSchedule
from fiches.models import FicheCache

pytestmark = pytest.mark.django_db

SCHEDULES = "/api/automation/schedules"
RUNS = "/api/automation/runs"


@pytest.fixture
def writer(make_owner):
    return make_owner("ALL", email="camel-writer@example.com")


@pytest.fixture
def api(writer, auth_client):
    client = auth_client(writer)
    client.default_format = "json"
    return client


# --- Parser and renderer ------------------------------------------------------------------------------------


def test_a_nested_fiche_selection_goes_in_camel_case_is_stored_snake_case_and_comes_back_camel_case(api, dispatched):
    selection = {
        "mode": "dateRange",
        "startDate": "2026-02-01",
        "endDate": "2026-02-03",
        "groupes": ["Lyon_1"],
        "onlyUnaudited": True,
        "onlyWithRecordings": False,
        "maxRecordingsPerFiche": 4,
        "maxFiches": 7,
        "useRlm": True,
    }
    response = api.post(SCHEDULES, {"name": "snake_case_name", "ficheSelection": selection, "maxRetries": 2})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "snake_case_name"  # a value: never converted
    assert body["ficheSelection"] == {**selection, "relativeDays": 1, "ficheIds": []}
    assert list(body["ficheSelection"]) == [
        "mode",
        "startDate",
        "endDate",
        "relativeDays",
        "ficheIds",
        "groupes",
        "onlyUnaudited",
        "onlyWithRecordings",
        "maxRecordingsPerFiche",
        "maxFiches",
        "useRlm",
    ]
    assert (body["maxRetries"], body["hasWebhookSecret"], body["nextRunAt"]) == (2, False, None)

    stored = AutomationSchedule.objects.get(pk=body["id"])
    assert stored.fiche_selection == {
        "mode": "dateRange",
        "start_date": "2026-02-01",
        "end_date": "2026-02-03",
        "groupes": ["Lyon_1"],
        "only_unaudited": True,
        "only_with_recordings": False,
        "max_recordings_per_fiche": 4,
        "max_fiches": 7,
        "use_rlm": True,
    }
    assert stored.max_retries == 2

    # A PATCH's nested keys merge into the stored (snake_case) selection.
    patched = api.patch(f"{SCHEDULES}/{body['id']}", {"ficheSelection": {"maxFiches": 3, "ficheIds": ["F_1"]}})
    assert patched.status_code == 200, patched.content
    assert patched.json()["ficheSelection"]["maxFiches"] == 3 and patched.json()["ficheSelection"]["ficheIds"] == [
        "F_1"
    ]
    stored.refresh_from_db()
    assert stored.fiche_selection["max_fiches"] == 3 and stored.fiche_selection["fiche_ids"] == ["F_1"]
    assert stored.fiche_selection["start_date"] == "2026-02-01"

    # The run's snapshot is snake_case; the API shows it in camelCase.
    run_id = api.post(f"{SCHEDULES}/{body['id']}/run").json()["runId"]
    run = AutomationRun.objects.get(pk=run_id)
    assert run.config["fiche_selection"]["max_fiches"] == 3 and run.config["max_retries"] == 2
    assert "webhook_secret" not in run.config and "ficheSelection" not in run.config
    config = api.get(f"{RUNS}/{run_id}").json()["config"]
    assert config["ficheSelection"]["maxFiches"] == 3 and config["ficheSelection"]["ficheIds"] == ["F_1"]
    assert config["maxRetries"] == 2 and config["name"] == "snake_case_name"
    assert all("_" not in key for key in config) and all("_" not in key for key in config["ficheSelection"])


def test_form_bodies_and_query_strings_are_read_in_camel_case_too(api):
    response = api.post(SCHEDULES, {"name": "Form", "isActive": "false", "maxRetries": "4"}, format="multipart")
    assert response.status_code == 201, response.content
    assert (response.json()["isActive"], response.json()["maxRetries"]) == (False, 4)
    encoded = api.generic(
        "POST", SCHEDULES, "name=Encoded&runAudits=false", content_type="application/x-www-form-urlencoded"
    )
    assert encoded.status_code == 201, encoded.content
    assert encoded.json()["runAudits"] is False
    api.post(SCHEDULES, {"name": "Active"})

    inactive = api.get(SCHEDULES, {"isActive": "false"}).json()
    assert [s["name"] for s in inactive["results"]] == ["Form"]
    error = api.get(SCHEDULES, {"isActive": "maybe"}).json()["error"]
    assert error == {
        "code": "validation_error",
        "message": "isActive: Must be a valid boolean.",
        "details": {"isActive": ["Must be a valid boolean."]},
    }


def test_errors_name_input_fields_in_camel_case_and_keep_their_context_keys_and_values(api, settings):
    settings.WEBHOOK_ALLOWED_ORIGINS = []
    # A serializer's error (DRF) and a service's (the effective config): fields in camelCase, code and
    # message otherwise as built.
    error = api.post(SCHEDULES, {"name": "E", "ficheSelection": {"maxFiches": 0, "otherKey": 1}}).json()["error"]
    assert error["code"] == "validation_error"
    assert set(error["details"]) == {"ficheSelection.otherKey"}  # checked before the keys' values
    assert error["message"] == (
        "ficheSelection.otherKey: Unknown key; expected one of mode, startDate, endDate, relativeDays, ficheIds, "
        "groupes, onlyUnaudited, onlyWithRecordings, maxRecordingsPerFiche, maxFiches, useRlm."
    )
    error = api.post(SCHEDULES, {"name": "E", "scheduleType": "DAILY"}).json()["error"]
    assert error == {
        "code": "invalid_input",
        "message": "timeOfDay: A DAILY schedule needs timeOfDay.",
        "details": {"timeOfDay": ["A DAILY schedule needs timeOfDay."]},
    }
    error = api.post(SCHEDULES, {"name": "E", "notifyEmails": ["ok@example.com", "not_an_email"]}).json()["error"]
    assert error["details"] == {"notifyEmails.1": ["Enter a valid email address."]}
    # The SSRF refusal: the field in camelCase, its context (url, reason) as it is.
    error = api.post(SCHEDULES, {"name": "E", "webhookUrl": "http://10.0.0.1/hook"}).json()["error"]
    assert error["code"] == "unsafe_webhook_url" and list(error["details"]) == ["webhookUrl", "reason", "url"]
    # Context keys are snake_case in every API: not converted.
    error = api.get(f"{SCHEDULES}/424242").json()["error"]
    assert error == {
        "code": "schedule_not_found",
        "message": "No automation schedule 424242.",
        "details": {"schedule_id": 424242},
    }
    assert api.get(f"{RUNS}/not_a_uuid").json()["error"]["details"] == {"run_id": "not_a_uuid"}
    body = api.post(SCHEDULES, [1, 2], format="json").json()["error"]
    assert body["details"] == {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}


def test_the_renderer_converts_keys_only_and_leaves_the_error_envelope_as_built():
    renderer = CamelCaseJSONRenderer()
    rendered = renderer.render(
        {
            "run_id": "a_b",
            "fiche_selection": {"fiche_ids": ["F_1"], "start_date": "2026-02-04", "groupes": ["Lyon_1"]},
            "result_summary": {"failed": [{"fiche_id": "F_1", "error": "step_x: failed"}]},
            "2026-02-04": 1,  # a date as a key: nothing to convert
        }
    )
    assert json.loads(rendered) == {
        "runId": "a_b",
        "ficheSelection": {"ficheIds": ["F_1"], "startDate": "2026-02-04", "groupes": ["Lyon_1"]},
        "resultSummary": {"failed": [{"ficheId": "F_1", "error": "step_x: failed"}]},
        "2026-02-04": 1,
    }
    # Every key is converted, so no automation output is keyed by data (a fiche id "F_1" would become
    # "F1"): fiche ids and dates are values (``ficheIds``, ``fiches[].ficheId``, ``resultSummary``).
    assert json.loads(renderer.render({"by_fiche": {"F_1": 1}})) == {"byFiche": {"F1": 1}}
    envelope = {"error": {"code": "validation_error", "message": "max_x: y_z", "details": {"retry_after": 3}}}
    assert json.loads(renderer.render(envelope)) == envelope


def test_a_body_nested_too_deeply_is_a_400(api):
    for depth in (1_200, 50_000):  # too deep for the key converter only; for the JSON decoder too
        body = '{"name": "x", "ficheSelection": ' + "[" * depth + "]" * depth + "}"
        response = api.generic("POST", SCHEDULES, body, content_type="application/json")
        assert response.status_code == 400, (depth, response.content[:200])
        assert response.json()["error"]["code"] == "parse_error"
    assert not AutomationSchedule.objects.exists()


# --- The data migration -------------------------------------------------------------------------------------

BEFORE = [("automation", "0003_owner_and_notifications")]
CAMEL_SELECTION = {
    "mode": "manual",
    "startDate": None,
    "endDate": None,
    "relativeDays": 1,
    "ficheIds": ["M1", "M2"],
    "groupes": ["Lyon-1"],
    "onlyUnaudited": True,
    "onlyWithRecordings": False,
    "maxRecordingsPerFiche": 3,
    "maxFiches": 5,
    "useRlm": True,
}
SNAKE_SELECTION = {
    "mode": "manual",
    "start_date": None,
    "end_date": None,
    "relative_days": 1,
    "fiche_ids": ["M1", "M2"],
    "groupes": ["Lyon-1"],
    "only_unaudited": True,
    "only_with_recordings": False,
    "max_recordings_per_fiche": 3,
    "max_fiches": 5,
    "use_rlm": True,
}
CAMEL_CONFIG = {
    "name": "Nightly",
    "isActive": True,
    "scheduleType": "DAILY",
    "timeOfDay": "02:00",
    "dayOfWeek": None,
    "dayOfMonth": None,
    "timezone": "Europe/Paris",
    "ficheSelection": CAMEL_SELECTION,
    "auditConfigIds": [4],
    "runTranscription": True,
    "runAudits": False,
    "skipIfTranscribed": True,
    "continueOnError": False,
    "retryFailed": True,
    "maxRetries": 2,
    "notifyOnComplete": True,
    "notifyOnError": False,
    "webhookUrl": "https://hooks.example.com/x",
    "webhookSecret": "old-snapshots-kept-it",
    "notifyEmails": ["ops@example.com"],
}
SNAKE_CONFIG = {
    "name": "Nightly",
    "is_active": True,
    "schedule_type": "DAILY",
    "time_of_day": "02:00",
    "day_of_week": None,
    "day_of_month": None,
    "timezone": "Europe/Paris",
    "fiche_selection": SNAKE_SELECTION,
    "audit_config_ids": [4],
    "run_transcription": True,
    "run_audits": False,
    "skip_if_transcribed": True,
    "continue_on_error": False,
    "retry_failed": True,
    "max_retries": 2,
    "notify_on_complete": True,
    "notify_on_error": False,
    "webhook_url": "https://hooks.example.com/x",
    "webhook_secret": "old-snapshots-kept-it",
    "notify_emails": ["ops@example.com"],
}


def migrate(targets: list[tuple[str, str]] | None = None):
    """Migrate to ``targets`` (every app's latest when ``None``); the apps of that state."""
    executor = MigrationExecutor(connection)
    targets = targets or executor.loader.graph.leaf_nodes()
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


def stored(apps) -> dict[str, Any]:
    Schedule = apps.get_model("automation", "AutomationSchedule")
    Run = apps.get_model("automation", "AutomationRun")
    return {
        "schedules": dict(Schedule.objects.values_list("name", "fiche_selection")),
        "runs": sorted(Run.objects.values_list("config", flat=True), key=json.dumps),
    }


def test_the_migration_converts_stored_selections_and_snapshots_forward_and_back(api):
    try:
        old = migrate(BEFORE)
        Schedule = old.get_model("automation", "AutomationSchedule")
        Run = old.get_model("automation", "AutomationRun")
        full = Schedule.objects.create(name="Full", fiche_selection=CAMEL_SELECTION)
        Schedule.objects.create(name="Partial", fiche_selection={"mode": "relative", "relativeDays": 3})
        Schedule.objects.create(name="Empty", fiche_selection={})
        Run.objects.create(schedule_id=full.pk, config=CAMEL_CONFIG)
        Run.objects.create(config={"name": "Gone"})  # an old snapshot with a name only
        Run.objects.create(config={})
        before = stored(old)

        new = migrate()
        assert stored(new) == {
            "schedules": {
                "Full": SNAKE_SELECTION,
                "Partial": {"mode": "relative", "relative_days": 3},
                "Empty": {},
            },
            "runs": sorted([SNAKE_CONFIG, {"name": "Gone"}, {}], key=json.dumps),
        }
        # Existing rows keep working: the API shows them as before; the run engine reads them.
        FicheCache.objects.create(fiche_id="M1", sales_date=date(2026, 2, 4), groupe="Lyon-1")
        FicheCache.objects.create(fiche_id="M2", sales_date=date(2026, 2, 4), groupe="Lyon-1")
        shown = api.get(f"{SCHEDULES}/{full.pk}").json()
        assert shown["ficheSelection"] == CAMEL_SELECTION
        run = AutomationRun.objects.get(schedule_id=full.pk)
        config = api.get(f"{RUNS}/{run.pk}").json()["config"]
        assert config == {k: v for k, v in CAMEL_CONFIG.items() if k != "webhookSecret"}
        from automation.services import runs

        assert runs.max_fiches(run.config["fiche_selection"]) == 5
        assert runs.selection_range(run.config["fiche_selection"], "Europe/Paris") is None  # manual

        back = migrate(BEFORE)
        assert stored(back) == before
        assert stored(back)["schedules"]["Full"] == CAMEL_SELECTION
        assert CAMEL_CONFIG in stored(back)["runs"]
    finally:
        migrate()  # the next tests find the database at the latest state


# --- The OpenAPI schema -------------------------------------------------------------------------------------

AUTOMATION_COMPONENTS = (
    "ScheduleInputRequest",
    "PatchedScheduleInputRequest",
    "FicheSelectionInputRequest",
    "ScheduleOutput",
    "FicheSelectionOutput",
    "RunStartedOutput",
    "RunOutput",
    "RunDetailOutput",
    "RunFicheOutput",
    "ResultSummaryOutput",
    "FicheErrorOutput",
    "FicheReasonOutput",
)


def test_the_schema_documents_the_automation_components_in_camel_case_and_the_rest_as_it_was(api_client):
    response = api_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = json.loads(response.content)
    components = schema["components"]["schemas"]
    for name in AUTOMATION_COMPONENTS:
        names = [*components[name]["properties"], *components[name].get("required", [])]
        assert all("_" not in key for key in names), (name, names)
    assert list(components["FicheSelectionInputRequest"]["properties"]) == [
        "mode",
        "startDate",
        "endDate",
        "relativeDays",
        "ficheIds",
        "groupes",
        "onlyUnaudited",
        "onlyWithRecordings",
        "maxRecordingsPerFiche",
        "maxFiches",
        "useRlm",
    ]
    schedule = components["ScheduleOutput"]
    assert {"isActive", "timeOfDay", "ficheSelection", "hasWebhookSecret", "ownerId", "nextRunAt"} <= set(
        schedule["properties"]
    )
    assert "webhookSecret" in components["ScheduleInputRequest"]["properties"]
    assert "webhookSecret" not in schedule["properties"]
    assert components["ScheduleInputRequest"]["required"] == ["name"]
    assert "required" not in components["PatchedScheduleInputRequest"]
    assert components["RunStartedOutput"]["required"] == ["runId"]
    assert {"config", "fiches", "resultSummary", "durationMs"} <= set(components["RunDetailOutput"]["properties"])
    assert components["RunDetailOutput"]["required"] == sorted(components["RunDetailOutput"]["required"])
    # The automation list's query parameter in camelCase; path parameters keep their names.
    operation = schema["paths"]["/api/automation/schedules"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["isActive", "limit", "offset"]
    assert schema["paths"]["/api/automation/schedules/{schedule_id}"]["get"]["parameters"][0]["name"] == "schedule_id"

    # Other APIs keep their own names: snake_case ones stay snake_case, camelCase ones camelCase.
    assert {"is_active", "created_at", "updated_at"} <= set(components["AuditConfigOutput"]["properties"])
    assert {"fiche_id", "sales_date", "crm_user_id"} <= set(components["CachedFiche"]["properties"])
    assert "jobId" in components["JobOutput"]["properties"]
    by_range = schema["paths"]["/api/fiches/status/by-date-range"]["get"]
    assert {"startDate", "endDate"} <= {p["name"] for p in by_range["parameters"]}
