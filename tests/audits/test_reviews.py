"""After an audit, without a worker: human reviews (validation, the reviewer's verdict counts and the
audit is rescored), rerun requests (dispatched after commit, one per step at a time, only on completed
audits, scope), calibration (Cohen's kappa on a fixture with known agreement), and the batch request's
guards (Redis needed, scope, size, config)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from audits.models import Audit, AuditConfig, AuditStepResult, ControlPointResult, RerunEvent
from audits.selectors import cohen_kappa
from fiches.models import FicheCache
from tests.audits.conftest import cached_fiches

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)
WITHDRAWAL = 7  # the default config's "Droit de rétractation": critical, one critical point


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.LLM_API_KEY = "sk-test"
    settings.CRM_BASE_URL = "http://127.0.0.1:9"  # nothing listens: no test may need the CRM


@pytest.fixture
def fiches() -> dict[str, FicheCache]:
    return cached_fiches(("F-LYON", "Lyon-2"), ("F-PARIS", "Paris-Est"))


@pytest.fixture
def auditor(make_role, make_user):
    return make_user(make_role("auditor", audits=("rw", "ALL")), email="auditor@example.com")


@pytest.fixture
def lyon(make_role, make_user):
    return make_user(make_role("lyon", audits=("rw", "GROUP")), email="lyon@example.com", groupes=["Lyon-2"])


@pytest.fixture
def reader(make_role, make_user):
    return make_user(make_role("reader", audits=("r", "ALL")), email="reader@example.com")


def completed_audit(
    fiche: FicheCache, config: AuditConfig, verdicts: dict[tuple[int, int], str] | None = None
) -> Audit:
    """A completed audit whose every point passed, except ``verdicts`` ({(position, index): status})."""
    from audits.services.reviews import recompute_audit, rescore_step

    verdicts = verdicts or {}
    audit = Audit.objects.create(
        fiche=fiche, config=config, config_version=config.current_version, status="completed", completed_at=T0
    )
    for step in config.current_version.steps.all():
        row = AuditStepResult.objects.create(audit=audit, step=step, position=step.position, status="completed")
        for point in step.control_points.all():
            status = verdicts.get((step.position, point.index), "pass")
            ControlPointResult.objects.create(step_result=row, index=point.index, ai_status=status, status=status)
        rescore_step(row)
    recompute_audit(audit)
    audit.refresh_from_db()
    return audit


def reviews_url(audit: Audit, position: int = WITHDRAWAL) -> str:
    return f"/api/audits/{audit.pk}/steps/{position}/reviews"


# --- Reviews -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "pass"}, "comment"),
        ({"status": "pass", "comment": "   "}, "comment"),
        ({"status": "uncertain", "comment": "?"}, "status"),  # a reviewer decides: no "uncertain"
        ({"status": "pass", "comment": "ok", "control_point_index": -1}, "control_point_index"),
    ],
)
def test_a_review_needs_a_verdict_and_a_comment(body, field, config, fiches, auditor, auth_client):
    audit = completed_audit(fiches["F-LYON"], config)
    response = auth_client(auditor).post(reviews_url(audit), body, format="json")
    assert response.status_code == 400 and field in str(response.json()["error"]["details"])


def test_a_review_overrides_the_ai_and_rescores_the_step_and_the_audit(config, fiches, auditor, auth_client):
    audit = completed_audit(fiches["F-LYON"], config, {(WITHDRAWAL, 0): "uncertain"})
    assert (audit.niveau, audit.is_compliant, audit.needs_review) == ("REJET", False, True)
    body = {"control_point_index": 0, "status": "pass", "comment": "Dit à 02:34."}
    response = auth_client(auditor).post(reviews_url(audit), body, format="json")
    assert response.status_code == 201, response.content
    result = response.json()
    assert result["reviews"][0] | {"id": None, "created_at": None} == {
        "id": None,
        "step_position": WITHDRAWAL,
        "control_point_index": 0,
        "status": "pass",
        "ai_status": "uncertain",
        "previous_status": "uncertain",
        "comment": "Dit à 02:34.",
        "reviewer": "auditor@example.com",
        "created_at": None,
    }
    assert result["step"]["score"] == 10 and result["step"]["conforme"] is True
    assert (result["audit"]["niveau"], result["audit"]["score_percentage"]) == ("EXCELLENT", 100.0)
    assert result["audit"]["is_compliant"] is True and result["audit"]["needs_review"] is False
    point = ControlPointResult.objects.get(step_result__audit=audit, step_result__position=WITHDRAWAL)
    assert (point.status, point.human_status) == ("uncertain", "pass")  # the AI's verdict is kept

    # Without an index, the verdict covers every point of the step.
    response = auth_client(auditor).post(
        reviews_url(audit, 4), {"status": "fail", "comment": "Pas de mention de l'enregistrement."}, format="json"
    )
    assert response.status_code == 201 and len(response.json()["reviews"]) == 4
    assert response.json()["step"]["score"] == 0 and response.json()["audit"]["niveau"] == "REJET"
    entries = auth_client(auditor).get(f"/api/audits/{audit.pk}/history").json()["entries"]
    assert [(e["type"], e["step_position"], e["control_point_index"]) for e in entries] == [
        ("review", WITHDRAWAL, 0),
        ("review", 4, 0),
        ("review", 4, 1),
        ("review", 4, 2),
        ("review", 4, 3),
    ]


def test_reviews_and_reruns_need_write_scope_a_completed_audit_and_an_existing_step(
    config, fiches, lyon, reader, auditor, auth_client, django_capture_on_commit_callbacks, monkeypatch
):
    sent: list[str] = []
    monkeypatch.setattr("audits.tasks.audit_step_rerun.delay", lambda rerun_id: sent.append(rerun_id))
    paris = completed_audit(fiches["F-PARIS"], config)
    body = {"control_point_index": 0, "status": "pass", "comment": "ok"}
    assert auth_client(lyon).post(reviews_url(paris), body, format="json").status_code == 403
    assert auth_client(lyon).post(f"/api/audits/{paris.pk}/steps/1/rerun").status_code == 403
    assert auth_client(reader).post(f"/api/audits/{paris.pk}/steps/1/rerun").status_code == 403
    assert auth_client(lyon).get(f"/api/audits/{paris.pk}/history").status_code == 403
    client = auth_client(auditor)
    assert client.post(f"/api/audits/{paris.pk}/steps/42/rerun").json()["error"]["code"] == "step_not_found"
    missing = client.post(f"/api/audits/{paris.pk}/steps/1/control-points/9/rerun")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "control_point_not_found"
    running = Audit.objects.create(
        fiche=fiches["F-LYON"], config=config, config_version=config.current_version, status="running"
    )
    refused = client.post(f"/api/audits/{running.pk}/steps/1/rerun")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "audit_not_completed"
    assert client.post(reviews_url(running), body, format="json").status_code == 409

    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(f"/api/audits/{paris.pk}/steps/1/rerun", {"useRlm": True}, format="json")
    assert first.status_code == 202 and sent == [first.json()["rerun_id"]]  # dispatched after commit
    event = RerunEvent.objects.get()
    assert (event.position, event.control_point_index, event.tools_mode, event.status) == (1, None, True, "pending")
    again = client.post(f"/api/audits/{paris.pk}/steps/1/control-points/0/rerun")
    assert again.status_code == 409 and again.json()["error"]["details"]["rerun_id"] == str(event.pk)
    assert client.post(f"/api/audits/{paris.pk}/steps/2/rerun").status_code == 202  # another step: fine


# --- Calibration ---------------------------------------------------------------------------------------


def test_cohen_kappa_matches_the_textbook_example():
    # 50 pairs: AI pass/human pass 20, pass/fail 5, fail/pass 10, fail/fail 15 → po 0.7, pe 0.5, kappa 0.4.
    pairs = [("pass", "pass")] * 20 + [("pass", "fail")] * 5 + [("fail", "pass")] * 10 + [("fail", "fail")] * 15
    assert cohen_kappa(pairs) == 0.4
    assert cohen_kappa([("pass", "pass")] * 3) is None  # everyone always says pass: undefined
    assert cohen_kappa([("pass", "fail"), ("fail", "pass")]) == -1.0
    assert cohen_kappa([]) is None


def test_calibration_per_control_point_lowest_kappa_first_within_scope_and_dates(
    config, fiches, auditor, lyon, auth_client
):
    # Point 7.0: the textbook 50 reviewed verdicts (kappa 0.4); point 2.0: 4 reviews, all agreeing.
    labels = [("pass", "pass")] * 20 + [("pass", "fail")] * 5 + [("fail", "pass")] * 10 + [("fail", "fail")] * 15
    for n, (ai, human) in enumerate(labels):
        audit = completed_audit(fiches["F-LYON"], config, {(WITHDRAWAL, 0): ai})
        ControlPointResult.objects.filter(step_result__audit=audit, step_result__position=WITHDRAWAL).update(
            human_status=human
        )
        if n < 4:
            ControlPointResult.objects.filter(step_result__audit=audit, step_result__position=2).update(
                human_status="pass"
            )
    completed_audit(fiches["F-LYON"], config)  # not reviewed: not counted
    outsider = completed_audit(fiches["F-PARIS"], config, {(WITHDRAWAL, 0): "pass"})
    ControlPointResult.objects.filter(step_result__audit=outsider, step_result__position=WITHDRAWAL).update(
        human_status="fail"
    )

    response = auth_client(lyon).get(f"/api/audits/calibration?audit_config_id={config.pk}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["reviewed"] == 54
    worst, best = body["control_points"]
    assert (worst["step_position"], worst["control_point_index"], worst["reviewed"]) == (WITHDRAWAL, 0, 50)
    assert worst["kappa"] == 0.4 and worst["agreement_rate"] == 0.7 and worst["is_critical"] is True
    assert worst["confusion"] == {"fail": {"fail": 15, "pass": 10}, "pass": {"fail": 5, "pass": 20}}
    assert worst["question"].startswith("L'agent informe-t-il du délai de rétractation")
    assert (best["step_position"], best["reviewed"], best["agreement_rate"], best["kappa"]) == (2, 4, 1.0, None)

    everyone = auth_client(auditor).get(f"/api/audits/calibration?audit_config_id={config.pk}").json()
    assert everyone["reviewed"] == 55  # ALL scope sees the Paris audit too
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    empty = auth_client(auditor).get(f"/api/audits/calibration?audit_config_id={config.pk}&from={later}").json()
    assert empty["reviewed"] == 0 and empty["control_points"] == []
    assert auth_client(auditor).get("/api/audits/calibration").status_code == 400  # the config is required


# --- Batch request guards ------------------------------------------------------------------------------


def test_a_batch_needs_redis_scope_a_known_config_and_a_bounded_size(
    config, fiches, lyon, auth_client, settings, django_capture_on_commit_callbacks, monkeypatch
):
    started: list[str] = []
    monkeypatch.setattr("batches.tasks.batch_start.delay", lambda batch_id: started.append(batch_id))
    client = auth_client(lyon)
    denied = client.post("/api/audits/batch", {"fiche_ids": ["F-LYON", "F-PARIS"]}, format="json")
    assert denied.status_code == 403 and denied.json()["error"]["details"]["fiche_ids"] == ["F-PARIS"]
    unknown = client.post("/api/audits/batch", {"fiche_ids": ["F-LYON"], "audit_config_id": 999}, format="json")
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "audit_config_not_found"  # as /run
    settings.AUDIT_BATCH_MAX = 2
    too_many = client.post("/api/audits/batch", {"fiche_ids": ["F-LYON", "A", "B"]}, format="json")
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "batch_too_large"
    assert client.post("/api/audits/batch", {"fiche_ids": []}, format="json").status_code == 400

    with django_capture_on_commit_callbacks(execute=True):
        ok = client.post("/api/audits/batch", {"fiche_ids": ["F-LYON"], "audit_config_id": config.pk}, format="json")
    assert ok.status_code == 202 and started == [ok.json()["batch_id"]]

    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nothing listens
    down = client.post("/api/audits/batch", {"fiche_ids": ["F-LYON"]}, format="json")
    assert down.status_code == 503 and down.json()["error"]["code"] == "dependency_unavailable"
