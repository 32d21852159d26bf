"""The admin's audit pages: the list with its filters, and the audit page a reviewer reads (score and
niveau, steps and control points, the timeline with verified citations marked where they were said,
rejected quotes listed with their reason); the rerun action queues a new audit."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from django.core.management import call_command

from accounts.models import User
from audits.evidence import EvidenceIndex
from audits.models import Audit, AuditConfig, AuditStepResult, Citation, ControlPointResult
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
