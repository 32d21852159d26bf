"""Config versions and evaluations without a worker: drafts (the active version stays, listed, never run by
default; an unchanged content makes no version), activation (who, from which evaluation; refusals), the
evaluation set (the most recent reviewed fiches of the user's audits write scope, or named fiches: scope, size,
the batch budget), its audits (two per fiche, one for the active version itself, ``purpose=evaluation``), its
end exactly once (the audits' finish hook, a second call, racing calls, the reconciler) with its events (whole
on the requester's channel, notify-only on the global one), the result's arithmetic on a hand-built case, and
the places an evaluation's audits never reach (listings, calibration, trust, queues, disputes, automation).

Audits are ended by hand: their step results and verdicts are written as a worker would, then the real
updater (``finish.audit_step_settled``) ends them, and its finish hook settles the evaluation."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import User
from audits.models import (
    Audit,
    AuditConfig,
    AuditConfigVersion,
    AuditStepResult,
    Citation,
    ControlPointResult,
    ControlPointTrust,
    Evaluation,
    HumanReview,
)
from audits.selectors import audits_for
from audits.services import configs, evaluations, finish, reviews
from automation.models import AutomationRun
from automation.services import runs as automation_runs
from fiches.models import FicheCache
from review_queues.models import QueueItem, ReviewQueue
from review_queues.services import backfill, enter_audit

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offline_llm", "sent")]

CONFIGS = "/api/audit-configs"
SALE_DAY = date(2026, 2, 2)
T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)
WITHDRAWAL = 7  # "Droit de rétractation": a critical step with one critical point
RECORDING = 4  # "Information sur l'enregistrement": four points, (4, 2) not critical
NEW_WORDING = "L'agent indique-t-il qu'une copie de l'enregistrement peut être obtenue sur simple demande écrite ?"


# --- Fixtures and helpers ------------------------------------------------------------------------------------


@pytest.fixture
def pusher(settings, monkeypatch) -> list[dict]:
    """What Pusher would be sent (channel, event name, encoded data) once the publishing transaction commits."""
    settings.PUSHER_APP_ID, settings.PUSHER_KEY, settings.PUSHER_SECRET = "1", "key", "secret"
    delivered: list[dict] = []
    monkeypatch.setattr("realtime.publisher._deliver", lambda messages: delivered.extend(messages))
    return delivered


def sent_events(delivered: list[dict], name: str) -> list[tuple[str, dict]]:
    return [(m["channel"], json.loads(m["data"])) for m in delivered if m["name"] == name]


def fiche(fiche_id: str, groupe: str, *, agent: str | None = None, on: date = SALE_DAY) -> FicheCache:
    return FicheCache.objects.create(
        fiche_id=fiche_id,
        sales_date=on,
        groupe=groupe,
        crm_user_id=agent,
        details_success=True,
        details_fetched_at=timezone.now(),
    )


@pytest.fixture
def fiches() -> dict[str, FicheCache]:
    return {
        "L1": fiche("F-L1", "Lyon-2", agent="agent-1"),
        "L2": fiche("F-L2", "Lyon-2", agent="agent-1"),
        "L3": fiche("F-L3", "Lyon-2"),
        "L4": fiche("F-L4", "Lyon-2"),
        "P1": fiche("F-P1", "Paris-Est"),
    }


@pytest.fixture
def manager(make_role, make_user) -> User:
    role = make_role("manager", audit_configs=("rw", "ALL"), audits=("rw", "ALL"))
    return make_user(role, email="manager@example.com")


@pytest.fixture
def lyon_manager(make_role, make_user) -> User:
    role = make_role("lyon-manager", audit_configs=("rw", "ALL"), audits=("rw", "GROUP"))
    return make_user(role, email="lyon-manager@example.com", groupes=["Lyon-2"])


@pytest.fixture
def lyon_reader(make_role, make_user) -> User:
    role = make_role("lyon-reader", audit_configs=("r", "ALL"), audits=("r", "GROUP"))
    return make_user(role, email="lyon-reader@example.com", groupes=["Lyon-2"])


@pytest.fixture
def reader(make_role, make_user) -> User:
    role = make_role("reader", audit_configs=("r", "ALL"), audits=("r", "ALL"))
    return make_user(role, email="reader@example.com")


def active(config: AuditConfig) -> AuditConfigVersion:
    config.refresh_from_db()
    assert config.current_version is not None
    return config.current_version


def steps_with(config: AuditConfig, questions: dict[tuple[int, int], str]) -> list[dict[str, Any]]:
    """The active version's steps as a PATCH body, with some questions reworded ({(position, index): text})."""
    steps = configs.config_content(config)["steps"]
    for step in steps:
        position = step.pop("position")
        for point in step["control_points"]:
            index = point.pop("index")
            point["question"] = questions.get((position, index), point["question"])
    return steps


def draft(config: AuditConfig, user: User | None = None, wording: str = NEW_WORDING) -> AuditConfigVersion:
    """A draft version (the service, as PATCH draft=true does) rewording point (4, 2)."""
    before = set(config.versions.values_list("pk", flat=True))
    configs.config_update(
        config_id=config.pk, patch={"steps": steps_with(config, {(RECORDING, 2): wording}), "draft": True}, user=user
    )
    return config.versions.exclude(pk__in=before).get()


def production_audit(
    fiche_row: FicheCache,
    config: AuditConfig,
    verdicts: dict[tuple[int, int], str] | None = None,
    *,
    version: AuditConfigVersion | None = None,
    completed_at: datetime | None = None,
) -> Audit:
    """A completed production audit whose every point passed, except ``verdicts``."""
    version = version or active(config)
    verdicts = verdicts or {}
    audit = Audit.objects.create(
        fiche=fiche_row,
        config=config,
        config_version=version,
        status="completed",
        completed_at=completed_at or timezone.now(),
    )
    for step in version.steps.all():
        row = AuditStepResult.objects.create(audit=audit, step=step, position=step.position, status="completed")
        for point in step.control_points.all():
            status = verdicts.get((step.position, point.index), "pass")
            ControlPointResult.objects.create(step_result=row, index=point.index, ai_status=status, status=status)
        reviews.rescore_step(row)
    reviews.recompute_audit(audit)
    audit.refresh_from_db()
    return audit


def review(audit: Audit, position: int, index: int, status: str, user: User | None = None) -> HumanReview:
    return reviews.review_create(
        audit=audit, position=position, control_point_index=index, status=status, comment="Relu.", user=user
    ).reviews[0]


def end_by_hand(
    audit: Audit,
    verdicts: dict[tuple[int, int], str] | None = None,
    *,
    quotes: dict[tuple[int, int], list[str]] | None = None,
    unguided: dict[tuple[int, int], str] | None = None,
    tokens: int = 10,
) -> Audit:
    """What the workers do: every step stored with its verdicts (all pass except ``verdicts``; ``unguided``: the
    AI's verdict before a reviewer-guided rerun), verified ``quotes`` and one rejected quote per point, then
    the audit's real updater ends it (its finish hook settles its evaluation after commit)."""
    verdicts, quotes, unguided = verdicts or {}, quotes or {}, unguided or {}
    now = timezone.now()
    Audit.objects.filter(pk=audit.pk).update(status="running", started_at=now, dispatched_at=now)
    for step in audit.config_version.steps.all():
        row = AuditStepResult.objects.create(
            audit=audit,
            step=step,
            position=step.position,
            status="completed",
            prompt_tokens=tokens,
            completed_at=now,
        )
        for point in step.control_points.all():
            key = (step.position, point.index)
            status = verdicts.get(key, "pass")
            result = ControlPointResult.objects.create(
                step_result=row,
                index=point.index,
                ai_status=status,
                status=status,
                unguided_status=unguided.get(key),
                guided=key in unguided,
            )
            for n, text in enumerate(quotes.get(key, [])):
                Citation.objects.create(
                    control_point=result, position=n, quote=text, text=text, verified=True, call_id="c1", start=1.0
                )
            Citation.objects.create(
                control_point=result, position=99, quote="jamais dit", verified=False, reason="not_found"
            )
        reviews.rescore_step(row)
    assert finish.audit_step_settled(audit_id=str(audit.pk))
    audit.refresh_from_db()
    assert audit.status == "completed"
    return audit


def evaluation_audit(evaluation: Evaluation, fiche_row: FicheCache, version: AuditConfigVersion) -> Audit:
    return Audit.objects.select_related("config_version", "fiche").get(
        evaluation=evaluation, fiche=fiche_row, config_version=version
    )


def evaluate(config: AuditConfig, user: User, fiche_ids: list[str], version: int | None = None) -> Evaluation:
    return evaluations.evaluation_create(
        config_id=config.pk, version_number=version, fiche_ids=fiche_ids, tools_mode=False, user=user
    )


def error(response) -> str:
    return response.json()["error"]["code"]


# --- Drafts and activation -----------------------------------------------------------------------------------


def test_a_draft_keeps_the_active_version_is_listed_and_never_runs_by_default(
    config, fiches, manager, reader, auth_client
):
    client = auth_client(manager)
    v1 = active(config)
    body = {"steps": steps_with(config, {(RECORDING, 2): NEW_WORDING}), "draft": True}
    patched = client.patch(f"{CONFIGS}/{config.pk}", body, format="json")
    assert patched.status_code == 200, patched.content
    # The answer is the config as it runs: still version 1 with its own wording.
    assert patched.json()["version"] == 1
    assert patched.json()["steps"][RECORDING - 1]["control_points"][2]["question"] != NEW_WORDING
    assert active(config) == v1
    v2 = config.versions.get(version=2)
    assert v2.is_draft and v2.activated_at is None and v2.activated_by is None
    assert v2.steps.get(position=RECORDING).control_points.get(index=2).question == NEW_WORDING

    # The same content as the active version again (draft or not), or only is_active: no version.
    for same in ({"name": config.name, "draft": True}, {"steps": steps_with(config, {}), "draft": True}, {}):
        assert client.patch(f"{CONFIGS}/{config.pk}", same, format="json").status_code == 200
    assert config.versions.count() == 2

    listed = auth_client(reader).get(f"{CONFIGS}/{config.pk}/versions")
    assert listed.status_code == 200, listed.content
    rows = listed.json()
    assert [(r["version"], r["is_draft"], r["is_active"]) for r in rows] == [(2, True, False), (1, False, True)]
    assert (rows[0]["created_by"], rows[0]["activated_at"], rows[0]["activated_by"]) == (
        "manager@example.com",
        None,
        None,
    )
    assert rows[1]["activated_at"] is not None and rows[1]["activated_from_evaluation"] is None
    assert auth_client(reader).get(f"{CONFIGS}/999999/versions").status_code == 404

    # A run uses the active version, never the draft.
    run = client.post("/api/audits/run", {"fiche_id": "F-L1", "audit_config_id": config.pk}, format="json")
    assert run.status_code == 202, run.content
    audit = Audit.objects.get(pk=run.json()["audit_id"])
    assert (audit.config_version, audit.purpose, audit.evaluation_id) == (v1, "production", None)


def test_activation_records_who_and_the_evaluation_behind_it_and_refuses_what_does_not_fit(
    config, fiches, manager, reader, make_role, make_user, auth_client
):
    v1 = active(config)
    v2 = draft(config, manager)
    v3 = draft(config, manager, wording="Une autre formulation ?")
    evaluation = evaluate(config, manager, ["F-L1"], version=2)
    assert evaluation.baseline_version == v1
    client = auth_client(manager)
    url = f"{CONFIGS}/{config.pk}/versions"

    # An evaluation of another version, or none such: 400, nothing changes.
    other = client.post(f"{url}/3/activate", {"evaluation_id": str(evaluation.pk)}, format="json")
    assert other.status_code == 400 and error(other) == "evaluation_not_found"
    unknown = client.post(f"{url}/3/activate", {"evaluation_id": str(uuid.uuid4())}, format="json")
    assert unknown.status_code == 400 and error(unknown) == "evaluation_not_found"
    assert client.post(f"{url}/3/activate", {"evaluation_id": "not-a-uuid"}, format="json").status_code == 400
    missing = client.post(f"{url}/9/activate", {}, format="json")
    assert missing.status_code == 404 and error(missing) == "audit_config_version_not_found"
    assert client.post(f"{CONFIGS}/999999/versions/1/activate", {}, format="json").status_code == 404
    # audit-configs.write is needed (audits.write alone, or audit-configs read, is not enough).
    auditor = make_user(make_role("auditor", audits=("rw", "ALL")), email="auditor@example.com")
    assert auth_client(reader).post(f"{url}/2/activate", {}, format="json").status_code == 403
    assert auth_client(auditor).post(f"{url}/2/activate", {}, format="json").status_code == 403
    v3.refresh_from_db()
    assert v3.is_draft and active(config) == v1

    activated = client.post(f"{url}/2/activate", {"evaluation_id": str(evaluation.pk)}, format="json")
    assert activated.status_code == 200, activated.content
    body = activated.json()
    assert {k: body[k] for k in ("version", "is_draft", "is_active", "activated_by", "activated_from_evaluation")} == {
        "version": 2,
        "is_draft": False,
        "is_active": True,
        "activated_by": "manager@example.com",
        "activated_from_evaluation": str(evaluation.pk),
    }
    v2.refresh_from_db()
    assert (v2.is_draft, v2.activated_by, v2.activated_from) == (False, manager, evaluation)
    assert active(config) == v2 and v2.activated_at is not None
    assert client.get(f"{CONFIGS}/{config.pk}").json()["version"] == 2
    listed = client.get(url).json()
    assert [(r["version"], r["is_draft"], r["is_active"]) for r in listed] == [
        (3, True, False),
        (2, False, True),
        (1, False, False),
    ]
    # Audits made before keep their version; a run now takes version 2.
    assert set(Audit.objects.filter(evaluation=evaluation).values_list("config_version", flat=True)) == {v1.pk, v2.pk}
    run = client.post("/api/audits/run", {"fiche_id": "F-L2", "audit_config_id": config.pk}, format="json")
    assert Audit.objects.get(pk=run.json()["audit_id"]).config_version == v2

    # A plain edit (no draft) is active at once, activated by its author, from no evaluation.
    edited = client.patch(f"{CONFIGS}/{config.pk}", {"description": "Révisée."}, format="json")
    assert edited.status_code == 200 and edited.json()["version"] == 4
    newest = client.get(url).json()[0]
    assert (newest["version"], newest["is_draft"], newest["is_active"]) == (4, False, True)
    assert (newest["activated_by"], newest["activated_from_evaluation"]) == ("manager@example.com", None)


# --- The evaluation set and its audits -----------------------------------------------------------------------


def reviewed_at(audit: Audit, at: datetime, status: str = "pass", position: int = WITHDRAWAL) -> None:
    """A reviewer's verdict on (position, 0) of ``audit``, dated ``at``."""
    made = review(audit, position, 0, status)
    HumanReview.objects.filter(pk=made.pk).update(created_at=at)


def test_the_default_set_is_the_most_recent_reviewed_fiches_in_the_users_audits_write_scope(
    config, fiches, manager, lyon_manager, auth_client, settings
):
    other_config = configs.config_create(data={**configs.config_content(config), "name": "Autre grille"})
    v2 = draft(config, manager)
    reviewed_at(production_audit(fiches["L1"], config), T0)
    reviewed_at(production_audit(fiches["L2"], config), T0 + timedelta(hours=1))
    reviewed_at(production_audit(fiches["L3"], config), T0 + timedelta(hours=3))
    reviewed_at(production_audit(fiches["P1"], config), T0 + timedelta(hours=4))  # Paris: the Lyon side door
    reviewed_at(production_audit(fiches["L1"], config), T0 + timedelta(hours=5))  # L1 again: now the latest
    reviewed_at(production_audit(fiches["L4"], other_config), T0 + timedelta(hours=6))  # another config
    # A review on an evaluation's audit is no truth: its fiche does not enter a default set.
    eval_only = fiche("F-EVAL", "Lyon-2")
    earlier = evaluate(config, manager, ["F-EVAL"], version=2)
    reviewed_at(end_by_hand(evaluation_audit(earlier, eval_only, v2)), T0 + timedelta(hours=7))

    settings.AUDIT_EVALUATION_FICHES = 2
    url = f"{CONFIGS}/{config.pk}/evaluations"
    created = auth_client(lyon_manager).post(url, {"version": 2}, format="json")
    assert created.status_code == 202, created.content
    assert created.json()["fiches"] == 2 and created.json()["status"] == "running"
    evaluation = Evaluation.objects.get(pk=created.json()["evaluation_id"])
    assert evaluation.fiche_ids == ["F-L1", "F-L3"]  # newest first; never Paris's, whatever its date
    assert (evaluation.version, evaluation.baseline_version, evaluation.requested_by) == (
        v2,
        active(config),
        lyon_manager,
    )

    settings.AUDIT_EVALUATION_FICHES = 3
    everyone = auth_client(manager).post(url, {"version": 2}, format="json")
    assert everyone.status_code == 202, everyone.content
    assert Evaluation.objects.get(pk=everyone.json()["evaluation_id"]).fiche_ids == ["F-L1", "F-P1", "F-L3"]


def test_an_evaluation_needs_a_set_in_scope_a_bounded_size_the_budget_and_both_grants(
    config, fiches, manager, lyon_manager, make_role, make_user, auth_client, settings
):
    draft(config, manager)
    reviewed_at(production_audit(fiches["P1"], config), T0)  # reviewed, but only Paris
    url = f"{CONFIGS}/{config.pk}/evaluations"
    lyon = auth_client(lyon_manager)
    # The budget: two audits per fiche against BATCH_USER_BURST (4 here); refused requests never count.
    settings.BATCH_USER_BURST, settings.BATCH_USER_RATE = 4, "1/h"

    nothing = lyon.post(url, {"version": 2}, format="json")
    assert nothing.status_code == 409 and error(nothing) == "no_evaluation_set"
    foreign = lyon.post(url, {"version": 2, "fiche_ids": ["F-L1", "F-P1"]}, format="json")
    assert foreign.status_code == 403 and error(foreign) == "scope_denied"
    assert lyon.post(url, {"version": 9, "fiche_ids": ["F-L1"]}, format="json").status_code == 404
    assert lyon.post(f"{CONFIGS}/999999/evaluations", {"fiche_ids": ["F-L1"]}, format="json").status_code == 404

    settings.AUDIT_EVALUATION_MAX_FICHES = 3
    too_many = lyon.post(url, {"version": 2, "fiche_ids": ["F-L1", "F-L2", "F-L3", "F-L4"]}, format="json")
    assert too_many.status_code == 400 and "fiche_ids" in too_many.json()["error"]["details"]

    # 6 audits at once never fit; 4 do (the refusals above counted nothing), then 429.
    wide = lyon.post(url, {"version": 2, "fiche_ids": ["F-L1", "F-L2", "F-L3"]}, format="json")
    assert wide.status_code == 400 and error(wide) == "batch_request_too_large"
    fits = lyon.post(url, {"version": 2, "fiche_ids": ["F-L1", "F-L2"]}, format="json")
    assert fits.status_code == 202, fits.content
    throttled = lyon.post(url, {"version": 2, "fiche_ids": ["F-L3"]}, format="json")
    assert throttled.status_code == 429 and error(throttled) == "batch_requests_throttled"
    assert int(throttled["Retry-After"]) > 0
    assert Evaluation.objects.count() == 1 and Audit.objects.filter(purpose="evaluation").count() == 4

    # Both grants: audit-configs.write and audits.write.
    auditor = make_user(make_role("auditor", audits=("rw", "ALL")), email="auditor@example.com")
    editor = make_user(make_role("editor", audit_configs=("rw", "ALL")), email="editor@example.com")
    for user in (auditor, editor):
        assert auth_client(user).post(url, {"fiche_ids": ["F-L4"]}, format="json").status_code == 403
    settings.LLM_API_KEY = ""
    assert auth_client(manager).post(url, {"fiche_ids": ["F-L4"]}, format="json").status_code == 503
    assert Evaluation.objects.count() == 1


def test_an_evaluation_makes_two_evaluation_audits_per_fiche_or_one_for_the_active_version(
    config, fiches, manager, auth_client
):
    v1 = active(config)
    v2 = draft(config, manager)
    client = auth_client(manager)
    # A production audit of the active version already running for L1: the evaluation never follows it.
    running = client.post("/api/audits/run", {"fiche_id": "F-L1", "audit_config_id": config.pk}, format="json")
    production_id = running.json()["audit_id"]

    created = client.post(
        f"{CONFIGS}/{config.pk}/evaluations", {"version": 2, "fiche_ids": ["F-L1", "F-L2", "F-L1"]}, format="json"
    )
    assert created.status_code == 202, created.content
    evaluation = Evaluation.objects.get(pk=created.json()["evaluation_id"])
    assert evaluation.fiche_ids == ["F-L1", "F-L2"] and created.json()["fiches"] == 2
    made = Audit.objects.filter(evaluation=evaluation)
    assert sorted((a.fiche.fiche_id, a.config_version.version) for a in made) == [
        ("F-L1", 1),
        ("F-L1", 2),
        ("F-L2", 1),
        ("F-L2", 2),
    ]
    assert {(a.purpose, a.status, a.requested_by_id, a.batch_id, a.predecessor_id) for a in made} == {
        ("evaluation", "pending", manager.pk, None, None)
    }
    assert production_id not in {str(a.pk) for a in made}
    # Nor does a production request follow an evaluation's audit: it reuses its own.
    again = client.post("/api/audits/run", {"fiche_id": "F-L1", "audit_config_id": config.pk}, format="json")
    assert (again.json()["audit_id"], again.json()["reused"]) == (production_id, True)
    fresh = client.post("/api/audits/run", {"fiche_id": "F-L2", "audit_config_id": config.pk}, format="json")
    assert fresh.json()["reused"] is False
    assert Audit.objects.get(pk=fresh.json()["audit_id"]).purpose == "production"

    # The active version evaluated on its own: one audit per fiche, no baseline.
    itself = client.post(f"{CONFIGS}/{config.pk}/evaluations", {"fiche_ids": ["F-L1", "F-L2"]}, format="json")
    assert itself.status_code == 202, itself.content
    alone = Evaluation.objects.get(pk=itself.json()["evaluation_id"])
    assert (alone.version, alone.baseline_version) == (v1, None)
    assert sorted(Audit.objects.filter(evaluation=alone).values_list("config_version", flat=True)) == [v1.pk, v1.pk]
    tools = client.post(
        f"{CONFIGS}/{config.pk}/evaluations", {"version": 2, "fiche_ids": ["F-L3"], "use_rlm": True}, format="json"
    )
    with_tools = Evaluation.objects.get(pk=tools.json()["evaluation_id"])
    assert with_tools.tools_mode is True
    assert set(Audit.objects.filter(evaluation=with_tools).values_list("tools_mode", flat=True)) == {True}
    shown = client.get(f"/api/evaluations/{alone.pk}").json()
    assert (shown["version"], shown["baseline_version"], shown["audits"], shown["result"]) == (
        1,
        None,
        {"pending": 2},
        None,
    )
    assert v2.is_draft


# --- The end, exactly once, and its events -------------------------------------------------------------------


def test_the_evaluation_ends_once_when_its_last_audit_ends_and_its_events_are_whole_only_for_its_requester(
    config, fiches, manager, auth_client, pusher, django_capture_on_commit_callbacks
):
    v1, v2 = active(config), draft(config, manager)
    with django_capture_on_commit_callbacks(execute=True):
        created = auth_client(manager).post(
            f"{CONFIGS}/{config.pk}/evaluations", {"version": 2, "fiche_ids": ["F-L1"]}, format="json"
        )
    evaluation = Evaluation.objects.get(pk=created.json()["evaluation_id"])
    mine, everyone = f"private-user-{manager.pk}", "private-global"
    ids = {"evaluation_id": str(evaluation.pk), "audit_config_id": str(config.pk)}
    started = sent_events(pusher, "audit.evaluation_progress")
    assert started == [
        (everyone, {**ids, "status": "running", "redacted": True}),
        (
            mine,
            {
                **ids,
                "completed_audits": 0,
                "failed_audits": 0,
                "total_audits": 2,
                "progress_percentage": 0,
                "status": "running",
            },
        ),
    ]

    pusher.clear()
    with django_capture_on_commit_callbacks(execute=True):  # the audit's end; its finish hook settles
        end_by_hand(evaluation_audit(evaluation, fiches["L1"], v2))
    evaluation.refresh_from_db()
    assert evaluation.status == "running" and evaluation.result is None
    progress = dict(sent_events(pusher, "audit.evaluation_progress"))
    assert set(progress) == {everyone, mine}
    assert progress[mine]["completed_audits"] == 1 and progress[mine]["progress_percentage"] == 50
    assert progress[everyone] == {**ids, "status": "running", "redacted": True}
    assert sent_events(pusher, "audit.evaluation_completed") == []

    pusher.clear()
    with django_capture_on_commit_callbacks(execute=True):
        end_by_hand(evaluation_audit(evaluation, fiches["L1"], v1))
    evaluation.refresh_from_db()
    assert evaluation.status == "completed" and evaluation.completed_at is not None and evaluation.error is None
    assert evaluation.result is not None and evaluation.result["fiches"] == 1
    completed = dict(sent_events(pusher, "audit.evaluation_completed"))
    assert completed == {
        everyone: {**ids, "status": "completed", "redacted": True},
        mine: {
            **ids,
            "version": 2,
            "completed_audits": 2,
            "failed_audits": 0,
            "changed_points": 0,
            "status": "completed",
        },
    }
    assert sent_events(pusher, "audit.evaluation_progress") == []

    # Any later settle (a duplicate hook, the reconciler) changes nothing and says nothing.
    pusher.clear()
    ended_at, result = evaluation.completed_at, evaluation.result
    with django_capture_on_commit_callbacks(execute=True):
        assert evaluations.evaluation_settle(evaluation_id=str(evaluation.pk)) is False
        assert evaluations.reconcile_evaluations() == []
    evaluation.refresh_from_db()
    assert (evaluation.completed_at, evaluation.result) == (ended_at, result)
    assert pusher == []


def test_an_evaluation_whose_audits_all_failed_fails_and_the_reconciler_settles_a_lost_hook(config, fiches, manager):
    v1, v2 = active(config), draft(config, manager)
    failing = evaluate(config, manager, ["F-L1"], version=2)
    for version in (v1, v2):
        # The end without its hook (lost with its process): the evaluation stays running until the beat.
        assert finish.fail(evaluation_audit(failing, fiches["L1"], version), "LLM down", phase="analysis")
    failing.refresh_from_db()
    assert failing.status == "running"

    lost = evaluate(config, manager, ["F-L2"], version=2)
    end_by_hand(evaluation_audit(lost, fiches["L2"], v2))
    pending = evaluate(config, manager, ["F-L3"], version=2)  # one audit still running: not settled
    end_by_hand(evaluation_audit(pending, fiches["L3"], v2))

    assert sorted(evaluations.reconcile_evaluations()) == sorted([str(failing.pk)])
    failing.refresh_from_db()
    assert (failing.status, failing.error) == ("failed", "every audit of the evaluation failed")
    spent: dict[str, Any] = (failing.result or {})["spent"]
    assert (spent["candidate"]["audits"], spent["candidate"]["failed"]) == (1, 1)
    assert (spent["baseline"]["audits"], spent["baseline"]["failed"]) == (1, 1)
    assert (failing.result or {})["control_points"] == [] and (failing.result or {})["changed"] == []

    end_by_hand(evaluation_audit(lost, fiches["L2"], v1))
    assert evaluations.reconcile_evaluations() == [str(lost.pk)]
    lost.refresh_from_db()
    pending.refresh_from_db()
    assert (lost.status, pending.status) == ("completed", "running")


@pytest.mark.django_db(transaction=True)
def test_racing_settles_end_the_evaluation_once_with_one_completed_event(config, manager, monkeypatch):
    row = fiche("F-RACE", "Lyon-2")
    draft(config, manager)
    evaluation = evaluate(config, manager, ["F-RACE"], version=2)
    assert Audit.objects.filter(evaluation=evaluation).count() == 2
    # Both audits ended, but no hook ran (their ends were lost): every settler finds the evaluation due.
    Audit.objects.filter(evaluation=evaluation).update(status="completed", completed_at=timezone.now())
    published: list[str] = []
    lock = threading.Lock()

    def spy(event, payload, **kwargs):
        with lock:
            published.append(event)

    monkeypatch.setattr(evaluations, "publish", spy)
    racers = 6
    barrier = threading.Barrier(racers)
    outcomes: list[bool] = []
    errors: list[BaseException] = []

    def settle() -> None:
        try:
            barrier.wait(timeout=10)
            ended = evaluations.evaluation_settle(evaluation_id=str(evaluation.pk))
            with lock:
                outcomes.append(ended)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=settle) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and sorted(outcomes) == [False] * (racers - 1) + [True]
    assert published == ["audit.evaluation_completed"]
    evaluation.refresh_from_db()
    assert evaluation.status == "completed"
    assert evaluations.reconcile_evaluations() == [] and published == ["audit.evaluation_completed"]
    assert row.fiche_id in evaluation.fiche_ids


# --- The result ----------------------------------------------------------------------------------------------


def test_the_result_judges_both_versions_against_the_reviewers_latest_verdicts(
    config, fiches, manager, reader, auth_client, django_capture_on_commit_callbacks
):
    v1 = active(config)
    f = {"F1": fiches["L1"], "F2": fiches["L2"], "F3": fiches["L3"], "F4": fiches["L4"]}
    # The truth: reviewers' latest verdicts on production audits. F4's (7, 0) was first pass, then fail.
    truth = {
        "F1": {(WITHDRAWAL, 0): "pass", (RECORDING, 2): "pass"},
        "F2": {(WITHDRAWAL, 0): "fail", (RECORDING, 2): "pass"},
        "F3": {(WITHDRAWAL, 0): "pass", (RECORDING, 2): "fail"},
        "F4": {(WITHDRAWAL, 0): "fail", (RECORDING, 2): "fail"},
    }
    for name, verdicts in truth.items():
        audit = production_audit(f[name], config)
        if name == "F4":
            review(audit, WITHDRAWAL, 0, "pass", manager)
        for (position, index), status in verdicts.items():
            review(audit, position, index, status, manager)
    v2 = draft(config, manager)
    evaluation = evaluate(config, manager, [r.fiche_id for r in f.values()], version=2)
    assert evaluation.fiche_ids == ["F-L1", "F-L2", "F-L3", "F-L4"]

    # The baseline (v1) agrees on (7, 0) everywhere and says pass on (4, 2) everywhere.
    baseline = {
        "F1": {},
        "F2": {(WITHDRAWAL, 0): "fail"},
        "F3": {},
        "F4": {(WITHDRAWAL, 0): "fail"},
    }
    # The candidate (v2) misses F2's (7, 0) but gets (4, 2) right everywhere; on F4's (4, 2) a guided rerun
    # later said pass: the AI's own (unguided) fail is what counts. It also fails F1's unreviewed (2, 0).
    candidate = {
        "F1": {(2, 0): "fail"},
        "F2": {},
        "F3": {(RECORDING, 2): "fail"},
        "F4": {(WITHDRAWAL, 0): "fail", (RECORDING, 2): "pass"},
    }
    unguided = {"F4": {(RECORDING, 2): "fail"}}
    quotes = {
        ("F2", 1, WITHDRAWAL, 0): ["Vous pouvez vous rétracter sous 14 jours."],
        ("F2", 2, WITHDRAWAL, 0): ["Vous disposez d'un délai."],
        ("F3", 1, RECORDING, 2): ["Une copie vous sera envoyée."],
    }
    with django_capture_on_commit_callbacks(execute=True):
        for name, row in f.items():
            for version, side, number in ((v1, baseline, 1), (v2, candidate, 2)):
                end_by_hand(
                    evaluation_audit(evaluation, row, version),
                    side[name],
                    quotes={(p, i): q for (n, v, p, i), q in quotes.items() if (n, v) == (name, number)},
                    unguided=unguided.get(name) if number == 2 else None,
                    tokens=10 if number == 2 else 20,
                )
        # A reviewer's verdict on an evaluation's audit is no truth (F1's (7, 0) stays pass).
        review(evaluation_audit(evaluation, f["F1"], v2), WITHDRAWAL, 0, "fail", manager)
    evaluation.refresh_from_db()
    assert evaluation.status == "completed"
    result: dict[str, Any] = evaluation.result or {}

    # (7, 0), reviewer: F1 pass, F2 fail, F3 pass, F4 fail.
    #   baseline  pass, fail, pass, fail: po = 4/4 = 1; pe = (2·2 + 2·2)/16 = 0.5; kappa = (1 - .5)/(1 - .5) = 1.
    #   candidate pass, pass, pass, fail: po = 3/4; AI pass 3 fail 1, reviewer 2/2: pe = (3·2 + 1·2)/16 = 0.5;
    #             kappa = (.75 - .5)/.5 = 0.5; delta = 0.5 - 1 = -0.5.
    # (4, 2), reviewer: F1 pass, F2 pass, F3 fail, F4 fail.
    #   baseline  pass ×4: po = 2/4; pe = (4·2 + 0·2)/16 = 0.5; kappa = 0.
    #   candidate pass, pass, fail, fail (F4: its unguided fail): po = 1; pe = 0.5; kappa = 1; delta = +1.
    # Overall, 8 pairs: candidate 7 agree: po = .875; AI pass 5 fail 3, reviewer 4/4: pe = (5·4 + 3·4)/64 = .5;
    #   kappa = .75. Baseline 6 agree: po = .75; AI pass 6 fail 2: pe = (6·4 + 2·4)/64 = .5; kappa = .5.
    assert result["fiches"] == 4 and result["reviewed_points"] == 8
    assert result["overall"] == {
        "candidate": {"reviewed": 8, "agreement": 0.875, "kappa": 0.75},
        "baseline": {"reviewed": 8, "agreement": 0.75, "kappa": 0.5},
    }
    points = {(p["step_position"], p["control_point_index"]): p for p in result["control_points"]}
    assert list(points) == [(RECORDING, 2), (WITHDRAWAL, 0)]
    assert points[(RECORDING, 2)] | {"question": None} == {
        "step_position": RECORDING,
        "control_point_index": 2,
        "question": None,
        "candidate": {"reviewed": 4, "agreement": 1.0, "kappa": 1.0},
        "baseline": {"reviewed": 4, "agreement": 0.5, "kappa": 0.0},
        "kappa_delta": 1.0,
    }
    assert points[(RECORDING, 2)]["question"] == NEW_WORDING  # the evaluated version's wording
    assert points[(WITHDRAWAL, 0)]["candidate"] == {"reviewed": 4, "agreement": 0.75, "kappa": 0.5}
    assert points[(WITHDRAWAL, 0)]["baseline"] == {"reviewed": 4, "agreement": 1.0, "kappa": 1.0}
    assert points[(WITHDRAWAL, 0)]["kappa_delta"] == -0.5

    # Every verdict that differs between the versions, reviewed or not, with both verified quotes.
    assert result["changed"] == [
        {
            "fiche_id": "F-L1",
            "step_position": 2,
            "control_point_index": 0,
            "reviewer": None,
            "baseline": {"status": "pass", "quotes": []},
            "candidate": {"status": "fail", "quotes": []},
        },
        {
            "fiche_id": "F-L2",
            "step_position": WITHDRAWAL,
            "control_point_index": 0,
            "reviewer": "fail",
            "baseline": {"status": "fail", "quotes": ["Vous pouvez vous rétracter sous 14 jours."]},
            "candidate": {"status": "pass", "quotes": ["Vous disposez d'un délai."]},
        },
        {
            "fiche_id": "F-L3",
            "step_position": RECORDING,
            "control_point_index": 2,
            "reviewer": "fail",
            "baseline": {"status": "pass", "quotes": ["Une copie vous sera envoyée."]},
            "candidate": {"status": "fail", "quotes": []},
        },
        {
            "fiche_id": "F-L4",
            "step_position": RECORDING,
            "control_point_index": 2,
            "reviewer": "fail",
            "baseline": {"status": "pass", "quotes": []},
            "candidate": {"status": "fail", "quotes": []},
        },
    ]
    # Spent: 4 audits a side, 9 steps each (10 prompt tokens a step for v2, 20 for v1), and their wall time.
    steps = v1.steps.count()
    assert result["spent"]["candidate"] | {"wall_seconds": None} == {
        "audits": 4,
        "failed": 0,
        "tokens": 4 * steps * 10,
        "wall_seconds": None,
    }
    assert result["spent"]["baseline"] | {"wall_seconds": None} == {
        "audits": 4,
        "failed": 0,
        "tokens": 4 * steps * 20,
        "wall_seconds": None,
    }
    for version, label in ((v2, "candidate"), (v1, "baseline")):
        rows = Audit.objects.filter(evaluation=evaluation, config_version=version)
        wall = max(a.completed_at or T0 for a in rows) - min(a.started_at or T0 for a in rows)
        assert result["spent"][label]["wall_seconds"] == round(wall.total_seconds(), 3)

    shown = auth_client(reader).get(f"/api/evaluations/{evaluation.pk}")
    assert shown.status_code == 200, shown.content
    body = shown.json()
    assert (body["status"], body["version"], body["baseline_version"], body["audits"]) == (
        "completed",
        2,
        1,
        {"completed": 8},
    )
    assert body["result"] == result and body["requested_by"] == "manager@example.com"


# --- Where an evaluation's audits never count ----------------------------------------------------------------


def test_evaluation_audits_stay_out_of_listings_calibration_queues_and_disputes(
    config, fiches, manager, make_role, make_user, auth_client, django_capture_on_commit_callbacks
):
    v1, v2 = active(config), draft(config, manager)
    production = production_audit(fiches["L1"], config, {(WITHDRAWAL, 0): "fail"})
    evaluation = evaluate(config, manager, ["F-L1"], version=2)
    with django_capture_on_commit_callbacks(execute=True):
        candidate = end_by_hand(evaluation_audit(evaluation, fiches["L1"], v2), {(WITHDRAWAL, 0): "fail"})
        baseline = end_by_hand(evaluation_audit(evaluation, fiches["L1"], v1), {(WITHDRAWAL, 0): "fail"})
    client = auth_client(manager)

    listed = client.get("/api/audits").json()
    assert [a["audit_id"] for a in listed["results"]] == [str(production.pk)]
    assert listed["results"][0]["purpose"] == "production" and listed["results"][0]["counts"] is True
    only = client.get("/api/audits?purpose=evaluation").json()["results"]
    assert {a["audit_id"] for a in only} == {str(candidate.pk), str(baseline.pk)}
    assert {(a["purpose"], a["evaluation_id"], a["counts"]) for a in only} == {
        ("evaluation", str(evaluation.pk), False)
    }
    counting = client.get("/api/audits?counts=true&fiche_id=F-L1").json()["results"]
    assert [a["audit_id"] for a in counting] == [str(production.pk)]
    assert set(audits_for(manager).values_list("pk", flat=True)) == {production.pk}
    assert audits_for(manager, purpose=None).count() == 3
    # An evaluation's audit can still be read on its own (its evaluation's result links to it).
    assert client.get(f"/api/audits/{candidate.pk}").json()["purpose"] == "evaluation"

    # Calibration: reviewers' verdicts on an evaluation's audits are not the AI's track record.
    calibration = f"/api/audits/calibration?audit_config_id={config.pk}"
    review(candidate, WITHDRAWAL, 0, "pass", manager)
    review(baseline, 2, 0, "fail", manager)
    assert client.get(calibration).json()["reviewed"] == 0
    review(production, WITHDRAWAL, 0, "pass", manager)
    body = client.get(calibration).json()
    assert body["reviewed"] == 1 and [p["step_position"] for p in body["control_points"]] == [WITHDRAWAL]

    # Review queues take every completed production audit here (100 % sample), never an evaluation's.
    queue = ReviewQueue.objects.create(name="Tout", sample_percent=100, seed=7)
    assert enter_audit(audit_id=str(candidate.pk)) == 0 and enter_audit(audit_id=str(baseline.pk)) == 0
    assert enter_audit(audit_id=str(production.pk)) == 1
    backfill(queue, date_from=None, date_to=None)
    assert list(QueueItem.objects.values_list("audit_id", flat=True)) == [production.pk]

    # Disputes: the sale's agent may dispute the production verdict, never an evaluation's.
    agent = make_user(make_role("seller", audits=("r", "SELF")), email="agent@example.com", crm_user_id="agent-1")
    url = "/api/audits/{}/steps/{}/control-points/0/disputes"
    comment = {"comment": "Je l'ai dit."}
    refused = auth_client(agent).post(url.format(baseline.pk, WITHDRAWAL), comment, format="json")  # a fail
    assert refused.status_code == 409 and error(refused) == "evaluation_audit"
    production_failed = production_audit(fiches["L1"], config, {(2, 0): "fail"})
    opened = auth_client(agent).post(url.format(production_failed.pk, 2), comment, format="json")
    assert opened.status_code == 201, opened.content


def test_reviews_of_evaluation_audits_never_move_trust(config, fiches, manager, settings):
    settings.AUDIT_TRUST_MIN_REVIEWS = 2  # two disagreeing reviews would withdraw the point's trust
    v2 = draft(config, manager)
    rows = [fiches[k] for k in ("L1", "L2", "L3")]
    evaluation = evaluate(config, manager, [r.fiche_id for r in rows], version=2)
    for row in rows:  # the AI said pass on (7, 0) of every evaluation audit; the reviewer says fail
        audit = end_by_hand(evaluation_audit(evaluation, row, v2))
        review(audit, WITHDRAWAL, 0, "fail", manager)
        audit = end_by_hand(evaluation_audit(evaluation, row, active(config)), {(WITHDRAWAL, 0): "fail"})
        review(audit, WITHDRAWAL, 0, "pass", manager)
    trust = ControlPointTrust.objects.get(config=config, step_position=WITHDRAWAL, control_point_index=0)
    assert (trust.state, trust.sample_size, trust.kappa) == ("trusted", 0, None)
    assert not trust.changes.exists()

    # The same disagreement on production audits withdraws it (the override is live).
    for row, (ai, human) in zip(rows, [("pass", "fail"), ("fail", "pass")], strict=False):
        review(production_audit(row, config, {(WITHDRAWAL, 0): ai}), WITHDRAWAL, 0, human, manager)
    trust.refresh_from_db()
    assert (trust.state, trust.sample_size, trust.kappa) == ("withdrawn", 2, -1.0)


def test_an_automation_run_for_unaudited_fiches_still_takes_a_fiche_only_an_evaluation_audited(
    config, fiches, manager, make_role, make_user
):
    """An evaluation's audit judges a config version, not the sale: the fiche is still unaudited."""
    v2 = draft(config, manager)
    evaluation = evaluate(config, manager, ["F-L1"], version=2)
    end_by_hand(evaluation_audit(evaluation, fiches["L1"], v2))
    end_by_hand(evaluation_audit(evaluation, fiches["L1"], active(config)))
    production_audit(fiches["L2"], config)
    owner = make_user(
        make_role("owner", fiches=("r", "ALL"), audits=("rw", "ALL"), transcriptions=("rw", "ALL")),
        email="owner@example.com",
    )
    unaudited = {}
    for chosen in ((config.pk,), ()):  # the run's configs named, or none (any completed audit counts)
        run = AutomationRun(config={"audit_config_ids": list(chosen), "run_transcription": False})
        selection = {"mode": "dateRange", "only_unaudited": True}
        unaudited[chosen] = automation_runs._select(run, selection, SALE_DAY, SALE_DAY, owner)[0]
    assert unaudited == {
        (config.pk,): ["F-L1", "F-L3", "F-L4", "F-P1"],  # F-L2 has a production audit: audited
        (): ["F-L1", "F-L3", "F-L4", "F-P1"],
    }


# --- Who reads an evaluation ----------------------------------------------------------------------------------


def test_an_evaluation_is_readable_only_when_every_fiche_of_its_set_is_in_the_readers_scope(
    config, fiches, manager, reader, lyon_reader, make_role, make_user, auth_client
):
    draft(config, manager)
    mixed = evaluate(config, manager, ["F-L1", "F-P1"], version=2)
    lyon_only = evaluate(config, manager, ["F-L1", "F-L2"], version=2)
    lyon = auth_client(lyon_reader)

    denied = lyon.get(f"/api/evaluations/{mixed.pk}")
    assert denied.status_code == 403 and error(denied) == "scope_denied"
    assert lyon.get(f"/api/evaluations/{lyon_only.pk}").status_code == 200
    listed = lyon.get(f"{CONFIGS}/{config.pk}/evaluations")
    assert [e["id"] for e in listed.json()] == [str(lyon_only.pk)]
    everything = auth_client(reader).get(f"{CONFIGS}/{config.pk}/evaluations").json()
    assert [e["id"] for e in everything] == [str(lyon_only.pk), str(mixed.pk)]
    assert auth_client(reader).get(f"/api/evaluations/{mixed.pk}").status_code == 200

    # audit-configs.read is needed; an unknown evaluation is 404.
    auditor = make_user(make_role("auditor", audits=("rw", "ALL")), email="auditor@example.com")
    assert auth_client(auditor).get(f"/api/evaluations/{lyon_only.pk}").status_code == 403
    assert auth_client(reader).get(f"/api/evaluations/{uuid.uuid4()}").status_code == 404
