"""Compliance figures with real workers and the three simulators: audits ending through the pipeline reach the
analytics facts through the audits' hook (a task), with the cost of their LLM and speech-to-text calls from the
usage ledger; a reviewer's verdict moves the figures; a second audit of a fiche replaces the first in them; a
GROUP reader of another group sees nothing of it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from analytics.models import AuditFact, PointFact
from costs.models import UsageRecord
from tests.workflow.conftest import wait_for
from tests.workflow.test_audits import (
    COMPLIANT,
    NO_RECORDING_NOTICE,
    RECORDING_STEP,
    audit_ended,
    client_for,
    detail,
    run_audit,
)
from transcriptions.models import Transcription

pytestmark = [pytest.mark.workflow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def auditor(make_role, make_user):
    role = make_role("analytics-auditor", audits=("rw", "ALL"), fiches=("r", "ALL"))
    return make_user(role, email="analytics-auditor@example.com")


def figures(user, **params) -> list[dict]:
    response = client_for(user).get("/api/analytics/compliance", {"from": "2000-01-01", "to": "2001-12-31", **params})
    assert response.status_code == 200, response.content
    return response.json()["rows"]


def fact_of(audit_id: str) -> AuditFact:
    return wait_for(
        lambda: AuditFact.objects.filter(audit_id=audit_id).first(), timeout=30, message=f"the fact of {audit_id}"
    )


def test_audits_reach_the_figures_with_their_cost_and_reviews_move_them(audit_stack, auditor, make_role, make_user):
    crm, stt, llm, pusher, start = audit_stack
    start("analytics")
    clean_id = run_audit(auditor, COMPLIANT)
    rejet_id = run_audit(auditor, NO_RECORDING_NOTICE)
    assert audit_ended(clean_id).status == "completed" and audit_ended(rejet_id).status == "completed"
    clean, rejet = fact_of(clean_id), fact_of(rejet_id)
    assert (clean.niveau, clean.is_compliant, rejet.niveau) == ("EXCELLENT", True, "REJET")
    data = detail(auditor, rejet_id)
    assert rejet.critical_misses == len(data["critical_issues"]) >= 1

    # Its cost is the ledger's: the audit's LLM calls, and the fiche's speech-to-text seconds at the hour's price.
    llm_calls = UsageRecord.objects.filter(audit_id=clean_id, kind="llm")
    assert llm_calls.count() == 9 and clean.llm_cost > 0  # one call per step of the default config
    seconds = sum(t.duration_seconds for t in Transcription.objects.filter(fiche_id=clean.fiche_id))
    assert clean.audited_seconds == pytest.approx(seconds) and seconds > 0
    assert clean.stt_cost > 0

    dates = {clean.sales_date.isoformat(), rejet.sales_date.isoformat()}
    window = {"from": min(dates), "to": max(dates)}
    [overall] = figures(auditor, **window)
    assert (overall["audits"], overall["compliant"], overall["niveaux"]["REJET"]) == (2, 1, 1)
    total = clean.llm_cost + clean.stt_cost + rejet.llm_cost + rejet.stt_cost
    assert Decimal(overall["cost"]) == total
    minutes = Decimal((clean.audited_seconds + rejet.audited_seconds) / 60)
    assert Decimal(overall["cost_per_audited_minute"]) == (total / minutes).quantize(Decimal("0.000001"))

    # Both sales are Lyon-2's: a Marseille reader gets no figure built from them.
    marseille = make_user(make_role("marseille", audits=("r", "GROUP")), groupes=["Marseille"])
    assert figures(marseille, **window) == []

    # A reviewer passes the missed recording notice: the verdicts that count change, and so do the figures.
    recording = next(s for s in data["steps"] if s["position"] == RECORDING_STEP)
    missed = [p["index"] for p in recording["control_points"] if p["status"] in ("fail", "uncertain")]
    assert missed
    for index in missed:
        response = client_for(auditor).post(
            f"/api/audits/{rejet_id}/steps/{RECORDING_STEP}/reviews",
            {"control_point_index": index, "status": "pass", "comment": "Mention faite en fin d'appel."},
            format="json",
        )
        assert response.status_code in (200, 201), response.content
    wait_for(
        lambda: (
            PointFact.objects.filter(
                audit_id=rejet_id, step_position=RECORDING_STEP, control_point_index__in=missed, status="pass"
            ).count()
            == len(missed)
        ),
        timeout=30,
        message="the reviewed verdicts in the facts",
    )
    assert detail(auditor, rejet_id)["niveau"] != "REJET"
    [overall] = figures(auditor, **window)
    assert overall["niveaux"]["REJET"] == 0 and overall["critical_misses"] == 0

    # A second audit of the clean fiche is the one that counts now: one fact per fiche and config, never two.
    again_id = run_audit(auditor, COMPLIANT)
    assert audit_ended(again_id).status == "completed"
    fact_of(again_id)
    assert AuditFact.objects.filter(fiche_id=clean.fiche_id).count() == 1
    assert not PointFact.objects.filter(audit_id=clean_id).exists()
    [overall] = figures(auditor, **window)
    assert overall["audits"] == 2
