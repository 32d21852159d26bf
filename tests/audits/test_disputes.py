"""Disputes through the API (JWT): the sale's agent contests one control point's verdict; a reviewer with
audits write in scope accepts it (the verdict changes through the review path: rescored, one review, history,
events) or rejects it (the verdict stays, the agent reads why). One open dispute per point, none again on a
resolved verdict that has not changed, a window after the audit's completion; who may dispute and who may
resolve; metrics per control point, filtered by the reader's scope."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from audits.models import Audit, AuditConfig, AuditStepResult, ControlPointResult, Dispute, HumanReview
from audits.services import disputes as dispute_service
from audits.services import reviews as review_service
from audits.services.reviews import recompute_audit, rescore_step
from fiches.models import FicheCache

pytestmark = pytest.mark.django_db

WITHDRAWAL = 7  # "Droit de rétractation": critical step, one critical point (weight 10 of 100)
NEEDS = 5  # "Analyse des besoins": not critical, three points (weight 10)


@pytest.fixture
def fiches() -> dict[str, FicheCache]:
    def fiche(fiche_id: str, groupe: str, agent: str) -> FicheCache:
        return FicheCache.objects.create(
            fiche_id=fiche_id,
            sales_date=timezone.localdate(),
            groupe=groupe,
            crm_user_id=agent,
            details_success=True,
            details_fetched_at=timezone.now(),
        )

    return {"lyon": fiche("F-LYON", "Lyon-2", "agent-1"), "paris": fiche("F-PARIS", "Paris-Est", "agent-2")}


@pytest.fixture
def users(make_role, make_user) -> dict:
    seller = make_role("seller", audits=("r", "SELF"))
    return {
        "agent": make_user(seller, email="agent@example.com", crm_user_id="agent-1"),
        "other_agent": make_user(seller, email="other-agent@example.com", crm_user_id="agent-9"),
        "paris_agent": make_user(seller, email="paris-agent@example.com", crm_user_id="agent-2"),
        "lyon_lead": make_user(
            make_role("lead", audits=("r", "GROUP")), email="lead@example.com", groupes=["Lyon-2"], crm_user_id="x-3"
        ),
        "reviewer": make_user(make_role("reviewer", audits=("rw", "ALL")), email="reviewer@example.com"),
        "paris_reviewer": make_user(
            make_role("paris", audits=("rw", "GROUP")), email="paris-reviewer@example.com", groupes=["Paris-Est"]
        ),
    }


@pytest.fixture
def published(monkeypatch) -> list[tuple[str, dict]]:
    """Events published by the dispute and review services (still validated by the real publisher)."""
    calls: list[tuple[str, dict]] = []
    for module in (dispute_service, review_service):
        real = module.publish

        def spy(event, payload, _real=real, **kwargs):
            calls.append((event, payload))
            _real(event, payload, **kwargs)

        monkeypatch.setattr(module, "publish", spy)
    return calls


def completed_audit(
    fiche: FicheCache,
    config: AuditConfig,
    verdicts: dict[tuple[int, int], str] | None = None,
    completed_at: datetime | None = None,
) -> Audit:
    """A completed audit whose every point passed, except ``verdicts`` ({(position, index): status})."""
    verdicts = verdicts or {}
    version = config.current_version
    assert version is not None
    audit = Audit.objects.create(
        fiche=fiche,
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
        rescore_step(row)
    recompute_audit(audit)
    audit.refresh_from_db()
    return audit


def dispute_url(audit: Audit, position: int = WITHDRAWAL, index: int = 0) -> str:
    return f"/api/audits/{audit.pk}/steps/{position}/control-points/{index}/disputes"


def error(response) -> str:
    return response.json()["error"]["code"]


def test_the_agent_disputes_and_a_reviewer_accepts_through_the_review_path(
    config, fiches, users, auth_client, published
):
    audit = completed_audit(fiches["lyon"], config, {(WITHDRAWAL, 0): "fail"})
    assert (audit.niveau, audit.score_percentage) == ("REJET", 90.0)
    agent, reviewer = auth_client(users["agent"]), auth_client(users["reviewer"])

    opened = agent.post(dispute_url(audit), {"comment": "J'ai annoncé les 14 jours à 03:12."}, format="json")
    assert opened.status_code == 201, opened.content
    dispute = opened.json()
    assert {k: dispute[k] for k in ("audit_id", "step_position", "control_point_index", "status")} == {
        "audit_id": str(audit.pk),
        "step_position": WITHDRAWAL,
        "control_point_index": 0,
        "status": "open",
    }
    # The verdict asked for defaults to pass (the point failed); nothing is resolved yet.
    assert (dispute["verdict_before"], dispute["proposed_status"], dispute["verdict_after"]) == ("fail", "pass", None)
    assert (dispute["raised_by"], dispute["resolved_by"], dispute["resolution_comment"]) == (
        "agent@example.com",
        None,
        None,
    )
    assert published == [
        (
            "audit.dispute_opened",
            {
                "audit_id": str(audit.pk),
                "dispute_id": dispute["id"],
                "step_position": WITHDRAWAL,
                "control_point_index": 0,
                "verdict": "fail",
                "proposed_status": "pass",
                "status": "open",
            },
        )
    ]

    again = agent.post(dispute_url(audit), {"comment": "Encore."}, format="json")
    assert again.status_code == 409 and error(again) == "dispute_open"
    assert again.json()["error"]["details"]["dispute_id"] == dispute["id"]
    assert Dispute.objects.count() == 1

    published.clear()
    accepted = reviewer.post(
        f"/api/disputes/{dispute['id']}/accept", {"comment": "Réécouté : délai annoncé."}, format="json"
    )
    assert accepted.status_code == 200, accepted.content
    assert {k: accepted.json()[k] for k in ("status", "verdict_before", "verdict_after", "resolved_by")} == {
        "status": "accepted",
        "verdict_before": "fail",
        "verdict_after": "pass",
        "resolved_by": "reviewer@example.com",
    }
    assert accepted.json()["resolution_comment"] == "Réécouté : délai annoncé."
    audit.refresh_from_db()
    assert (audit.niveau, audit.score_percentage, audit.is_compliant, audit.critical_issues) == (
        "EXCELLENT",
        100.0,
        True,
        [],
    )
    shown = reviewer.get(f"/api/audits/{audit.pk}").json()
    assert (shown["niveau"], shown["score_percentage"]) == ("EXCELLENT", 100.0)
    the_review = HumanReview.objects.get()  # exactly one review: the verdict changed through the review path
    assert (the_review.status, the_review.previous_status, the_review.reviewer_id) == (
        "pass",
        "fail",
        users["reviewer"].pk,
    )
    assert the_review.comment == "Contestation acceptée : Réécouté : délai annoncé."
    assert Dispute.objects.get().review_id == the_review.pk
    assert [e for e, _ in published] == ["audit.reviewed", "audit.dispute_resolved"]
    assert published[1][1]["verdict_after"] == "pass" and published[1][1]["status"] == "accepted"

    history = reviewer.get(f"/api/audits/{audit.pk}/history").json()["entries"]
    assert [(e["type"], e["step_position"], e["control_point_index"], e["status"]) for e in history] == [
        ("dispute", WITHDRAWAL, 0, "accepted"),
        ("review", WITHDRAWAL, 0, "pass"),
    ]
    assert history[0]["at"] <= history[1]["at"]

    # The verdict the dispute settled has not changed since: no new dispute on it.
    closed = agent.post(dispute_url(audit), {"comment": "Et encore."}, format="json")
    assert closed.status_code == 409 and error(closed) == "dispute_already_resolved"
    # Resolving twice: 409.
    twice = reviewer.post(f"/api/disputes/{dispute['id']}/reject", {"comment": "Non."}, format="json")
    assert twice.status_code == 409 and error(twice) == "dispute_not_open"


def test_a_rejected_dispute_keeps_the_verdict_and_the_agent_reads_the_answer(config, fiches, users, auth_client):
    audit = completed_audit(fiches["lyon"], config, {(NEEDS, 1): "fail"})
    before = (audit.niveau, audit.score_percentage)
    agent, reviewer = auth_client(users["agent"]), auth_client(users["reviewer"])
    opened = agent.post(dispute_url(audit, NEEDS, 1), {"comment": "J'ai posé la question.", "proposed_status": "pass"})
    assert opened.status_code == 201, opened.content
    blank = reviewer.post(f"/api/disputes/{opened.json()['id']}/reject", {"comment": "  "}, format="json")
    assert blank.status_code == 400  # a resolution always says why

    rejected = reviewer.post(
        f"/api/disputes/{opened.json()['id']}/reject", {"comment": "La question n'est pas posée."}, format="json"
    )
    assert rejected.status_code == 200, rejected.content
    assert (rejected.json()["status"], rejected.json()["verdict_after"]) == ("rejected", "fail")
    audit.refresh_from_db()
    assert (audit.niveau, audit.score_percentage) == before
    assert not HumanReview.objects.exists()
    point = ControlPointResult.objects.get(step_result__audit=audit, step_result__position=NEEDS, index=1)
    assert (point.human_status, point.effective_status) == (None, "fail")

    seen = agent.get(f"/api/audits/{audit.pk}/disputes")
    assert seen.status_code == 200, seen.content
    assert [(d["status"], d["verdict_after"], d["resolution_comment"], d["resolved_by"]) for d in seen.json()] == [
        ("rejected", "fail", "La question n'est pas posée.", "reviewer@example.com")
    ]
    assert agent.get(f"/api/disputes/{opened.json()['id']}").json()["status"] == "rejected"
    again = agent.post(dispute_url(audit, NEEDS, 1), {"comment": "Je maintiens."}, format="json")
    assert again.status_code == 409 and error(again) == "dispute_already_resolved"

    # A verdict in the agent's favour is not theirs to dispute (nor a pending one: it awaits a reviewer).
    body = {"control_point_index": 1, "status": "not_applicable", "comment": "Sans objet."}
    assert reviewer.post(f"/api/audits/{audit.pk}/steps/{NEEDS}/reviews", body, format="json").status_code == 201
    favour = agent.post(dispute_url(audit, NEEDS, 1), {"comment": "Il fallait pass."}, format="json")
    assert favour.status_code == 422 and error(favour) == "verdict_not_disputable"
    ControlPointResult.objects.filter(step_result__audit=audit, step_result__position=NEEDS, index=0).update(
        advisory=True
    )
    pending = agent.post(dispute_url(audit, NEEDS, 0), {"comment": "En attente."}, format="json")
    assert pending.status_code == 422 and error(pending) == "verdict_not_disputable"
    assert pending.json()["error"]["details"]["verdict"] == "pending"
    assert Dispute.objects.count() == 1


def test_the_dispute_window_closes_days_after_completion(config, fiches, users, auth_client, settings):
    assert settings.AUDIT_DISPUTE_WINDOW_DAYS == 14
    agent = auth_client(users["agent"])
    late = completed_audit(
        fiches["lyon"], config, {(WITHDRAWAL, 0): "fail"}, completed_at=timezone.now() - timedelta(days=14, minutes=1)
    )
    closed = agent.post(dispute_url(late), {"comment": "Trop tard ?"}, format="json")
    assert closed.status_code == 422 and error(closed) == "dispute_window_closed"
    in_time = completed_audit(
        fiches["lyon"], config, {(WITHDRAWAL, 0): "fail"}, completed_at=timezone.now() - timedelta(days=13, hours=23)
    )
    assert agent.post(dispute_url(in_time), {"comment": "Dans les temps."}, format="json").status_code == 201
    assert Dispute.objects.get().audit_id == in_time.pk


def test_who_may_dispute_and_who_may_resolve(config, fiches, users, auth_client, make_role):
    audit = completed_audit(fiches["lyon"], config, {(WITHDRAWAL, 0): "fail"})
    body = {"comment": "Contestation."}

    # Another agent: the audit is outside their SELF scope (403 scope_denied); an unknown audit: 404.
    foreign = auth_client(users["other_agent"]).post(dispute_url(audit), body, format="json")
    assert foreign.status_code == 403 and error(foreign) == "scope_denied"
    unknown = auth_client(users["other_agent"]).post(
        f"/api/audits/00000000-0000-0000-0000-000000000000/steps/{WITHDRAWAL}/control-points/0/disputes", body
    )
    assert unknown.status_code == 404
    # A team lead reads the audit (GROUP) but it is not their sale.
    lead = auth_client(users["lyon_lead"]).post(dispute_url(audit), body, format="json")
    assert lead.status_code == 403 and error(lead) == "not_the_agent"
    # Unknown point, bad proposed verdict.
    missing = auth_client(users["agent"]).post(dispute_url(audit, WITHDRAWAL, 9), body, format="json")
    assert missing.status_code == 404 and error(missing) == "control_point_not_found"
    for proposed in ("uncertain", "fail"):  # a dispute asks for a verdict in the agent's favour
        bad = auth_client(users["agent"]).post(dispute_url(audit), {**body, "proposed_status": proposed})
        assert bad.status_code == 400, proposed
    passed = auth_client(users["agent"]).post(dispute_url(audit, 1, 0), body, format="json")
    assert passed.status_code == 422 and error(passed) == "verdict_not_disputable"  # a pass is not held against them
    assert not Dispute.objects.exists()

    opened = auth_client(users["agent"]).post(dispute_url(audit), body, format="json")
    assert opened.status_code == 201, opened.content
    accept = f"/api/disputes/{opened.json()['id']}/accept"
    # A SELF reader (the agent) has no audits write; a reviewer whose write scope excludes the audit neither.
    seller = auth_client(users["agent"]).post(accept, {"comment": "Accepté."}, format="json")
    assert seller.status_code == 403 and error(seller) == "permission_denied"
    outsider = auth_client(users["paris_reviewer"]).post(accept, {"comment": "Accepté."}, format="json")
    assert outsider.status_code == 403 and error(outsider) == "scope_denied"
    outsider_reject = auth_client(users["paris_reviewer"]).post(
        accept.replace("accept", "reject"), {"comment": "Refusé."}, format="json"
    )
    assert outsider_reject.status_code == 403
    assert auth_client(users["paris_reviewer"]).get(f"/api/disputes/{opened.json()['id']}").status_code == 403
    assert (
        auth_client(users["reviewer"])
        .post("/api/disputes/00000000-0000-0000-0000-000000000000/accept", {"comment": "?"}, format="json")
        .status_code
        == 404
    )
    # The agent who also reviews (audits write on their own sales) still may not resolve their own dispute.
    users["agent"].roles.add(make_role("self-writer", audits=("rw", "SELF")))
    own = auth_client(users["agent"]).post(accept, {"comment": "Accepté."}, format="json")
    assert own.status_code == 403 and error(own) == "own_dispute"
    # Accepting with the verdict it already has is no acceptance.
    same = auth_client(users["reviewer"]).post(accept, {"comment": "Oui.", "status": "fail"}, format="json")
    assert same.status_code == 400
    dispute = Dispute.objects.get()
    assert (dispute.status, dispute.resolved_by_id, HumanReview.objects.count()) == ("open", None, 0)
    ok = auth_client(users["reviewer"]).post(accept, {"comment": "Oui.", "status": "not_applicable"}, format="json")
    assert ok.status_code == 200 and ok.json()["verdict_after"] == "not_applicable"


def test_dispute_metrics_and_lists_follow_the_readers_scope(config, fiches, users, auth_client):
    """Lyon: 7.0 accepted after 2 days, 5.1 rejected after 1 day, 7.0 of a second audit open. Paris: 7.0
    rejected after 4 days. Everyone (ALL): 4 disputes, 1 accepted of 3 resolved; 7.0 median (2+4)/2 = 3 days.
    A Lyon team lead (GROUP) sees the Lyon ones only: 3 disputes, 1 of 2."""
    verdicts = {(WITHDRAWAL, 0): "fail", (NEEDS, 1): "fail"}
    lyon_1, lyon_2 = (completed_audit(fiches["lyon"], config, verdicts) for _ in range(2))
    paris = completed_audit(fiches["paris"], config, verdicts)
    agent, paris_agent = auth_client(users["agent"]), auth_client(users["paris_agent"])
    reviewer = auth_client(users["reviewer"])

    def open_one(client, audit, position, index) -> str:
        response = client.post(dispute_url(audit, position, index), {"comment": "Contestation."}, format="json")
        assert response.status_code == 201, response.content
        return response.json()["id"]

    accepted = open_one(agent, lyon_1, WITHDRAWAL, 0)
    rejected = open_one(agent, lyon_1, NEEDS, 1)
    open_one(agent, lyon_2, WITHDRAWAL, 0)
    paris_rejected = open_one(paris_agent, paris, WITHDRAWAL, 0)
    assert reviewer.post(f"/api/disputes/{accepted}/accept", {"comment": "Oui."}, format="json").status_code == 200
    for pk in (rejected, paris_rejected):
        assert reviewer.post(f"/api/disputes/{pk}/reject", {"comment": "Non."}, format="json").status_code == 200
    start = timezone.now() - timedelta(days=10)
    for pk, days in ((accepted, 2), (rejected, 1), (paris_rejected, 4)):
        Dispute.objects.filter(pk=pk).update(created_at=start, resolved_at=start + timedelta(days=days))

    everyone = reviewer.get(f"/api/disputes/metrics?audit_config_id={config.pk}")
    assert everyone.status_code == 200, everyone.content
    assert (everyone.json()["disputes"], everyone.json()["acceptance_rate"]) == (4, 0.3333)
    assert everyone.json()["control_points"] == [
        {
            "step_position": WITHDRAWAL,
            "control_point_index": 0,
            "disputes": 3,
            "open": 1,
            "accepted": 1,
            "rejected": 1,
            "acceptance_rate": 0.5,
            "median_days_to_resolve": 3.0,
        },
        {
            "step_position": NEEDS,
            "control_point_index": 1,
            "disputes": 1,
            "open": 0,
            "accepted": 0,
            "rejected": 1,
            "acceptance_rate": 0.0,
            "median_days_to_resolve": 1.0,
        },
    ]

    lead = auth_client(users["lyon_lead"])
    mine = lead.get(f"/api/disputes/metrics?audit_config_id={config.pk}").json()
    assert (mine["disputes"], mine["acceptance_rate"]) == (3, 0.5)
    assert [
        (p["step_position"], p["disputes"], p["rejected"], p["median_days_to_resolve"]) for p in mine["control_points"]
    ] == [
        (WITHDRAWAL, 2, 0, 2.0),
        (NEEDS, 1, 1, 1.0),
    ]
    assert lead.get("/api/disputes/metrics").status_code == 400  # the config is required
    listed = lead.get("/api/disputes").json()
    assert listed["count"] == 3 and paris_rejected not in {d["id"] for d in listed["results"]}
    assert {d["id"] for d in lead.get("/api/disputes?status=rejected").json()["results"]} == {rejected}
    assert lead.get(f"/api/disputes/{paris_rejected}").status_code == 403
    assert lead.get(f"/api/audits/{paris.pk}/disputes").status_code == 403
    # The agent sees their own sales' disputes only.
    assert {d["audit_id"] for d in agent.get("/api/disputes").json()["results"]} == {str(lyon_1.pk), str(lyon_2.pk)}
    assert paris_agent.get(f"/api/disputes/metrics?audit_config_id={config.pk}").json()["disputes"] == 1
