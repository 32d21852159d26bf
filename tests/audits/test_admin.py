"""The admin's audit pages: the list with its filters, and the audit page a reviewer reads (score and
niveau, steps and control points, the timeline with verified citations marked where they were said,
rejected quotes listed with their reason); the rerun action queues a new audit. The QA loop's pages:
disputes (read-only, with the per-control-point metrics page), the AI's trust per control point with its
changes, and the audit page's pending points and disputes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import call_command

from accounts.models import User
from audits.evidence import EvidenceIndex
from audits.models import (
    Audit,
    AuditConfig,
    AuditStepResult,
    Citation,
    ControlPointResult,
    ControlPointTrust,
    ControlPointTrustChange,
    Dispute,
)
from fiches.models import FicheCache
from tests.support import transcribed_call
from transcriptions.selectors import timeline_for

pytestmark = pytest.mark.django_db

CALL = "c-2227002-1"  # a compliant call of the speech-to-text simulator
T0 = datetime(2026, 2, 4, 10, 0, tzinfo=UTC)
TRUE_QUOTE = "est-ce que vous acceptez de poursuivre cet appel"
ALTERED = "je vous rappelle aussi votre droit de rétractation, vous avez trente jours pour changer d'avis"


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_superuser(email="ops@example.com", password="ops-pass-2026")


@pytest.fixture
def audit() -> Audit:
    call_command("seed_audit_configs", verbosity=0)
    config = AuditConfig.objects.get()
    fiche = FicheCache.objects.create(
        fiche_id="2227002", sales_date=date(2026, 2, 4), groupe="Lyon-2", details_success=True, details_fetched_at=T0
    )
    transcribed_call(fiche, CALL, T0)
    audit = Audit.objects.create(
        fiche=fiche,
        config=config,
        config_version=config.current_version,
        status="completed",
        model="sim-judge-1",
        overall_score=90,
        max_score=100,
        score_percentage=90,
        niveau="REJET",
        is_compliant=False,
        needs_review=True,
        critical_issues=[
            {
                "step_position": 7,
                "step_name": "Droit de rétractation",
                "control_point_index": 0,
                "question": "L'agent informe-t-il du délai de rétractation de quatorze jours ?",
                "status": "uncertain",
            }
        ],
        completed_at=T0,
    )
    index = EvidenceIndex(timeline_for(fiche).turns)
    for definition in config.current_version.steps.all():
        row = AuditStepResult.objects.create(
            audit=audit, step=definition, position=definition.position, status="completed", max_score=definition.weight
        )
        if definition.position not in (3, 7):
            continue
        point = ControlPointResult.objects.create(
            step_result=row,
            index=0,
            ai_status="pass",
            status="pass" if definition.position == 3 else "uncertain",
            rationale="selon le modèle",
        )
        check = index.check(TRUE_QUOTE if definition.position == 3 else ALTERED, speaker="agent")
        Citation.objects.create(
            control_point=point,
            quote=check.quote,
            text=check.matched_text or "",
            speaker=check.speaker,
            call_id=check.call_id if check.verified else None,
            start=check.start if check.verified else None,
            end=check.end if check.verified else None,
            verified=check.verified,
            reason=check.reason,
            score=check.score,
        )
    return audit


def test_the_audit_page_marks_verified_citations_in_the_timeline_and_lists_rejected_ones(audit, staff, client):
    client.force_login(staff)
    response = client.get(f"/admin/audits/audit/{audit.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    report = response.context["report"]
    assert report["verified"] == 1 and report["cited_turns"] == 1
    assert 'class="niveau niveau-REJET"' in page and "90.0 %" in page and "needs review" in page
    assert "Consentement à poursuivre" in page and "Droit de rétractation" in page
    cited = [t for t in report["timeline"] if t.cited]
    assert len(cited) == 1
    marked = "".join(p.text for p in cited[0].pieces if p.cited_by)
    assert marked.lower().startswith("est-ce que vous acceptez de poursuivre cet appel")
    assert f'id="{cited[0].anchor}"' in page and f'href="#{cited[0].anchor}"' in page
    assert "<mark" in page and "<sup>3.0</sup>" in page
    assert "number_mismatch" in page and "trente jours" in page  # the altered quote, with its reason
    assert len(report["timeline"]) > 20  # the whole conversation, not only the cited turns


def test_the_list_filters_and_the_rerun_action_queues_a_new_audit(
    audit, staff, client, monkeypatch, django_capture_on_commit_callbacks
):
    queued: list[str] = []
    monkeypatch.setattr("audits.tasks.audit_run.delay", lambda audit_id: queued.append(audit_id))
    client.force_login(staff)
    for query in ("", "?niveau__exact=REJET", "?is_compliant__exact=0", "?needs_review__exact=1", "?q=2227002"):
        response = client.get(f"/admin/audits/audit/{query}")
        assert response.status_code == 200 and str(audit.pk)[:8] in response.content.decode(), query
    assert str(audit.pk)[:8] not in client.get("/admin/audits/audit/?niveau__exact=EXCELLENT").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/audits/audit/", {"action": "rerun", "_selected_action": [str(audit.pk)]}, follow=True
        )
    assert response.status_code == 200 and "Queued 1 audit(s)." in response.content.decode()
    new = Audit.objects.exclude(pk=audit.pk).get()
    assert new.fiche_id == audit.fiche_id and new.status == "pending" and new.requested_by == staff
    assert queued == [str(new.pk)]


# --- The QA loop ----------------------------------------------------------------------------------------


@pytest.fixture
def agent(db) -> User:
    return User.objects.create_user(email="agent@example.com", password="agent-pass-2026", crm_user_id="A-7")


@pytest.fixture
def disputes(audit, agent, staff) -> list[Dispute]:
    """An open dispute on point 7.0, and an accepted one (resolved two days later) on point 3.0."""
    step7 = AuditStepResult.objects.get(audit=audit, position=7)
    step3 = AuditStepResult.objects.get(audit=audit, position=3)
    opened = Dispute.objects.create(
        audit=audit,
        step_result=step7,
        step_position=7,
        control_point_index=0,
        comment="J'ai bien cité les quatorze jours.",
        proposed_status="pass",
        verdict_before="uncertain",
        raised_by=agent,
    )
    accepted = Dispute.objects.create(
        audit=audit,
        step_result=step3,
        step_position=3,
        control_point_index=0,
        status="accepted",
        comment="Le client a dit oui.",
        proposed_status="fail",
        verdict_before="pass",
        verdict_after="fail",
        raised_by=agent,
        resolution_comment="Vérifié à l'écoute.",
        resolved_by=staff,
    )
    Dispute.objects.filter(pk=accepted.pk).update(resolved_at=accepted.created_at + timedelta(days=2))
    return [opened, accepted]


def test_the_dispute_list_is_read_only_filtered_and_searchable(disputes, audit, staff, client):
    client.force_login(staff)
    response = client.get("/admin/audits/dispute/")
    assert response.status_code == 200
    page = response.content.decode()
    assert f'href="/admin/audits/audit/{audit.pk}/change/"' in page and "fiche 2227002" in page
    assert "uncertain → …" in page and "pass → fail" in page and "agent@example.com" in page
    assert 'href="/admin/audits/dispute/metrics/"' in page  # the link to the metrics page
    assert "delete_selected" not in page and "/admin/audits/dispute/add/" not in page
    for query, shown in (
        ("?status__exact=open", 1),
        ("?status__exact=accepted", 1),
        ("?status__exact=rejected", 0),
        (f"?audit__config__id__exact={audit.config_id}", 2),
        ("?q=2227002", 2),
        (f"?q={audit.pk}", 2),
        ("?q=9999999", 0),
    ):
        response = client.get(f"/admin/audits/dispute/{query}")
        assert response.status_code == 200 and response.context["cl"].result_count == shown, query
    view = client.get(f"/admin/audits/dispute/{disputes[0].pk}/change/")
    assert view.status_code == 200
    assert "J&#x27;ai bien cité les quatorze jours." in view.content.decode()
    assert 'name="_save"' not in view.content.decode()  # nothing to change
    assert client.get("/admin/audits/dispute/add/").status_code == 403
    assert client.post(f"/admin/audits/dispute/{disputes[0].pk}/delete/").status_code == 403
    assert Dispute.objects.count() == 2


def test_the_dispute_metrics_page_shows_each_control_point_of_the_chosen_config(disputes, audit, staff, client):
    client.force_login(staff)
    for url in ("/admin/audits/dispute/metrics/", f"/admin/audits/dispute/metrics/?config={audit.config_id}"):
        response = client.get(url)
        assert response.status_code == 200, url
        metrics = response.context["metrics"]
        assert response.context["config"].pk == audit.config_id
        assert metrics["disputes"] == 2 and metrics["acceptance_percent"] == 100.0
        points = {(p["step_position"], p["control_point_index"]): p for p in metrics["control_points"]}
        assert points[(7, 0)]["open"] == 1 and points[(7, 0)]["acceptance_rate"] is None
        assert points[(3, 0)]["accepted"] == 1 and points[(3, 0)]["median_days_to_resolve"] == 2.0
        assert "quatorze jours" in points[(7, 0)]["question"]  # the question of the current version
    page = response.content.decode()
    assert f'<option value="{audit.config_id}" selected>' in page
    assert '<td class="num">2</td>' in page and "100.0 %" in page
    unknown = client.get("/admin/audits/dispute/metrics/?config=999999")
    assert unknown.status_code == 200 and unknown.context["metrics"] is None
    assert "No audit config 999999." in unknown.content.decode()


def test_the_dispute_metrics_page_needs_the_admin(disputes, client, agent):
    response = client.get("/admin/audits/dispute/metrics/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    agent.is_staff = True
    agent.save()
    client.force_login(agent)  # staff without the dispute view permission
    assert client.get("/admin/audits/dispute/metrics/").status_code == 403


def test_the_trust_pages_show_the_state_and_its_changes(audit, staff, client):
    trust = ControlPointTrust.objects.create(
        config=audit.config,
        step_position=7,
        control_point_index=0,
        state="withdrawn",
        kappa=0.31,
        agreement=0.62,
        sample_size=24,
        computed_at=T0,
        changed_at=T0,
    )
    ControlPointTrustChange.objects.create(
        trust=trust, state="withdrawn", previous_state="trusted", kappa=0.31, agreement=0.62, sample_size=24
    )
    ControlPointTrust.objects.create(config=audit.config, step_position=3, control_point_index=0, sample_size=3)
    client.force_login(staff)
    response = client.get("/admin/audits/controlpointtrust/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'background:#b00020">withdrawn</span>' in page and 'background:#1b7f3b">trusted</span>' in page
    assert "0.31" in page and "0.62" in page and "/admin/audits/controlpointtrust/add/" not in page
    assert client.get("/admin/audits/controlpointtrust/?state__exact=withdrawn").context["cl"].result_count == 1
    view = client.get(f"/admin/audits/controlpointtrust/{trust.pk}/change/")
    assert view.status_code == 200
    changes = view.content.decode()
    assert "Control point trust changes" in changes and "trusted" in changes and "24" in changes
    assert 'name="_save"' not in changes
    assert client.get("/admin/audits/controlpointtrust/add/").status_code == 403


def test_the_audit_page_marks_pending_points_and_lists_disputes_in_its_history(disputes, audit, staff, client):
    ControlPointResult.objects.filter(step_result__audit=audit, step_result__position=7).update(advisory=True)
    client.force_login(staff)
    response = client.get(f"/admin/audits/audit/{audit.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "pending review (trust withdrawn)" in page and "AI advice: uncertain" in page
    assert "History (reruns, reviews and disputes)" in page
    assert f'href="/admin/audits/dispute/{disputes[0].pk}/change/"' in page
    assert "verdict uncertain → … (open)" in page and "verdict pass → fail" in page
    assert "Vérifié à l&#x27;écoute." in page and "resolved by ops@example.com" in page
