"""The automation API without a worker: schedules CRUD in the front end's camelCase shape, validation
on the effective config naming the field, maxFiches within AUTOMATION_MAX_FICHES, the webhook URL's
SSRF guard, the secret never returned, grants (automation.read for GET, automation.write for the
rest), the owner (the creator) and the scope of the fiche ids and groups a schedule names (403 naming
no fiche, an unknown id answered as a foreign one), the manual trigger (202, the orchestrator asked
once after commit), deletion keeping the runs, and runs read back (list, filters, pagination, detail
with its per-fiche rows and the legacy ``resultSummary``); a reader sees only the fiches in their own
scope and, without automation.write, no webhook URL or email address."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from audits.models import AuditConfig
from audits.services.configs import config_create
from automation.models import AutomationRun, AutomationRunFicheResult, AutomationSchedule
from fiches.models import FicheCache

pytestmark = pytest.mark.django_db

SCHEDULES = "/api/automation/schedules"
RUNS = "/api/automation/runs"
SECRET = "s3cr3t-never-echoed-7f1c"
ALLOWED = "http://127.0.0.1:9999"

SCHEDULE_KEYS = {
    "id",
    "name",
    "isActive",
    "scheduleType",
    "timeOfDay",
    "dayOfWeek",
    "dayOfMonth",
    "timezone",
    "ficheSelection",
    "auditConfigIds",
    "runTranscription",
    "runAudits",
    "skipIfTranscribed",
    "continueOnError",
    "retryFailed",
    "maxRetries",
    "notifyOnComplete",
    "notifyOnError",
    "webhookUrl",
    "hasWebhookSecret",
    "notifyEmails",
    "ownerId",
    "nextRunAt",
    "lastRunAt",
    "createdAt",
    "updatedAt",
}
RUN_KEYS = {
    "id",
    "scheduleId",
    "scheduleName",
    "trigger",
    "slot",
    "status",
    "dateFrom",
    "dateTo",
    "revalidation",
    "totalFiches",
    "successful",
    "failed",
    "ignored",
    "skipped",
    "error",
    "createdAt",
    "startedAt",
    "completedAt",
    "durationMs",
}
# A schedule's ficheSelection with every key, as the API shows it (the defaults).
SELECTION_DEFAULTS = {
    "mode": "relative",
    "startDate": None,
    "endDate": None,
    "relativeDays": 1,
    "ficheIds": [],
    "groupes": [],
    "onlyUnaudited": False,
    "onlyWithRecordings": True,
    "maxRecordingsPerFiche": None,
    "maxFiches": None,
    "useRlm": False,
}
FICHE_KEYS = {
    "ficheId",
    "status",
    "step",
    "reason",
    "error",
    "recordingsCount",
    "transcriptionAttempts",
    "auditIds",
}


def schedule_url(schedule_id: int, tail: str = "") -> str:
    return f"{SCHEDULES}/{schedule_id}{tail}"


def error_of(response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.fixture
def writer(make_role, make_user):
    """automation.write, and every grant a run uses with scope ALL (a schedule's owner needs them)."""
    role = make_role(
        "automation-writer",
        automation=("rw", "ALL"),
        fiches=("r", "ALL"),
        transcriptions=("rw", "ALL"),
        audits=("rw", "ALL"),
    )
    return make_user(role, email="writer@example.com")


@pytest.fixture
def reader(make_role, make_user):
    return make_user(make_role("automation-reader", automation=("r", "ALL")), email="reader@example.com")


@pytest.fixture
def outsider(make_role, make_user):
    """Every audit grant, none on automation."""
    return make_user(make_role("auditor", audits=("rw", "ALL"), audit_configs=("rw", "ALL")), email="aud@example.com")


@pytest.fixture
def api(writer, auth_client):
    """The writer's client, sending JSON (null values included) by default."""
    client = auth_client(writer)
    client.default_format = "json"
    return client


@pytest.fixture
def config_ids(db) -> list[int]:
    ids = []
    for name in ("Vente", "Rétractation"):
        data = {
            "name": name,
            "thresholds": {"excellent": 90, "bon": 75, "acceptable": 60},
            "steps": [
                {"name": "Présentation", "weight": 1, "control_points": [{"question": "L'agent se présente-t-il ?"}]}
            ],
        }
        ids.append(config_create(data=data).pk)
    return ids


def full_payload(config_ids: list[int], **overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": "Nightly Lyon",
        "isActive": True,
        "scheduleType": "DAILY",
        "timeOfDay": "09:30",
        "dayOfWeek": None,
        "dayOfMonth": None,
        "timezone": "Europe/Paris",
        "ficheSelection": {
            "mode": "relative",
            "relativeDays": 2,
            "groupes": ["Lyon-1", "Lyon-2"],
            "onlyUnaudited": True,
            "onlyWithRecordings": True,
            "maxRecordingsPerFiche": 12,
            "maxFiches": 200,
            "useRlm": True,
        },
        "auditConfigIds": config_ids,
        "runTranscription": True,
        "runAudits": True,
        "skipIfTranscribed": False,
        "continueOnError": False,
        "retryFailed": True,
        "maxRetries": 3,
        "notifyOnComplete": True,
        "notifyOnError": True,
        "webhookUrl": f"{ALLOWED}/hook",
        "webhookSecret": SECRET,
        "notifyEmails": ["ops@example.com", "lead@example.com"],
    }
    payload.update(overrides)
    return payload


def create(api, **payload: Any) -> dict[str, Any]:
    response = api.post(SCHEDULES, payload, format="json")
    assert response.status_code == 201, response.content
    return response.json()


# --- CRUD -------------------------------------------------------------------------------------------------


def test_create_returns_the_schedule_in_the_front_end_shape(api, config_ids, settings):
    settings.WEBHOOK_ALLOWED_ORIGINS = [ALLOWED]
    before = timezone.now()
    response = api.post(SCHEDULES, full_payload(config_ids), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == SCHEDULE_KEYS
    assert SECRET not in response.content.decode()
    expected = full_payload(config_ids)
    expected.pop("webhookSecret")
    expected["ficheSelection"] = {**SELECTION_DEFAULTS, **expected["ficheSelection"]}
    assert {k: body[k] for k in expected} == expected
    assert body["hasWebhookSecret"] is True
    assert body["lastRunAt"] is None
    assert parse(body["createdAt"]) >= before and parse(body["updatedAt"]) >= before
    # DAILY at 09:30 Paris time: the next one, within a day, at 09:30 local.
    next_run = parse(body["nextRunAt"])
    assert before < next_run <= before + timedelta(days=1)
    local = next_run.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (9, 30)

    stored = AutomationSchedule.objects.get(pk=body["id"])
    assert stored.webhook_secret == SECRET
    assert stored.created_by is not None and stored.created_by.email == "writer@example.com"
    assert stored.owner == stored.created_by and body["ownerId"] == stored.owner.pk
    assert stored.next_run_at == next_run

    detail = api.get(schedule_url(body["id"]))
    assert detail.status_code == 200 and detail.json() == body
    page = api.get(SCHEDULES).json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 1 and page["results"] == [body]


def test_create_with_only_a_name_takes_the_defaults(api):
    body = create(api, name="Ad hoc")
    assert body["scheduleType"] == "MANUAL" and body["isActive"] is True
    assert body["timezone"] == "Europe/Paris"
    assert body["ficheSelection"] == SELECTION_DEFAULTS
    assert body["auditConfigIds"] == [] and body["notifyEmails"] == []
    assert body["webhookUrl"] is None and body["hasWebhookSecret"] is False
    assert (body["runTranscription"], body["runAudits"], body["skipIfTranscribed"]) == (True, True, True)
    assert (body["continueOnError"], body["retryFailed"], body["maxRetries"]) == (True, False, 1)
    assert (body["notifyOnComplete"], body["notifyOnError"]) == (False, True)
    assert body["nextRunAt"] is None  # MANUAL: no slot


def test_patch_changes_only_the_given_fields_and_next_run_follows_the_timing(api):
    schedule = create(api, name="Ad hoc", ficheSelection={"mode": "relative", "relativeDays": 3})
    url = schedule_url(schedule["id"])

    weekly = api.patch(url, {"scheduleType": "WEEKLY", "timeOfDay": "06:15", "dayOfWeek": 3}, format="json")
    assert weekly.status_code == 200, weekly.content
    body = weekly.json()
    assert (body["scheduleType"], body["timeOfDay"], body["dayOfWeek"]) == ("WEEKLY", "06:15", 3)
    assert body["name"] == "Ad hoc" and body["ficheSelection"]["relativeDays"] == 3
    local = parse(body["nextRunAt"]).astimezone(ZoneInfo("Europe/Paris"))
    assert (local.isoweekday(), local.hour, local.minute) == (3, 6, 15)
    assert timezone.now() < parse(body["nextRunAt"]) <= timezone.now() + timedelta(days=7)

    # ficheSelection keys merge into the stored selection.
    merged = api.patch(url, {"ficheSelection": {"groupes": ["Paris-3"]}}, format="json").json()
    assert merged["ficheSelection"]["relativeDays"] == 3 and merged["ficheSelection"]["groupes"] == ["Paris-3"]
    assert merged["nextRunAt"] == body["nextRunAt"]

    off = api.patch(url, {"isActive": False}, format="json").json()
    assert off["isActive"] is False and off["nextRunAt"] is None
    on = api.patch(url, {"isActive": True}, format="json").json()
    assert on["nextRunAt"] == body["nextRunAt"]
    manual = api.patch(url, {"scheduleType": "MANUAL"}, format="json").json()
    assert manual["nextRunAt"] is None
    assert AutomationSchedule.objects.get(pk=schedule["id"]).next_run_at is None


def test_a_patch_of_only_the_name_of_a_valid_daily_schedule_passes(api):
    schedule = create(api, name="Daily", scheduleType="DAILY", timeOfDay="23:59")
    response = api.patch(schedule_url(schedule["id"]), {"name": "Daily (renamed)"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["name"] == "Daily (renamed)"
    assert body["nextRunAt"] == schedule["nextRunAt"] is not None  # not a timing change: the slot stays
    assert parse(body["updatedAt"]) > parse(schedule["updatedAt"])

    # A slot that is due but not yet started by the beat stays due through an unrelated edit.
    due = timezone.now() - timedelta(seconds=30)
    AutomationSchedule.objects.filter(pk=schedule["id"]).update(next_run_at=due)
    renamed = api.patch(schedule_url(schedule["id"]), {"name": "Daily again"}).json()
    assert parse(renamed["nextRunAt"]) == due
    retimed = api.patch(schedule_url(schedule["id"]), {"timeOfDay": "23:58"}).json()
    assert parse(retimed["nextRunAt"]) > timezone.now()


def test_delete_answers_204_and_the_runs_keep_their_history(api, dispatched):
    schedule = create(api, name="Short-lived")
    run_id = api.post(schedule_url(schedule["id"], "/run")).json()["runId"]
    response = api.delete(schedule_url(schedule["id"]))
    assert response.status_code == 204 and not response.content
    assert not AutomationSchedule.objects.filter(pk=schedule["id"]).exists()
    run = api.get(f"{RUNS}/{run_id}").json()
    assert run["scheduleId"] is None and run["scheduleName"] == "Short-lived"
    assert error_of(api.get(schedule_url(schedule["id"])), 404)["code"] == "schedule_not_found"
    assert error_of(api.delete(schedule_url(schedule["id"])), 404)["code"] == "schedule_not_found"


def test_unknown_schedules_are_404_schedule_not_found(api):
    for response in (
        api.get(schedule_url(999999)),
        api.patch(schedule_url(999999), {"name": "x"}, format="json"),
        api.delete(schedule_url(999999)),
        api.post(schedule_url(999999, "/run")),
        api.get(schedule_url(999999, "/runs")),
    ):
        error = error_of(response, 404)
        assert error["code"] == "schedule_not_found" and error["details"] == {"schedule_id": 999999}


# --- Validation -----------------------------------------------------------------------------------------------


def test_validation_runs_on_the_effective_config(api):
    manual = create(api, name="Manual", timeOfDay="08:00")
    url = schedule_url(manual["id"])

    # MANUAL -> WEEKLY: the stored timeOfDay counts, the missing dayOfWeek does not pass.
    error = error_of(api.patch(url, {"scheduleType": "WEEKLY"}, format="json"), 400)
    assert set(error["details"]) == {"dayOfWeek"}
    assert error["message"].startswith("dayOfWeek:")
    # MONTHLY without a time or a day: both named.
    api.patch(url, {"timeOfDay": None}, format="json")
    error = error_of(api.patch(url, {"scheduleType": "MONTHLY"}, format="json"), 400)
    assert set(error["details"]) == {"timeOfDay", "dayOfMonth"}
    assert api.patch(url, {"scheduleType": "MONTHLY", "timeOfDay": "07:00", "dayOfMonth": 31}).status_code == 200

    # Removing what the stored type needs is refused too.
    error = error_of(api.patch(url, {"dayOfMonth": None}, format="json"), 400)
    assert set(error["details"]) == {"dayOfMonth"}
    # A mode switch needs what the new mode needs; the stored selection counts.
    error = error_of(api.patch(url, {"ficheSelection": {"mode": "manual"}}, format="json"), 400)
    assert set(error["details"]) == {"ficheSelection.ficheIds"}
    stored = AutomationSchedule.objects.get(pk=manual["id"])
    assert (stored.schedule_type, stored.day_of_month, stored.fiche_selection) == ("MONTHLY", 31, {})


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": ""}, "name"),
        ({"scheduleType": "HOURLY"}, "scheduleType"),
        ({"scheduleType": "DAILY"}, "timeOfDay"),
        ({"scheduleType": "DAILY", "timeOfDay": "24:00"}, "timeOfDay"),
        ({"scheduleType": "DAILY", "timeOfDay": "9:30"}, "timeOfDay"),
        ({"scheduleType": "DAILY", "timeOfDay": "12:60"}, "timeOfDay"),
        ({"scheduleType": "WEEKLY", "timeOfDay": "10:00"}, "dayOfWeek"),
        ({"scheduleType": "WEEKLY", "timeOfDay": "10:00", "dayOfWeek": 8}, "dayOfWeek"),
        ({"scheduleType": "MONTHLY", "timeOfDay": "10:00"}, "dayOfMonth"),
        ({"scheduleType": "MONTHLY", "timeOfDay": "10:00", "dayOfMonth": 32}, "dayOfMonth"),
        ({"dayOfMonth": 0}, "dayOfMonth"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"ficheSelection": {"mode": "relative", "relativeDays": 6}}, "ficheSelection.relativeDays"),
        ({"ficheSelection": {"mode": "relative", "relativeDays": 0}}, "ficheSelection.relativeDays"),
        ({"ficheSelection": {"mode": "weekly"}}, "ficheSelection.mode"),
        ({"ficheSelection": {"mode": "dateRange", "endDate": "2026-02-03"}}, "ficheSelection.startDate"),
        (
            {"ficheSelection": {"mode": "dateRange", "startDate": "2026-02-05", "endDate": "2026-02-03"}},
            "ficheSelection.endDate",
        ),
        (
            {"ficheSelection": {"mode": "dateRange", "startDate": "2026-02-01", "endDate": "2026-02-06"}},
            "ficheSelection.endDate",
        ),
        ({"ficheSelection": {"mode": "dateRange", "startDate": "2026-2-1"}}, "ficheSelection.startDate"),
        ({"ficheSelection": {"mode": "manual"}}, "ficheSelection.ficheIds"),
        ({"ficheSelection": {"mode": "manual", "ficheIds": []}}, "ficheSelection.ficheIds"),
        ({"ficheSelection": {"mode": "relative", "since": "yesterday"}}, "ficheSelection.since"),
        ({"ficheSelection": {"maxFiches": -1}}, "ficheSelection.maxFiches"),
        ({"ficheSelection": {"maxRecordingsPerFiche": -3}}, "ficheSelection.maxRecordingsPerFiche"),
        ({"ficheSelection": "relative"}, "ficheSelection"),
        ({"auditConfigIds": [999999]}, "auditConfigIds"),
        ({"auditConfigIds": [-1]}, "auditConfigIds.0"),
        ({"maxRetries": 11}, "maxRetries"),
        ({"maxRetries": -1}, "maxRetries"),
        ({"notifyEmails": ["ops@example.com", "not-an-email"]}, "notifyEmails.1"),
        ({"webhookSecret": "whsec_!!not-base64!!"}, "webhookSecret"),
        ({"webhookSecret": ""}, "webhookSecret"),
    ],
)
def test_each_invalid_field_is_a_400_naming_it(api, settings, payload, field):
    settings.REFRESH_MAX_RANGE_DAYS = 5
    body = {"name": "Invalid", **payload}
    error = error_of(api.post(SCHEDULES, body, format="json"), 400)
    assert field in error["details"], error
    assert error["message"].startswith(f"{field}:"), error
    assert not AutomationSchedule.objects.exists()


def test_the_range_caps_accept_exactly_the_limit(api, settings):
    settings.REFRESH_MAX_RANGE_DAYS = 5
    relative = create(api, name="Relative", ficheSelection={"mode": "relative", "relativeDays": 5})
    assert relative["ficheSelection"]["relativeDays"] == 5
    dated = create(
        api,
        name="Dated",
        ficheSelection={"mode": "dateRange", "startDate": "2026-02-01", "endDate": "2026-02-05"},
    )
    assert (dated["ficheSelection"]["startDate"], dated["ficheSelection"]["endDate"]) == ("2026-02-01", "2026-02-05")
    manual = create(api, name="Manual", ficheSelection={"mode": "manual", "ficheIds": ["1001", 1002, "1001"]})
    assert manual["ficheSelection"]["ficheIds"] == ["1001", "1002"]
    stored = AutomationSchedule.objects.get(pk=dated["id"]).fiche_selection
    assert date.fromisoformat(stored["start_date"]) == date(2026, 2, 1)  # the run engine's format


def test_unknown_audit_config_ids_are_named(api, config_ids):
    error = error_of(api.post(SCHEDULES, {"name": "x", "auditConfigIds": [config_ids[0], 424242]}), 400)
    assert "424242" in error["details"]["auditConfigIds"][0]
    body = create(api, name="x", auditConfigIds=[config_ids[1], config_ids[0], config_ids[1]])
    assert body["auditConfigIds"] == [config_ids[1], config_ids[0]]


def test_inactive_audit_configs_are_refused_when_given_not_when_deactivated_later(api, config_ids):
    schedule = create(api, name="x", auditConfigIds=[config_ids[0]])
    AuditConfig.objects.filter(pk=config_ids[1]).update(is_active=False)
    error = error_of(api.post(SCHEDULES, {"name": "y", "auditConfigIds": [config_ids[0], config_ids[1]]}), 400)
    assert error["details"]["auditConfigIds"] == [f"Inactive audit config id(s): {config_ids[1]}."]
    # A config deactivated after the schedule was made does not block an unrelated edit.
    AuditConfig.objects.filter(pk=config_ids[0]).update(is_active=False)
    assert api.patch(f"{SCHEDULES}/{schedule['id']}", {"name": "renamed"}, format="json").status_code == 200


# --- The webhook URL and its secret ------------------------------------------------------------------------


def test_the_webhook_url_goes_through_the_ssrf_guard(api, settings):
    settings.WEBHOOK_ALLOWED_ORIGINS = []
    for url in ("http://127.0.0.1/hook", "http://169.254.169.254/latest/meta-data", "http://localhost:8000/x"):
        error = error_of(api.post(SCHEDULES, {"name": "Hooked", "webhookUrl": url}, format="json"), 400)
        assert error["code"] == "unsafe_webhook_url", error
        assert "webhookUrl" in error["details"] and error["details"]["url"] == url
    error = error_of(api.post(SCHEDULES, {"name": "Hooked", "webhookUrl": "ftp://example.com/x"}), 400)
    assert error["code"] == "unsafe_webhook_url"
    assert not AutomationSchedule.objects.exists()

    # An allowlisted origin may be private (a trusted internal receiver); other origins are refused.
    settings.WEBHOOK_ALLOWED_ORIGINS = [ALLOWED]
    schedule = create(api, name="Hooked", webhookUrl=f"{ALLOWED}/hook")
    assert schedule["webhookUrl"] == f"{ALLOWED}/hook"
    url = schedule_url(schedule["id"])
    error = error_of(api.patch(url, {"webhookUrl": "http://127.0.0.1/hook"}, format="json"), 400)
    assert error["code"] == "unsafe_webhook_url" and "WEBHOOK_ALLOWED_ORIGINS" in error["details"]["reason"]
    assert AutomationSchedule.objects.get(pk=schedule["id"]).webhook_url == f"{ALLOWED}/hook"
    # An unrelated edit does not check the stored URL again; null or "" removes it.
    settings.WEBHOOK_ALLOWED_ORIGINS = []
    assert api.patch(url, {"name": "Renamed"}, format="json").status_code == 200
    assert api.patch(url, {"webhookUrl": ""}, format="json").json()["webhookUrl"] is None


def test_the_secret_is_never_returned(api, config_ids, settings, dispatched):
    settings.WEBHOOK_ALLOWED_ORIGINS = [ALLOWED]
    created = api.post(SCHEDULES, full_payload(config_ids), format="json")
    schedule_id = created.json()["id"]
    url = schedule_url(schedule_id)
    responses = [
        created,
        api.get(url),
        api.get(SCHEDULES),
        api.patch(url, {"name": "Renamed", "webhookSecret": SECRET}, format="json"),
    ]
    run_id = api.post(url + "/run").json()["runId"]
    responses += [api.get(f"{RUNS}/{run_id}"), api.get(RUNS), api.get(url + "/runs")]
    for response in responses:
        assert response.status_code in (200, 201), response.content
        assert SECRET not in response.content.decode()
        assert "webhookSecret" not in response.content.decode()
    assert responses[3].json()["hasWebhookSecret"] is True

    # Omitted: kept. Null: removed.
    assert api.patch(url, {"notifyOnComplete": False}, format="json").json()["hasWebhookSecret"] is True
    assert AutomationSchedule.objects.get(pk=schedule_id).webhook_secret == SECRET
    assert api.patch(url, {"webhookSecret": None}, format="json").json()["hasWebhookSecret"] is False
    assert AutomationSchedule.objects.get(pk=schedule_id).webhook_secret is None


# --- Grants ---------------------------------------------------------------------------------------------------


def test_grants(api_client, auth_client, reader, outsider, writer, dispatched):
    schedule = create(auth_client(writer), name="Guarded")
    run = AutomationRun.objects.create(config={"name": "Guarded"})
    reads = [SCHEDULES, schedule_url(schedule["id"]), schedule_url(schedule["id"], "/runs"), RUNS, f"{RUNS}/{run.pk}"]
    writes = [
        ("post", SCHEDULES, {"name": "New"}),
        ("patch", schedule_url(schedule["id"]), {"name": "Changed"}),
        ("post", schedule_url(schedule["id"], "/run"), None),
        ("delete", schedule_url(schedule["id"]), None),
    ]
    for path in reads:
        assert error_of(api_client.get(path), 401)["code"] == "not_authenticated"
        error = error_of(auth_client(outsider).get(path), 403)
        assert error["code"] == "permission_denied" and error["details"] == {"required": "automation.read"}
        assert auth_client(reader).get(path).status_code == 200
    for method, path, body in writes:
        assert error_of(getattr(api_client, method)(path, body, format="json"), 401)["code"] == "not_authenticated"
        for user in (outsider, reader):
            error = error_of(getattr(auth_client(user), method)(path, body, format="json"), 403)
            assert error["details"] == {"required": "automation.write"}
    assert AutomationSchedule.objects.get().name == "Guarded"
    assert AutomationRun.objects.count() == 1 and dispatched == []


# --- The manual trigger ---------------------------------------------------------------------------------------


def test_run_now_answers_202_and_asks_the_orchestrator_once_after_commit(
    api, writer, dispatched, django_capture_on_commit_callbacks
):
    schedule = create(api, name="Inactive", isActive=False)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post(schedule_url(schedule["id"], "/run"))
        assert response.status_code == 202, response.content
        assert dispatched == []  # nothing is sent before the run's row is committed
    body = response.json()
    assert set(body) == {"runId"}
    for callback in callbacks:
        callback()
    assert dispatched == [("automation.tasks.automation_run_start", (body["runId"],))]

    run = AutomationRun.objects.get(pk=body["runId"])
    assert (run.schedule_id, run.trigger, run.status, run.slot) == (schedule["id"], "manual", "pending", None)
    assert run.requested_by == writer
    assert run.config["name"] == "Inactive" and "webhook_secret" not in run.config
    assert AutomationSchedule.objects.get(pk=schedule["id"]).last_run_at is not None
    assert api.get(schedule_url(schedule["id"])).json()["lastRunAt"] is not None


def test_run_now_of_an_unknown_schedule_sends_nothing(api, dispatched, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert error_of(api.post(schedule_url(424242, "/run")), 404)["code"] == "schedule_not_found"
    assert dispatched == [] and not AutomationRun.objects.exists()


# --- Runs ---------------------------------------------------------------------------------------------------

T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)


def make_run(schedule: AutomationSchedule | None, *, minutes: int, **fields: Any) -> AutomationRun:
    run = AutomationRun.objects.create(
        schedule=schedule,
        config={"name": fields.pop("name", schedule.name if schedule else "Gone"), "webhook_secret": SECRET},
        **fields,
    )
    AutomationRun.objects.filter(pk=run.pk).update(created_at=T0 + timedelta(minutes=minutes))
    run.refresh_from_db()
    return run


@pytest.fixture
def history(db) -> dict[str, Any]:
    nightly = AutomationSchedule.objects.create(name="Nightly", schedule_type="DAILY", time_of_day="02:00")
    weekly = AutomationSchedule.objects.create(
        name="Weekly", schedule_type="WEEKLY", time_of_day="03:00", day_of_week=1
    )
    done = make_run(
        nightly,
        minutes=0,
        name="Nightly (old name)",
        trigger="scheduled",
        slot=T0,
        status="partial",
        date_from=date(2026, 2, 1),
        date_to=date(2026, 2, 2),
        revalidation="done",
        total_fiches=5,
        successful=2,
        failed=1,
        ignored=1,
        skipped=1,
        started_at=T0 + timedelta(seconds=2),
        completed_at=T0 + timedelta(seconds=92, milliseconds=500),
    )
    failed = make_run(weekly, minutes=10, status="failed", error="CRM down", completed_at=T0 + timedelta(minutes=11))
    running = make_run(nightly, minutes=20, status="running", started_at=T0 + timedelta(minutes=20))
    rows = [
        ("1001", "successful", "done", None, None, 2, uuid.uuid4(), 1, ["a-1", "a-2"]),
        ("1002", "successful", "done", "already transcribed", None, 1, None, 0, ["a-3"]),
        ("1003", "failed", "done", None, "transcription: provider error", 1, uuid.uuid4(), 2, []),
        ("1004", "ignored", "done", "no recordings", None, 0, None, 0, []),
        ("1005", "skipped", "done", "stopped after a failure", None, None, None, 0, []),
        ("1006", "pending", "audit", None, None, 3, uuid.uuid4(), 1, ["a-4"]),
    ]
    AutomationRunFicheResult.objects.bulk_create(
        AutomationRunFicheResult(
            run=done,
            fiche_id=fiche_id,
            status=status,
            step=step,
            reason=reason,
            error=error,
            recordings_count=recordings,
            transcription_run_id=tx,
            transcription_attempts=attempts,
            audit_ids=audits,
        )
        for fiche_id, status, step, reason, error, recordings, tx, attempts, audits in rows
    )
    return {"nightly": nightly, "weekly": weekly, "done": done, "failed": failed, "running": running}


def test_runs_list_newest_first_with_filters_and_pagination(api, history):
    page = api.get(RUNS).json()
    assert page["count"] == 3
    ids = [run["id"] for run in page["results"]]
    assert ids == [str(history[k].pk) for k in ("running", "failed", "done")]
    for run in page["results"]:
        assert set(run) == RUN_KEYS
    done = page["results"][2]
    assert done == {
        "id": str(history["done"].pk),
        "scheduleId": history["nightly"].pk,
        "scheduleName": "Nightly (old name)",  # the snapshot's, not the schedule's name now
        "trigger": "scheduled",
        "slot": T0.isoformat(),
        "status": "partial",
        "dateFrom": "2026-02-01",
        "dateTo": "2026-02-02",
        "revalidation": "done",
        "totalFiches": 5,
        "successful": 2,
        "failed": 1,
        "ignored": 1,
        "skipped": 1,
        "error": None,
        "createdAt": T0.isoformat(),
        "startedAt": (T0 + timedelta(seconds=2)).isoformat(),
        "completedAt": (T0 + timedelta(seconds=92, milliseconds=500)).isoformat(),
        "durationMs": 90_500,
    }
    running = page["results"][0]
    assert running["durationMs"] is None and running["completedAt"] is None
    assert page["results"][1]["durationMs"] == 60_000  # no startedAt: from its creation

    failed = api.get(RUNS, {"status": "failed"}).json()
    assert [r["id"] for r in failed["results"]] == [str(history["failed"].pk)]
    second = api.get(RUNS, {"limit": 1, "offset": 1}).json()
    assert second["count"] == 3 and [r["id"] for r in second["results"]] == [str(history["failed"].pk)]
    assert second["next"] and second["previous"] is not None
    assert error_of(api.get(RUNS, {"status": "exploded"}), 400)["code"] == "validation_error"


def test_a_schedules_runs(api, history):
    page = api.get(schedule_url(history["nightly"].pk, "/runs")).json()
    assert [r["id"] for r in page["results"]] == [str(history["running"].pk), str(history["done"].pk)]
    assert {r["scheduleId"] for r in page["results"]} == {history["nightly"].pk}
    partial = api.get(schedule_url(history["nightly"].pk, "/runs"), {"status": "partial"}).json()
    assert [r["id"] for r in partial["results"]] == [str(history["done"].pk)]
    weekly = api.get(schedule_url(history["weekly"].pk, "/runs")).json()
    assert [r["id"] for r in weekly["results"]] == [str(history["failed"].pk)]


def test_run_detail_has_its_config_fiches_and_the_legacy_result_summary(api, history):
    response = api.get(f"{RUNS}/{history['done'].pk}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == RUN_KEYS | {"config", "fiches", "resultSummary"}
    assert body["config"] == {"name": "Nightly (old name)"}  # a secret in a snapshot never goes out
    assert SECRET not in response.content.decode()
    assert [set(f) for f in body["fiches"]] == [FICHE_KEYS] * 6
    assert body["fiches"][2] == {
        "ficheId": "1003",
        "status": "failed",
        "step": "done",
        "reason": None,
        "error": "transcription: provider error",
        "recordingsCount": 1,
        "transcriptionAttempts": 2,
        "auditIds": [],
    }
    assert [f["ficheId"] for f in body["fiches"]] == ["1001", "1002", "1003", "1004", "1005", "1006"]
    assert body["fiches"][0]["auditIds"] == ["a-1", "a-2"]
    assert body["resultSummary"] == {
        "total": 6,
        "successful": ["1001", "1002"],
        "failed": [{"ficheId": "1003", "error": "transcription: provider error"}],
        "ignored": [{"ficheId": "1004", "reason": "no recordings"}],
        "skipped": [{"ficheId": "1005", "reason": "stopped after a failure"}],
        "transcriptions": 3,
        "audits": 4,
    }
    empty = api.get(f"{RUNS}/{history['failed'].pk}").json()
    assert empty["fiches"] == []
    assert empty["resultSummary"] == {
        "total": 0,
        "successful": [],
        "failed": [],
        "ignored": [],
        "skipped": [],
        "transcriptions": 0,
        "audits": 0,
    }


def test_unknown_runs_are_404_run_not_found(api):
    for run_id in (str(uuid.uuid4()), "not-a-uuid"):
        error = error_of(api.get(f"{RUNS}/{run_id}"), 404)
        assert error["code"] == "run_not_found" and error["details"] == {"run_id": run_id}


def test_no_trailing_slashes(api):
    assert api.get(f"{SCHEDULES}/").status_code == 404
    assert api.get(f"{RUNS}/").status_code == 404


# --- maxFiches --------------------------------------------------------------------------------------------------


def test_max_fiches_may_lower_the_setting_never_raise_it(api, settings):
    settings.AUTOMATION_MAX_FICHES = 50
    error = error_of(api.post(SCHEDULES, {"name": "Greedy", "ficheSelection": {"maxFiches": 51}}, format="json"), 400)
    assert set(error["details"]) == {"ficheSelection.maxFiches"} and "50" in error["message"]
    assert not AutomationSchedule.objects.exists()
    schedule = create(api, name="Modest", ficheSelection={"maxFiches": 50})
    assert schedule["ficheSelection"]["maxFiches"] == 50
    url = schedule_url(schedule["id"])
    error = error_of(api.patch(url, {"ficheSelection": {"maxFiches": 500}}, format="json"), 400)
    assert set(error["details"]) == {"ficheSelection.maxFiches"}
    # Lowered since: an unrelated edit is not blocked (a run takes at most the setting anyway).
    settings.AUTOMATION_MAX_FICHES = 10
    assert api.patch(url, {"name": "Renamed"}, format="json").status_code == 200


# --- The owner and the scope of what a schedule names ------------------------------------------------------------

DAY = date(2026, 2, 4)


@pytest.fixture
def cached(db) -> None:
    for fiche_id, groupe in (("L1", "Lyon-1"), ("L2", "Lyon-1"), ("M1", "Marseille")):
        FicheCache.objects.create(fiche_id=fiche_id, sales_date=DAY, groupe=groupe)


@pytest.fixture
def lyon(make_owner):
    """automation.write; fiches, transcriptions and audits in the Lyon-1 group."""
    return make_owner("GROUP", groupes=["Lyon-1"], email="lyon@example.com")


def manual(*fiche_ids: str, **extra: Any) -> dict[str, Any]:
    return {"name": "Manual", "ficheSelection": {"mode": "manual", "ficheIds": list(fiche_ids)}, **extra}


def json_client(auth_client, user):
    client = auth_client(user)
    client.default_format = "json"
    return client


def test_a_schedule_names_only_fiches_in_its_owners_scope_and_unknown_ids_are_answered_alike(auth_client, lyon, cached):
    client = json_client(auth_client, lyon)
    created = client.post(SCHEDULES, manual("L1", "L2"), format="json")
    assert created.status_code == 201, created.content
    assert created.json()["ownerId"] == lyon.pk
    assert AutomationSchedule.objects.get().owner == lyon

    answers = [
        client.post(SCHEDULES, manual("L1", fiche_id), format="json")
        for fiche_id in ("M1", "NOT-A-FICHE-404", "2227000")  # foreign; unknown; real in the CRM, not cached
    ]
    bodies = [error_of(response, 403) for response in answers]
    assert bodies[0] == bodies[1] == bodies[2]
    assert bodies[0]["code"] == "scope_denied" and set(bodies[0]["details"]) == {"ficheSelection.ficheIds"}
    for body in bodies:
        for fiche_id in ("L1", "M1", "NOT-A-FICHE-404", "2227000"):
            assert fiche_id not in str(body)
    error = error_of(client.post(SCHEDULES, {"name": "G", "ficheSelection": {"groupes": ["Marseille"]}}), 403)
    assert error["code"] == "scope_denied" and set(error["details"]) == {"ficheSelection.groupes"}
    assert "Marseille" not in str(error)
    assert client.post(SCHEDULES, {"name": "G", "ficheSelection": {"groupes": ["Lyon-1"]}}).status_code == 201
    assert AutomationSchedule.objects.count() == 2


def test_the_scope_checked_is_that_of_the_keys_the_run_uses(make_owner, auth_client, cached):
    # Reads every fiche, transcribes Lyon-1's; no audits grant at all.
    owner = make_owner("ALL", scopes={"transcriptions": "GROUP", "audits": None}, groupes=["Lyon-1"])
    client = json_client(auth_client, owner)
    assert error_of(client.post(SCHEDULES, manual("L1"), format="json"), 403)["code"] == "scope_denied"
    ok = client.post(SCHEDULES, manual("L1", runAudits=False), format="json")
    assert ok.status_code == 201, ok.content
    url = schedule_url(ok.json()["id"])
    error = error_of(client.patch(url, {"ficheSelection": {"ficheIds": ["L1", "M1"]}}, format="json"), 403)
    assert set(error["details"]) == {"ficheSelection.ficheIds"}
    assert error_of(client.patch(url, {"runAudits": True}, format="json"), 403)["code"] == "scope_denied"
    # Without transcription, Marseille's fiches are in scope (fiches read: ALL).
    assert client.patch(url, {"runTranscription": False, "ficheSelection": {"ficheIds": ["M1"]}}).status_code == 200
    # An ALL owner may name an id the cache does not know.
    boss = make_owner("ALL")
    assert json_client(auth_client, boss).post(SCHEDULES, manual("NOT-CACHED-1")).status_code == 201


def test_an_edit_is_checked_against_the_owner_and_the_editor(make_owner, auth_client, lyon, cached):
    boss = json_client(auth_client, make_owner("ALL"))
    lyons_client = json_client(auth_client, lyon)
    lyons = lyons_client.post(SCHEDULES, manual("L1")).json()
    bosss = boss.post(SCHEDULES, manual("M1")).json()

    # The boss may name M1, the Lyon owner may not: the schedule acts for its owner.
    error = error_of(boss.patch(schedule_url(lyons["id"]), {"ficheSelection": {"ficheIds": ["M1"]}}), 403)
    assert error["code"] == "scope_denied"
    # The Lyon user may not use the boss's wider scope to name a fiche outside their own.
    error = error_of(lyons_client.patch(schedule_url(bosss["id"]), {"ficheSelection": {"ficheIds": ["M1"]}}), 403)
    assert error["code"] == "scope_denied"
    edited = lyons_client.patch(schedule_url(bosss["id"]), {"ficheSelection": {"ficheIds": ["L2"]}})
    assert edited.status_code == 200, edited.content
    assert edited.json()["ownerId"] == bosss["ownerId"]  # an edit does not change the owner
    assert AutomationSchedule.objects.get(pk=lyons["id"]).fiche_selection["fiche_ids"] == ["L1"]


# --- What a reader sees -------------------------------------------------------------------------------------------


def test_webhook_urls_and_emails_are_shown_only_to_automation_writers(api, reader, auth_client, settings, dispatched):
    settings.WEBHOOK_ALLOWED_ORIGINS = [ALLOWED]
    schedule = create(api, name="Notifying", webhookUrl=f"{ALLOWED}/hook", notifyEmails=["ops@example.com"])
    run_id = api.post(schedule_url(schedule["id"], "/run")).json()["runId"]
    as_writer = api.get(f"{RUNS}/{run_id}").json()["config"]
    assert (as_writer["webhookUrl"], as_writer["notifyEmails"]) == (f"{ALLOWED}/hook", ["ops@example.com"])
    assert schedule["webhookUrl"] == f"{ALLOWED}/hook" and schedule["notifyEmails"] == ["ops@example.com"]

    client = auth_client(reader)
    seen = [client.get(schedule_url(schedule["id"])).json(), client.get(SCHEDULES).json()["results"][0]]
    seen.append(client.get(f"{RUNS}/{run_id}").json()["config"])
    for body in seen:
        assert body["webhookUrl"] is None and body["notifyEmails"] is None
    for response in (client.get(schedule_url(schedule["id"])), client.get(SCHEDULES), client.get(f"{RUNS}/{run_id}")):
        assert "127.0.0.1:9999" not in response.content.decode() and "ops@example.com" not in response.content.decode()


@pytest.fixture
def lyon_reader(make_role, make_user):
    """automation.read; fiches of Lyon-1; audits of their own sales (u-7)."""
    role = make_role("lyon-reader", automation=("r", "ALL"), fiches=("r", "GROUP"), audits=("r", "SELF"))
    return make_user(role, email="lyon-reader@example.com", groupes=["Lyon-1"], crm_user_id="u-7")


def test_a_run_shows_a_reader_only_the_fiches_they_may_read(api, auth_client, lyon_reader, history):
    for fiche_id, groupe, seller in (("1001", "Lyon-1", "u-7"), ("1003", "Lyon-1", "u-8"), ("1004", "Paris-1", "u-7")):
        FicheCache.objects.create(fiche_id=fiche_id, sales_date=DAY, groupe=groupe, crm_user_id=seller)
    done = history["done"]
    done.config = {**done.config, "fiche_selection": {"mode": "manual", "fiche_ids": ["1001", "1002", "1004"]}}
    done.save()
    body = auth_client(lyon_reader).get(f"{RUNS}/{done.pk}").json()
    # 1002, 1005 and 1006 are not cached (only an ALL reader sees them); 1004 is another group's.
    assert [f["ficheId"] for f in body["fiches"]] == ["1001", "1003"]
    assert body["fiches"][0]["auditIds"] == ["a-1", "a-2"]  # their own sale: its audits are theirs to read
    assert body["config"]["ficheSelection"]["ficheIds"] == ["1001"]
    assert body["resultSummary"] == {
        "total": 2,
        "successful": ["1001"],
        "failed": [{"ficheId": "1003", "error": "transcription: provider error"}],
        "ignored": [],
        "skipped": [],
        "transcriptions": 2,
        "audits": 2,
    }
    # The run's counts are its own, whoever reads them.
    assert (body["totalFiches"], body["successful"], body["failed"], body["ignored"]) == (5, 2, 1, 1)
    shown = str({key: body[key] for key in ("fiches", "resultSummary", "config", "error")})
    for foreign in ("1002", "1004", "1005", "1006", "no recordings", "a-3", "a-4"):
        assert foreign not in shown, foreign
    # Runs are listed for every automation.read holder (counts only).
    assert auth_client(lyon_reader).get(RUNS).json()["count"] == 3
    # A reader with ALL sees every row.
    assert len(api.get(f"{RUNS}/{done.pk}").json()["fiches"]) == 6


def test_a_schedule_shows_a_reader_only_the_fiche_ids_they_may_read(api, auth_client, lyon_reader, cached):
    schedule = create(api, name="Mixed", ficheSelection={"mode": "manual", "ficheIds": ["L1", "M1", "UNCACHED"]})
    assert schedule["ficheSelection"]["ficheIds"] == ["L1", "M1", "UNCACHED"]  # the writer reads everything
    client = auth_client(lyon_reader)
    assert client.get(schedule_url(schedule["id"])).json()["ficheSelection"]["ficheIds"] == ["L1"]
    assert client.get(SCHEDULES).json()["results"][0]["ficheSelection"]["ficheIds"] == ["L1"]


def test_only_the_owner_or_an_automation_manager_may_change_delete_or_run_a_schedule(
    auth_client, make_role, make_user, dispatched, cached
):
    """A run acts in its owner's scope: another writer (automation.write, scope GROUP) cannot spend that
    reach by editing, deleting or running the schedule; the owner and an ALL automation writer can."""
    grants = {"fiches": ("rw", "GROUP"), "transcriptions": ("rw", "GROUP"), "audits": ("rw", "GROUP")}
    narrow_role = make_role("auto-group", automation=("rw", "GROUP"), **grants)
    owner = make_user(narrow_role, email="owner@example.com", groupes=["Lyon-1"])
    colleague = make_user(narrow_role, email="colleague@example.com", groupes=["Lyon-1"])
    manager = make_user(make_role("auto-manager", automation=("rw", "ALL")), email="manager@example.com")
    created = json_client(auth_client, owner).post(SCHEDULES, manual("L1"), format="json")
    assert created.status_code == 201, created.content
    url = schedule_url(created.json()["id"])

    other = json_client(auth_client, colleague)
    for response in (
        other.patch(url, {"ficheSelection": {"ficheIds": ["L2"]}}, format="json"),
        other.post(f"{url}/run", format="json"),
        other.delete(url),
    ):
        assert error_of(response, 403)["code"] == "not_schedule_owner"
    assert not AutomationRun.objects.exists() and dispatched == []
    assert json_client(auth_client, owner).patch(url, {"name": "Mine"}, format="json").status_code == 200
    assert json_client(auth_client, manager).post(f"{url}/run", format="json").status_code == 202
    assert json_client(auth_client, manager).delete(url).status_code == 204
