"""The admin's audit pages: the list with its filters, and the audit page a reviewer reads (score and
niveau, steps and control points, the timeline with verified citations marked where they were said,
rejected quotes listed with their reason); the rerun action queues a new audit. The QA loop's pages:
disputes (read-only, with the per-control-point metrics page), the AI's trust per control point with its
changes, and the audit page's pending points and disputes. Evaluations (the result of a draft beside the
active version, the progress of a running one), the versions' draft / active state and the evaluation an
activation was based on, and a re-audit's page beside its predecessor."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import call_command

from accounts.models import User
from audits.evidence import EvidenceIndex
from audits.models import (
    Audit,
    AuditConfig,
    AuditConfigVersion,
    AuditStepResult,
    Citation,
    ControlPointResult,
    ControlPointTrust,
    ControlPointTrustChange,
    Dispute,
    Evaluation,
    HumanReview,
)
from audits.services.configs import config_content, config_update, version_activate
from audits.services.evaluations import evaluation_result
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


# --- Evaluations, versions and re-audits ----------------------------------------------------------------

# The reviewers' verdicts (the truth) on points 3.0 and 7.0 of three fiches; what the active version (v1) and
# the draft (v2) said on the evaluation's audits. v2 fixes 3.0 on F-B and breaks 7.0 on F-A; 1.0 on F-A
# changed too but no reviewer judged it.
TRUTH = {
    "2227002": {(3, 0): "pass", (7, 0): "fail"},
    "F-B": {(3, 0): "fail", (7, 0): "pass"},
    "F-C": {(3, 0): "pass", (7, 0): "fail"},
}
SAID = {
    1: {
        "2227002": {(1, 0): "pass", (3, 0): "pass", (7, 0): "fail"},
        "F-B": {(3, 0): "pass", (7, 0): "pass"},
        "F-C": {(3, 0): "pass", (7, 0): "fail"},
    },
    2: {
        "2227002": {(1, 0): "fail", (3, 0): "pass", (7, 0): "pass"},
        "F-B": {(3, 0): "fail", (7, 0): "pass"},
        "F-C": {(3, 0): "pass", (7, 0): "fail"},
    },
}


def _quote(fiche_id: str, version: int, point: tuple[int, int], status: str) -> str:
    return f"v{version} {fiche_id} {point[0]}.{point[1]} {status}: « vous avez quatorze jours »"


def _results(audit: Audit, version: AuditConfigVersion, verdicts: dict[tuple[int, int], str], *, quotes: bool) -> None:
    """Step results and control point verdicts of ``audit`` (a verified quote for each when ``quotes``)."""
    for position in sorted({p for p, _ in verdicts}):
        step = AuditStepResult.objects.get_or_create(
            audit=audit,
            position=position,
            defaults={"step": version.steps.get(position=position), "status": "completed", "score": 5, "max_score": 10},
        )[0]
        for (p, index), status in verdicts.items():
            if p != position:
                continue
            point = ControlPointResult.objects.create(step_result=step, index=index, ai_status=status, status=status)
            if quotes:
                text = _quote(audit.fiche.fiche_id, version.version, (p, index), status)
                Citation.objects.create(control_point=point, quote=text, text=text, verified=True, call_id=CALL)


@pytest.fixture
def versions(audit, staff) -> tuple[AuditConfigVersion, AuditConfigVersion]:
    """The seeded v1 (active) and a draft v2 (stricter thresholds)."""
    content = config_content(audit.config)
    config_update(
        config_id=audit.config_id,
        patch={"draft": True, "thresholds": {**content["thresholds"], "excellent": 95}},
        user=staff,
    )
    v1, v2 = AuditConfigVersion.objects.filter(config=audit.config).order_by("version")
    assert v2.is_draft and AuditConfig.objects.get().current_version_id == v1.pk
    return v1, v2


@pytest.fixture
def evaluation(audit, versions, staff) -> Evaluation:
    """A completed evaluation of the draft v2 beside the active v1 over three reviewed fiches, its result
    computed by the service from hand-made audits."""
    v1, v2 = versions
    fiches = {"2227002": audit.fiche}
    for fiche_id in ("F-B", "F-C"):
        fiches[fiche_id] = FicheCache.objects.create(
            fiche_id=fiche_id, sales_date=date(2026, 2, 4), groupe="Lyon-2", details_success=True, details_fetched_at=T0
        )
    for fiche_id, truth in TRUTH.items():  # the reviewers' verdicts, on production audits of v1
        production = audit
        if fiche_id != audit.fiche.fiche_id:
            production = Audit.objects.create(
                fiche=fiches[fiche_id], config=audit.config, config_version=v1, status="completed", completed_at=T0
            )
            _results(production, v1, dict.fromkeys(truth, "uncertain"), quotes=False)
        for (position, index), status in truth.items():
            HumanReview.objects.create(
                step_result=AuditStepResult.objects.get(audit=production, position=position),
                control_point_index=index,
                status=status,
                comment="écouté",
                ai_status="uncertain",
                previous_status="uncertain",
                config=audit.config,
                step_position=position,
                reviewer=staff,
            )
    evaluation = Evaluation.objects.create(
        config=audit.config,
        version=v2,
        baseline_version=v1,
        fiche_ids=list(TRUTH),
        status="completed",
        started_at=T0,
        completed_at=T0 + timedelta(minutes=3),
        requested_by=staff,
    )
    for version in (v1, v2):
        for n, fiche_id in enumerate(TRUTH):
            made = Audit.objects.create(
                fiche=fiches[fiche_id],
                config=audit.config,
                config_version=version,
                purpose="evaluation",
                evaluation=evaluation,
                status="completed",
                total_tokens=1000 * version.version + n,
                started_at=T0 + timedelta(seconds=n),
                completed_at=T0 + timedelta(seconds=60 * version.version + n),
            )
            _results(made, version, SAID[version.version][fiche_id], quotes=True)
    evaluation.result = evaluation_result(evaluation)
    evaluation.save(update_fields=["result"])
    return evaluation


def test_the_evaluation_page_shows_the_draft_beside_the_active_version(evaluation, audit, staff, client):
    result = evaluation.result
    assert len(result["changed"]) == 3 and result["reviewed_points"] == 6  # the fixture's scenario, as computed
    points = {(p["step_position"], p["control_point_index"]): p for p in result["control_points"]}
    assert points[(7, 0)]["kappa_delta"] < 0 < points[(3, 0)]["kappa_delta"]
    client.force_login(staff)
    response = client.get(f"/admin/audits/evaluation/{evaluation.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    report = response.context["evaluation_report"]["result"]
    # The overall header: agreement and kappa of v2 beside v1, tokens, wall time, failed audits.
    header = {card["label"]: card for card in report["header"]}
    assert header["Agreement with reviewers"]["value"] == "83.3 %"
    assert header["Agreement with reviewers"]["baseline"] == "v1: 83.3 %"
    assert header["Cohen's kappa"]["value"] == f"{result['overall']['candidate']['kappa']:.3f}"
    assert header["Tokens"]["value"] == "6,003" and header["Tokens"]["baseline"] == "v1: 3,003"
    assert header["Wall time"]["value"] == "2 min 02 s" and header["Wall time"]["baseline"] == "v1: 1 min 02 s"
    assert header["Audits failed"]["value"] == "0 of 3"
    assert "Overall: v2 vs v1" in page and "6,003" in page and "2 min 02 s" in page
    # Each control point, the drop highlighted.
    assert report["worse_points"] == 1 and report["better_points"] == 1
    assert '<tr class="worse-row">' in page and '<td class="num worse">-0.600</td>' in page
    assert '<td class="num better">+1.000</td>' in page
    assert "quatorze jours" in page  # the seeded question of 7.0
    # The changed verdicts: both verdicts and quotes, which one the reviewer agrees with, links to the audits.
    assert report["fixed"] == 1 and report["broken"] == 1
    changed = {(c["fiche_id"], c["point"]): c for c in report["changed"]}
    assert changed[("F-B", "3.0")]["candidate"]["agrees"] and not changed[("F-B", "3.0")]["baseline"]["agrees"]
    assert changed[("2227002", "7.0")]["baseline"]["agrees"] and changed[("2227002", "1.0")]["reviewer"] is None
    assert "« v1 F-B 3.0 pass: « vous avez quatorze jours » »" in page.replace("&#x27;", "'")
    assert "v2 F-B 3.0 fail" in page and "✓ as the reviewer" in page
    assert 'title="No reviewer judged this point on this fiche."' in page  # 1.0 on 2227002
    # The regression first, then the fix, then the point no reviewer judged.
    assert [(c["fiche_id"], c["point"], c["outcome"]) for c in report["changed"]] == [
        ("2227002", "7.0", "worse"),
        ("F-B", "3.0", "better"),
        ("2227002", "1.0", ""),
    ]
    assert page.index('<tr class="worse-row">\n        <td>2227002</td>') < page.index('<tr class="better-row">')
    v2_audit = Audit.objects.get(evaluation=evaluation, fiche__fiche_id="F-B", config_version=evaluation.version)
    assert f'href="/admin/audits/audit/{v2_audit.pk}/change/"' in page
    # Links to the evaluation's audits: the audit list filtered by evaluation (and by version).
    assert f"/admin/audits/audit/?evaluation__id__exact={evaluation.pk}" in page
    listed = client.get(f"/admin/audits/audit/?evaluation__id__exact={evaluation.pk}")
    assert listed.status_code == 200 and listed.context["cl"].result_count == 6
    by_version = client.get(
        f"/admin/audits/audit/?evaluation__id__exact={evaluation.pk}&config_version__id__exact={evaluation.version_id}"
    )
    assert by_version.context["cl"].result_count == 3
    assert client.get("/admin/audits/audit/?purpose__exact=evaluation").context["cl"].result_count == 6
    assert 'name="_save"' not in page and client.get("/admin/audits/evaluation/add/").status_code == 403


def test_the_evaluation_list_shows_versions_kappas_and_changes(evaluation, staff, client):
    client.force_login(staff)
    response = client.get("/admin/audits/evaluation/")
    assert response.status_code == 200
    page = response.content.decode()
    assert str(evaluation.pk)[:8] in page and "v2 vs v1" in page and ">completed</span>" in page
    overall = evaluation.result["overall"]
    assert f"{overall['candidate']['kappa']:.3f}" in page and f"{overall['baseline']['kappa']:.3f}" in page
    assert '<td class="field-changed_count">3</td>' in page and '<td class="field-fiches_count">3</td>' in page
    assert "ops@example.com" in page
    for query, shown in (
        ("?status__exact=completed", 1),
        ("?status__exact=running", 0),
        (f"?config__id__exact={evaluation.config_id}", 1),
    ):
        assert client.get(f"/admin/audits/evaluation/{query}").context["cl"].result_count == shown, query


def test_a_running_evaluation_shows_its_progress(audit, versions, staff, client):
    v1, v2 = versions
    evaluation = Evaluation.objects.create(
        config=audit.config, version=v2, baseline_version=v1, fiche_ids=["2227002", "F-B", "F-C"], status="running"
    )
    for version, status in ((v1, "completed"), (v1, "failed"), (v1, "running"), (v2, "completed"), (v2, "pending")):
        Audit.objects.create(
            fiche=audit.fiche,
            config=audit.config,
            config_version=version,
            purpose="evaluation",
            evaluation=evaluation,
            status=status,
        )
    client.force_login(staff)
    response = client.get(f"/admin/audits/evaluation/{evaluation.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    progress = response.context["evaluation_report"]["progress"]
    assert (progress["done"], progress["made"], progress["total"], progress["percent"]) == (3, 5, 6, 50)
    assert "<h2>Progress</h2>" in page and "3 of 6 audits ended (50 %); 5 made so far." in page
    assert "2 completed" in page and "1 failed" in page and "1 running" in page and "1 pending" in page
    assert f"?evaluation__id__exact={evaluation.pk}&amp;status__exact=failed" in page
    assert "Overall:" not in page and "No result." not in page
    listed = client.get("/admin/audits/evaluation/").content.decode()
    assert ">running</span>" in listed and "3 / 5 audits" in listed


def test_the_versions_show_draft_active_and_the_evaluation_behind_an_activation(evaluation, versions, staff, client):
    v1, v2 = versions
    client.force_login(staff)
    page = client.get("/admin/audits/auditconfigversion/").content.decode()
    assert 'background:#1b7f3b">active</span>' in page and 'background:#b08900">draft</span>' in page
    assert f'href="/admin/audits/evaluation/?version__id__exact={v2.pk}">1 evaluation</a>' in page
    assert client.get("/admin/audits/auditconfigversion/?is_draft__exact=1").context["cl"].result_count == 1
    version_activate(config_id=v2.config_id, number=2, user=staff, evaluation_id=str(evaluation.pk))
    page = client.get("/admin/audits/auditconfigversion/").content.decode()
    assert "draft</span>" not in page and 'background:#888">inactive</span>' in page
    assert f'href="/admin/audits/evaluation/{evaluation.pk}/change/">evaluation {str(evaluation.pk)[:8]}</a>' in page
    view = client.get(f"/admin/audits/auditconfigversion/{v2.pk}/change/")
    assert view.status_code == 200
    content = view.content.decode()
    assert f"/admin/audits/evaluation/{evaluation.pk}/change/" in content and "ops@example.com" in content
    assert 'name="_save"' not in content
    assert client.post(f"/admin/audits/auditconfigversion/{v1.pk}/delete/").status_code == 403
    config_page = client.get(f"/admin/audits/auditconfig/{v2.config_id}/change/").content.decode()
    assert "active</span>" in config_page and "inactive</span>" in config_page  # the config's versions


@pytest.fixture
def reaudit(audit, staff) -> Audit:
    """A re-audit of the fixture's audit, pinned: 7.0 went from uncertain to fail, 3.0 stayed pass."""
    reaudit = Audit.objects.create(
        fiche=audit.fiche,
        config=audit.config,
        config_version=audit.config_version,
        status="completed",
        overall_score=80,
        max_score=100,
        score_percentage=80,
        niveau="BON",
        is_compliant=True,
        predecessor=audit,
        pinned_at=T0 + timedelta(days=1),
        pinned_by=staff,
        completed_at=T0 + timedelta(days=1),
    )
    _results(reaudit, audit.config_version, {(3, 0): "pass", (7, 0): "fail"}, quotes=True)
    return reaudit


def test_the_page_of_a_reaudit_shows_it_beside_its_predecessor(reaudit, audit, staff, client):
    client.force_login(staff)
    response = client.get(f"/admin/audits/audit/{reaudit.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    diff = response.context["diff"]
    assert [(c["step_position"], c["control_point_index"]) for c in diff["changed_points"]] == [(7, 0)]
    assert "<h2>Beside its predecessor</h2>" in page
    assert f're-audit of <a href="/admin/audits/audit/{audit.pk}/change/">audit {str(audit.pk)[:8]}</a>' in page
    assert (
        'class="niveau niveau-REJET">REJET</span><span class="arrow">→</span><span class="niveau niveau-BON">' in page
    )
    assert '90 %<span class="arrow">→</span>80 %' in page and "1 unchanged" in page
    assert '<span class="st st-uncertain">uncertain</span><div class="noquote">no verified quote</div>' in page
    assert "v1 2227002 7.0 fail" in page  # the re-audit's verified quote
    assert "pinned</span> by ops@example.com on 2026-02-05" in page and 'class="tag tag-counts"' in page
    predecessor = client.get(f"/admin/audits/audit/{audit.pk}/change/").content.decode()
    assert f'href="/admin/audits/audit/{reaudit.pk}/change/">audit {str(reaudit.pk)[:8]}</a> (completed)' in predecessor
    assert "<h2>Beside its predecessor</h2>" not in predecessor and 'class="tag tag-counts"' not in predecessor
    listed = client.get("/admin/audits/audit/?predecessor__isempty=0")
    assert listed.context["cl"].result_count == 1
    assert f'<a href="/admin/audits/audit/{audit.pk}/change/">{str(audit.pk)[:8]}</a>' in listed.content.decode()
    Audit.objects.filter(pk=reaudit.pk).update(status="running")
    running = client.get(f"/admin/audits/audit/{reaudit.pk}/change/")
    assert running.context["diff"] is None
    assert (
        "This re-audit is running: it is compared with its predecessor once it completes." in running.content.decode()
    )


def test_an_evaluation_audit_page_links_its_evaluation(evaluation, staff, client):
    made = Audit.objects.filter(evaluation=evaluation).first()
    client.force_login(staff)
    page = client.get(f"/admin/audits/audit/{made.pk}/change/").content.decode()
    assert 'class="tag tag-evaluation"' in page
    assert f'href="/admin/audits/evaluation/{evaluation.pk}/change/">evaluation {str(evaluation.pk)[:8]}</a>' in page
    assert "(v2 vs the active v1;" in page
    assert client.get("/admin/audits/audit/not-a-uuid/change/").status_code == 302  # the admin's "does not exist"


def test_a_failed_evaluation_of_the_active_version_itself(audit, staff, client):
    evaluation = Evaluation.objects.create(
        config=audit.config,
        version=audit.config_version,
        fiche_ids=["2227002"],
        status="failed",
        error="every audit of the evaluation failed",
    )
    Audit.objects.create(
        fiche=audit.fiche,
        config=audit.config,
        config_version=audit.config_version,
        purpose="evaluation",
        evaluation=evaluation,
        status="failed",
    )
    evaluation.result = evaluation_result(evaluation)
    evaluation.save(update_fields=["result"])
    client.force_login(staff)
    response = client.get(f"/admin/audits/evaluation/{evaluation.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "— the active version itself" in page and "every audit of the evaluation failed" in page
    assert "Overall: v1</h2>" in page and "Audits failed" in page and "1 of 1" in page
    assert "No control point was judged by a reviewer on these fiches." in page
    assert "Changed verdicts" not in page and "Δ kappa" not in page and "<h2>Progress</h2>" not in page
    listed = client.get("/admin/audits/evaluation/").content.decode()
    assert "v1 (the active one)" in listed and ">failed</span>" in listed
    assert client.get("/admin/audits/evaluation/not-a-uuid/change/").status_code == 302
