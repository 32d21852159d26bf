"""Re-audits without a worker: the request (fiches, or a range of sales dates: the fiches sold in it with a
completed production audit of the config in the user's audits write scope; a draft version, an empty range,
too many fiches refused), each batch item's new audit (the version asked for, beside the fiche's latest completed
production audit as its predecessor: never an evaluation's, a failed one, another config's or one of the same
batch), the diff against the predecessor (exactly the changed points, points only one side has, niveau and score
before → after; scope), the re-audit's summary, and the audit that counts for a fiche (the latest completed of
the active version, a pin over it, unpinning) in listings.

Batch items are started by calling the batches' own pass (``batch_start_items``); the new audits are ended by
hand: their step results and verdicts written as a worker would, then the real updater ends them."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import User
from audits.models import (
    Audit,
    AuditConfig,
    AuditConfigVersion,
    AuditStepResult,
    Citation,
    ControlPointResult,
)
from audits.services import batch as audit_batch
from audits.services import configs, finish, reviews
from batches.models import Batch, BatchItem
from batches.services import batch_start_items
from fiches.models import FicheCache

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offline_llm", "sent")]

REAUDIT = "/api/audits/reaudit"
T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)
FROM, TO = date(2026, 2, 2), date(2026, 2, 4)
WITHDRAWAL = 7  # "Droit de rétractation": a critical step with one critical point
RECORDING = 4  # "Information sur l'enregistrement": (4, 2) is not critical; the step passes at 3 of 4
OFFER = 6  # "Présentation de l'offre": three points, none critical


# --- Fixtures and helpers ------------------------------------------------------------------------------------


def fiche(fiche_id: str, groupe: str, on: date = FROM) -> FicheCache:
    return FicheCache.objects.create(
        fiche_id=fiche_id, sales_date=on, groupe=groupe, details_success=True, details_fetched_at=timezone.now()
    )


@pytest.fixture
def manager(make_role, make_user) -> User:
    role = make_role("manager", audit_configs=("rw", "ALL"), audits=("rw", "ALL"))
    return make_user(role, email="manager@example.com")


@pytest.fixture
def lyon_manager(make_role, make_user) -> User:
    return make_user(
        make_role("lyon-manager", audits=("rw", "GROUP")), email="lyon-manager@example.com", groupes=["Lyon-2"]
    )


@pytest.fixture
def lyon_reader(make_role, make_user) -> User:
    return make_user(
        make_role("lyon-reader", audits=("r", "GROUP")), email="lyon-reader@example.com", groupes=["Lyon-2"]
    )


@pytest.fixture
def reader(make_role, make_user) -> User:
    return make_user(make_role("reader", audits=("r", "ALL")), email="reader@example.com")


def active(config: AuditConfig) -> AuditConfigVersion:
    config.refresh_from_db()
    assert config.current_version is not None
    return config.current_version


def content(config: AuditConfig) -> dict[str, Any]:
    return configs.config_content(config)


def new_version(config: AuditConfig, *, draft: bool = False, steps: list[dict] | None = None) -> AuditConfigVersion:
    """A new version: ``steps`` (default: the active ones with point (4, 2) reworded)."""
    if steps is None:
        steps = content(config)["steps"]
        steps[RECORDING - 1]["control_points"][2]["question"] += " (sur simple demande)"
    before = set(config.versions.values_list("pk", flat=True))
    configs.config_update(config_id=config.pk, patch={"steps": steps, "draft": draft})
    return config.versions.exclude(pk__in=before).get()


def audit_of(
    fiche_row: FicheCache,
    config: AuditConfig,
    verdicts: dict[tuple[int, int], str] | None = None,
    *,
    version: AuditConfigVersion | None = None,
    status: str = "completed",
    completed_at: datetime | None = None,
    purpose: str = "production",
    quotes: dict[tuple[int, int], list[str]] | None = None,
) -> Audit:
    """An ended audit (completed: every point passed except ``verdicts``, with verified ``quotes``)."""
    version = version or active(config)
    audit = Audit.objects.create(
        fiche=fiche_row,
        config=config,
        config_version=version,
        status=status,
        completed_at=(completed_at or T0) if status in ("completed", "failed") else None,
        purpose=purpose,
    )
    if status == "completed":
        write_steps(audit, verdicts or {}, quotes or {})
        reviews.recompute_audit(audit)
    audit.refresh_from_db()
    return audit


def write_steps(audit: Audit, verdicts: dict[tuple[int, int], str], quotes: dict[tuple[int, int], list[str]]) -> None:
    for step in audit.config_version.steps.all():
        row = AuditStepResult.objects.create(audit=audit, step=step, position=step.position, status="completed")
        for point in step.control_points.all():
            key = (step.position, point.index)
            status = verdicts.get(key, "pass")
            result = ControlPointResult.objects.create(
                step_result=row, index=point.index, ai_status=status, status=status
            )
            for n, text in enumerate(quotes.get(key, [])):
                Citation.objects.create(control_point=result, position=n, quote=text, text=text, verified=True)
            Citation.objects.create(control_point=result, position=99, quote="inventé", reason="not_found")
        reviews.rescore_step(row)


def end_by_hand(
    audit: Audit,
    verdicts: dict[tuple[int, int], str] | None = None,
    quotes: dict[tuple[int, int], list[str]] | None = None,
) -> Audit:
    """A pending audit ended as the workers do: its steps stored, then the real updater ends it."""
    Audit.objects.filter(pk=audit.pk).update(status="running", started_at=timezone.now(), dispatched_at=timezone.now())
    write_steps(audit, verdicts or {}, quotes or {})
    assert finish.audit_step_settled(audit_id=str(audit.pk))
    audit.refresh_from_db()
    return audit


def reaudit(client, config: AuditConfig, **body) -> Any:
    return client.post(REAUDIT, {"audit_config_id": config.pk, **body}, format="json")


def started(batch_id: str) -> dict[str, Audit]:
    """The batch's items started by the batches' own pass: each fiche's new audit."""
    batch_start_items(batch_id=batch_id)
    items = BatchItem.objects.filter(batch_id=batch_id)
    return {
        item.fiche_id: Audit.objects.select_related("predecessor", "config_version").get(pk=str(item.ref_id))
        for item in items
    }


def error(response) -> str:
    return response.json()["error"]["code"]


# --- The request ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "fiche_ids"),
        ({"fiche_ids": []}, "fiche_ids"),
        ({"date_from": "2026-02-02"}, "fiche_ids"),
        ({"date_to": "2026-02-02"}, "fiche_ids"),
        ({"date_from": "2026-02-04", "date_to": "2026-02-02"}, "date_from"),
        ({"fiche_ids": ["F-L1"], "version": 0}, "version"),
    ],
)
def test_a_reaudit_names_fiches_or_an_ordered_range(body, field, config, manager, auth_client):
    fiche("F-L1", "Lyon-2")
    response = reaudit(auth_client(manager), config, **body)
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["details"]
    assert not Batch.objects.exists()


def test_a_draft_version_an_unknown_one_and_unrunnable_configs_are_refused(
    config, manager, reader, auth_client, settings
):
    fiche("F-L1", "Lyon-2")
    audit_of(FicheCache.objects.get(fiche_id="F-L1"), config)
    new_version(config, draft=True)
    client = auth_client(manager)

    drafted = reaudit(client, config, version=2, fiche_ids=["F-L1"])
    assert drafted.status_code == 409 and error(drafted) == "version_is_draft"
    by_range = reaudit(client, config, version=2, date_from="2026-02-01", date_to="2026-02-28")
    assert by_range.status_code == 409 and error(by_range) == "version_is_draft"
    unknown = reaudit(client, config, version=9, fiche_ids=["F-L1"])
    assert unknown.status_code == 404 and error(unknown) == "audit_config_version_not_found"
    no_config = client.post(REAUDIT, {"audit_config_id": 999999, "fiche_ids": ["F-L1"]}, format="json")
    assert no_config.status_code == 400 and error(no_config) == "audit_config_not_found"
    assert reaudit(auth_client(reader), config, fiche_ids=["F-L1"]).status_code == 403
    settings.LLM_API_KEY = ""
    assert reaudit(client, config, fiche_ids=["F-L1"]).status_code == 503
    settings.LLM_API_KEY = "sk-test"
    AuditConfig.objects.filter(pk=config.pk).update(is_active=False)
    inactive = reaudit(client, config, fiche_ids=["F-L1"])
    assert inactive.status_code == 409 and error(inactive) == "audit_config_inactive"
    assert not Batch.objects.exists()


def test_a_range_takes_the_fiches_sold_in_it_with_a_completed_production_audit_in_the_users_scope(
    config, manager, lyon_manager, auth_client
):
    other = configs.config_create(data={**content(config), "name": "Autre grille"})
    rows = {
        "F-L1": fiche("F-L1", "Lyon-2", FROM),
        "F-L2": fiche("F-L2", "Lyon-2", TO),  # the range's last day
        "F-L3": fiche("F-L3", "Lyon-2", FROM - timedelta(days=1)),  # the day before
        "F-L4": fiche("F-L4", "Lyon-2", FROM),  # only a failed and a running audit
        "F-L5": fiche("F-L5", "Lyon-2", FROM),  # only an evaluation's audit
        "F-L6": fiche("F-L6", "Lyon-2", FROM),  # only another config's audit
        "F-L7": fiche("F-L7", "Lyon-2", FROM),  # never audited
        "F-P1": fiche("F-P1", "Paris-Est", FROM),  # Paris: the Lyon manager's side door
    }
    for fiche_id in ("F-L1", "F-L2", "F-L3", "F-P1"):
        audit_of(rows[fiche_id], config)
    audit_of(rows["F-L1"], config)  # twice: one item all the same
    audit_of(rows["F-L4"], config, status="failed")
    audit_of(rows["F-L4"], config, status="running")
    audit_of(rows["F-L5"], config, purpose="evaluation")
    audit_of(rows["F-L6"], other)
    v2 = new_version(config)

    lyon = reaudit(auth_client(lyon_manager), config, date_from=FROM.isoformat(), date_to=TO.isoformat())
    assert lyon.status_code == 202, lyon.content
    assert lyon.json()["fiches"] == 2
    batch = Batch.objects.get(pk=lyon.json()["batch_id"])
    assert list(batch.items.values_list("fiche_id", flat=True)) == ["F-L1", "F-L2"]
    assert (batch.operation_type, batch.total, batch.requested_by) == ("audit", 2, lyon_manager)
    assert batch.options == {
        "audit_config_id": config.pk,
        "tools_mode": False,
        "reaudit": True,
        "version_id": v2.pk,
        "version": 2,
    }

    everyone = reaudit(auth_client(manager), config, date_from=FROM.isoformat(), date_to=TO.isoformat())
    assert everyone.status_code == 202, everyone.content
    items = Batch.objects.get(pk=everyone.json()["batch_id"]).items.values_list("fiche_id", flat=True)
    assert list(items) == ["F-L1", "F-P1", "F-L2"]  # by sales date, then id

    # A range holding only other groups' fiches is empty for the Lyon manager; a named foreign fiche is 403.
    paris_only = fiche("F-P2", "Paris-Est", date(2026, 3, 2))
    audit_of(paris_only, config)
    empty = reaudit(auth_client(lyon_manager), config, date_from="2026-03-01", date_to="2026-03-31")
    assert empty.status_code == 409 and error(empty) == "nothing_to_reaudit"
    named = reaudit(auth_client(lyon_manager), config, fiche_ids=["F-L1", "F-P2"])
    assert named.status_code == 403 and error(named) == "scope_denied"
    assert Batch.objects.count() == 2


def test_a_reaudit_is_bounded_by_AUDIT_BATCH_MAX_and_counted_in_the_batch_budget(
    config, manager, auth_client, settings
):
    for n in range(3):
        audit_of(fiche(f"F-L{n}", "Lyon-2"), config)
    settings.AUDIT_BATCH_MAX = 2
    client = auth_client(manager)
    by_range = reaudit(client, config, date_from=FROM.isoformat(), date_to=TO.isoformat())
    assert by_range.status_code == 400 and error(by_range) == "batch_too_large"
    assert by_range.json()["error"]["details"] == {"max": 2, "got": 3}
    named = reaudit(client, config, fiche_ids=["F-L0", "F-L1", "F-L2"])
    assert named.status_code == 400 and error(named) == "batch_too_large"

    settings.BATCH_USER_BURST, settings.BATCH_USER_RATE = 2, "1/h"
    assert reaudit(client, config, fiche_ids=["F-L0", "F-L1"]).status_code == 202
    throttled = reaudit(client, config, fiche_ids=["F-L2"])
    assert throttled.status_code == 429 and error(throttled) == "batch_requests_throttled"
    assert Batch.objects.count() == 1


# --- Each item's audit and its predecessor -------------------------------------------------------------------


def test_each_item_audits_with_the_version_beside_the_fiches_latest_completed_production_audit(
    config, manager, auth_client
):
    other = configs.config_create(data={**content(config), "name": "Autre grille"})
    l1 = fiche("F-L1", "Lyon-2")
    fiche("F-L2", "Lyon-2")
    v1 = active(config)
    audit_of(l1, config, completed_at=T0)
    latest = audit_of(l1, config, completed_at=T0 + timedelta(hours=2))
    # Later, but none of these is the fiche's last judgement by this config:
    audit_of(l1, config, completed_at=T0 + timedelta(hours=3), purpose="evaluation")
    audit_of(l1, config, completed_at=T0 + timedelta(hours=4), status="failed")
    audit_of(l1, other, completed_at=T0 + timedelta(hours=5))
    still_running = Audit.objects.create(fiche=l1, config=config, config_version=v1, status="running")
    v2 = new_version(config)
    client = auth_client(manager)

    first = reaudit(client, config, fiche_ids=["F-L1", "F-L2"])
    assert first.status_code == 202, first.content
    batch = Batch.objects.get(pk=first.json()["batch_id"])
    made = started(str(batch.pk))
    assert set(made) == {"F-L1", "F-L2"}
    assert (made["F-L1"].config_version, made["F-L1"].predecessor, made["F-L1"].batch_id) == (v2, latest, batch.pk)
    assert (made["F-L1"].purpose, made["F-L1"].status, made["F-L1"].requested_by) == ("production", "pending", manager)
    assert (made["F-L2"].config_version, made["F-L2"].predecessor) == (v2, None)  # never audited before

    # The item started again (a re-drive) after its first audit completed: still beside the old one, never
    # beside an audit of its own batch.
    Audit.objects.filter(pk=made["F-L1"].pk).update(status="completed", completed_at=T0 + timedelta(hours=9))
    item = BatchItem.objects.get(batch=batch, fiche_id="F-L1")
    again = Audit.objects.get(pk=str(audit_batch.start_batch_item(batch, item)))
    assert again.pk != made["F-L1"].pk and again.predecessor == latest

    # Another re-audit, with version 1 asked for (nothing identical still going: an identical audit running
    # would be followed instead of a new one): beside the first re-audit's completed audit (another batch).
    Audit.objects.filter(pk__in=[again.pk, still_running.pk]).update(status="failed", completed_at=T0)
    second = reaudit(client, config, version=1, fiche_ids=["F-L1"])
    assert second.status_code == 202, second.content
    assert Batch.objects.get(pk=second.json()["batch_id"]).options["version"] == 1
    redone = started(second.json()["batch_id"])["F-L1"]
    assert (redone.config_version, redone.predecessor_id) == (v1, made["F-L1"].pk)


# --- The diff ------------------------------------------------------------------------------------------------


def test_the_diff_lists_exactly_the_changed_points_with_both_quotes_and_niveau_and_score_before_after(
    config, manager, reader, lyon_reader, auth_client
):
    l1, p1 = fiche("F-L1", "Lyon-2"), fiche("F-P1", "Paris-Est")
    before = audit_of(
        l1,
        config,
        {(RECORDING, 2): "fail", (OFFER, 1): "fail"},
        quotes={(WITHDRAWAL, 0): ["Vous avez quatorze jours pour vous rétracter."]},
    )
    # A reviewer turned (6, 1) into a pass: the verdict that counts is the one compared.
    reviews.review_create(audit=before, position=OFFER, control_point_index=1, status="pass", comment="Dit.")
    before.refresh_from_db()
    assert (before.niveau, before.score_percentage, before.is_compliant) == ("EXCELLENT", 96.25, True)

    # Version 2: step 9 ("Conclusion", one point) is gone, and step 5 gains a fourth point.
    steps = content(config)["steps"]
    steps[4]["control_points"].append({"question": "L'agent vérifie-t-il l'adresse du client ?"})
    v2 = new_version(config, steps=steps[:8])
    response = reaudit(auth_client(manager), config, fiche_ids=["F-L1"])
    after = started(response.json()["batch_id"])["F-L1"]
    assert after.predecessor == before and after.config_version == v2
    end_by_hand(
        after,
        {(WITHDRAWAL, 0): "fail"},
        quotes={(WITHDRAWAL, 0): ["Je ne sais plus le délai."], (RECORDING, 2): ["Copie sur demande."]},
    )

    diff = auth_client(reader).get(f"/api/audits/{after.pk}/diff")
    assert diff.status_code == 200, diff.content
    body = diff.json()
    # After: 95 points possible (no step 9); (7, 0) failed: 85 of 95 = 89.47 %, but a critical miss: REJET.
    assert {k: body[k] for k in ("audit_id", "predecessor_id", "fiche_id", "config_version", "status")} == {
        "audit_id": str(after.pk),
        "predecessor_id": str(before.pk),
        "fiche_id": "F-L1",
        "config_version": {"before": 1, "after": 2},
        "status": {"before": "completed", "after": "completed"},
    }
    assert body["niveau"] == {"before": "EXCELLENT", "after": "REJET", "changed": True}
    assert body["score_percentage"] == {"before": 96.25, "after": 89.47}
    assert body["is_compliant"] == {"before": True, "after": False}
    changed = [(p["step_position"], p["control_point_index"], p["before"], p["after"]) for p in body["changed_points"]]
    assert changed == [
        (RECORDING, 2, {"status": "fail", "quotes": []}, {"status": "pass", "quotes": ["Copie sur demande."]}),
        (5, 3, None, {"status": "pass", "quotes": []}),
        (
            WITHDRAWAL,
            0,
            {"status": "pass", "quotes": ["Vous avez quatorze jours pour vous rétracter."]},
            {"status": "fail", "quotes": ["Je ne sais plus le délai."]},
        ),
        (9, 0, {"status": "pass", "quotes": []}, None),
    ]
    questions = {(p["step_position"], p["control_point_index"]): p["question"] for p in body["changed_points"]}
    assert questions[(5, 3)] == "L'agent vérifie-t-il l'adresse du client ?"
    assert questions[(9, 0)].startswith("L'agent récapitule")  # only the predecessor's version has it
    assert body["unchanged_points"] == 17 - 2  # 17 points both versions have, 2 of them changed

    # Without a predecessor: 404; out of scope: 403; unknown: 404.
    alone = auth_client(reader).get(f"/api/audits/{before.pk}/diff")
    assert alone.status_code == 404 and error(alone) == "no_predecessor"
    paris_before = audit_of(p1, config)
    paris = Audit.objects.create(
        fiche=p1, config=config, config_version=v2, status="completed", predecessor=paris_before
    )
    denied = auth_client(lyon_reader).get(f"/api/audits/{paris.pk}/diff")
    assert denied.status_code == 403 and error(denied) == "scope_denied"
    assert auth_client(lyon_reader).get(f"/api/audits/{after.pk}/diff").status_code == 200
    assert auth_client(reader).get(f"/api/audits/{uuid.uuid4()}/diff").status_code == 404


def test_the_summary_counts_niveau_changes_and_orders_the_points_that_moved_most(
    config, manager, lyon_reader, auth_client
):
    rows = {f: fiche(f, "Paris-Est" if f.startswith("F-P") else "Lyon-2") for f in ("F-L1", "F-L2", "F-L3", "F-P1")}
    previous = {
        "F-L1": audit_of(rows["F-L1"], config),  # EXCELLENT
        "F-L2": audit_of(rows["F-L2"], config),  # EXCELLENT
        "F-L3": audit_of(rows["F-L3"], config),
        "F-P1": audit_of(rows["F-P1"], config, {(OFFER, 0): "fail", (OFFER, 1): "fail", (OFFER, 2): "fail"}),  # BON
    }
    assert previous["F-P1"].niveau == "BON"
    new_version(config)
    response = reaudit(auth_client(manager), config, fiche_ids=list(rows))
    batch_id = response.json()["batch_id"]
    made = started(batch_id)
    end_by_hand(made["F-L1"], {(RECORDING, 2): "fail", (WITHDRAWAL, 0): "fail"})  # → REJET: changed
    end_by_hand(made["F-L2"], {(RECORDING, 2): "fail"})  # 96.25 %: still EXCELLENT
    end_by_hand(made["F-P1"], {(RECORDING, 2): "fail"})  # BON → EXCELLENT
    # F-L3's audit is still running.

    summary = auth_client(manager).get(f"{REAUDIT}/{batch_id}")
    assert summary.status_code == 200, summary.content
    body = summary.json()
    assert (body["batch_id"], body["fiches"], body["completed"], body["niveau_changed"]) == (batch_id, 4, 3, 2)
    assert body["points_moved"] == [
        {"step_position": RECORDING, "control_point_index": 2, "fiches": 3},
        {"step_position": OFFER, "control_point_index": 0, "fiches": 1},
        {"step_position": OFFER, "control_point_index": 1, "fiches": 1},
        {"step_position": OFFER, "control_point_index": 2, "fiches": 1},
        {"step_position": WITHDRAWAL, "control_point_index": 0, "fiches": 1},
    ]
    results = {r["fiche_id"]: r for r in body["results"]}
    assert [r["fiche_id"] for r in body["results"]] == ["F-L1", "F-L2", "F-L3", "F-P1"]
    assert results["F-L1"] == {
        "fiche_id": "F-L1",
        "audit_id": str(made["F-L1"].pk),
        "predecessor_id": str(previous["F-L1"].pk),
        "status": "completed",
        "niveau": {"before": "EXCELLENT", "after": "REJET", "changed": True},
        "changed_points": 2,
    }
    assert results["F-L2"]["niveau"]["changed"] is False and results["F-L2"]["changed_points"] == 1
    assert results["F-L3"] == {"fiche_id": "F-L3", "audit_id": str(made["F-L3"].pk), "status": "pending"}
    assert results["F-P1"]["niveau"] == {"before": "BON", "after": "EXCELLENT", "changed": True}

    # A Lyon reader's summary holds only Lyon's fiches.
    lyon = auth_client(lyon_reader).get(f"{REAUDIT}/{batch_id}").json()
    assert (lyon["fiches"], lyon["completed"], lyon["niveau_changed"]) == (3, 2, 1)
    assert [(p["step_position"], p["control_point_index"], p["fiches"]) for p in lyon["points_moved"]] == [
        (RECORDING, 2, 2),
        (WITHDRAWAL, 0, 1),
    ]
    assert auth_client(manager).get(f"{REAUDIT}/{uuid.uuid4()}").json()["fiches"] == 0


# --- The audit that counts -----------------------------------------------------------------------------------


def listed(client, query: str) -> dict[str, bool]:
    """``{audit_id: counts}`` of GET /api/audits?{query}."""
    response = client.get(f"/api/audits?{query}")
    assert response.status_code == 200, response.content
    return {a["audit_id"]: a["counts"] for a in response.json()["results"]}


def test_the_latest_completed_audit_of_the_active_version_counts_unless_a_reviewer_pins_another(
    config, manager, auth_client
):
    l1, l2 = fiche("F-L1", "Lyon-2"), fiche("F-L2", "Lyon-2")
    v1 = active(config)
    a1 = audit_of(l1, config, completed_at=T0)
    only_v1 = audit_of(l2, config, completed_at=T0)
    v2 = new_version(config)
    a2 = audit_of(l1, config, version=v2, completed_at=T0 + timedelta(hours=1))
    a3 = audit_of(l1, config, version=v1, completed_at=T0 + timedelta(hours=2))  # later, but an older version
    failed = audit_of(l1, config, version=v2, status="failed", completed_at=T0 + timedelta(hours=3))
    evaluation = audit_of(l1, config, version=v2, completed_at=T0 + timedelta(hours=4), purpose="evaluation")
    client = auth_client(manager)
    ids = {a: str(a.pk) for a in (a1, a2, a3, failed, only_v1)}

    assert listed(client, "fiche_id=F-L1") == {ids[a1]: False, ids[a2]: True, ids[a3]: False, ids[failed]: False}
    assert listed(client, "fiche_id=F-L2") == {ids[only_v1]: False}  # only an older version's audit: none counts
    assert listed(client, "counts=true") == {ids[a2]: True}
    assert listed(client, "counts=false") == {
        ids[a1]: False,
        ids[a3]: False,
        ids[failed]: False,
        ids[only_v1]: False,
    }
    assert client.get(f"/api/audits/{a2.pk}").json()["counts"] is True

    # A pin makes an older audit the one that counts; pinning another moves the pin; unpinning restores.
    pinned = client.post(f"/api/audits/{a1.pk}/pin")
    assert pinned.status_code == 200, pinned.content
    assert (pinned.json()["pinned"], pinned.json()["counts"]) == (True, True)
    a1.refresh_from_db()
    assert a1.pinned_by == manager and a1.pinned_at is not None
    assert listed(client, "fiche_id=F-L1") == {ids[a1]: True, ids[a2]: False, ids[a3]: False, ids[failed]: False}
    assert listed(client, "counts=true") == {ids[a1]: True}

    assert client.post(f"/api/audits/{a3.pk}/pin").status_code == 200
    assert listed(client, "counts=true&fiche_id=F-L1") == {ids[a3]: True}
    assert list(Audit.objects.exclude(pinned_at=None).values_list("pk", flat=True)) == [a3.pk]

    unpinned = client.delete(f"/api/audits/{a3.pk}/pin")
    assert unpinned.status_code == 200, unpinned.content
    assert (unpinned.json()["pinned"], unpinned.json()["counts"]) == (False, False)
    assert listed(client, "counts=true") == {ids[a2]: True}
    assert not Audit.objects.exclude(pinned_at=None).exists()
    assert listed(client, "purpose=evaluation") == {str(evaluation.pk): False}


def test_only_a_completed_production_audit_can_be_pinned_by_an_audits_writer_in_scope(
    config, manager, reader, lyon_manager, auth_client
):
    l1, p1 = fiche("F-L1", "Lyon-2"), fiche("F-P1", "Paris-Est")
    done = audit_of(l1, config)
    failed = audit_of(l1, config, status="failed")
    running = audit_of(l1, config, status="running")
    evaluation = audit_of(l1, config, purpose="evaluation")
    paris = audit_of(p1, config)
    client = auth_client(manager)
    for refused in (failed, running, evaluation):
        response = client.post(f"/api/audits/{refused.pk}/pin")
        assert response.status_code == 409 and error(response) == "audit_not_pinnable"
    assert auth_client(reader).post(f"/api/audits/{done.pk}/pin").status_code == 403
    assert auth_client(reader).delete(f"/api/audits/{done.pk}/pin").status_code == 403
    assert auth_client(lyon_manager).post(f"/api/audits/{paris.pk}/pin").status_code == 403
    assert client.post(f"/api/audits/{uuid.uuid4()}/pin").status_code == 404
    assert not Audit.objects.exclude(pinned_at=None).exists()
    assert auth_client(lyon_manager).post(f"/api/audits/{done.pk}/pin").status_code == 200
