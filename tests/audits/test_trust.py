"""Trust per control point (audits.services.trust) at the default settings: a rolling window of the latest
reviewed verdicts, one per audit's point, compared by Cohen's kappa; withdrawn under the minimum kappa with
enough reviews, restored at or above it. A withdrawn point's new AI verdicts are advice (``advisory``): the
point counts as ``pending`` (not passed, a critical one rejects the audit, the audit needs review) until a
reviewer decides. Reviews go through the real review service; steps through the real step storage."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Literal

import pytest
from django.utils import timezone

from audits.defaults import DEFAULT_CONFIG
from audits.models import (
    Audit,
    AuditConfig,
    AuditConfigVersion,
    AuditStepResult,
    ControlPointResult,
    ControlPointTrust,
    ControlPointTrustChange,
    HumanReview,
)
from audits.prompts import ControlPointAnswer, StepAnswer
from audits.selectors import kappa_interval
from audits.services import finish, reviews, steps, trust
from audits.services.configs import config_create
from fiches.models import FicheCache
from llm.client import StructuredResult, Usage
from tests.audits.conftest import cached_fiches

pytestmark = pytest.mark.django_db

WITHDRAWAL = 7  # "Droit de rétractation": a critical step with one critical point
NEEDS = 4  # "Information sur l'enregistrement": four points (0, 1 critical; 2, 3 not)
DISAGREE = [("pass", "fail"), ("fail", "pass")]  # (AI, reviewer)
AGREE = [("pass", "pass"), ("fail", "fail")]


@pytest.fixture(autouse=True)
def _defaults(settings):
    # The numbers of these tests are the documented defaults: window 50, at least 20 reviews, kappa 0.6.
    assert (settings.AUDIT_TRUST_WINDOW, settings.AUDIT_TRUST_MIN_REVIEWS, settings.AUDIT_TRUST_MIN_KAPPA) == (
        50,
        20,
        0.6,
    )


@pytest.fixture
def fiche() -> FicheCache:
    return cached_fiches(("F-LYON", "Lyon-2"))["F-LYON"]


@pytest.fixture
def reviewer(make_role, make_user):
    return make_user(make_role("reviewer", audits=("rw", "ALL")), email="reviewer@example.com")


@pytest.fixture
def config_reader(make_role, make_user):
    role = make_role("quality", audits=("r", "ALL"), audit_configs=("r", "ALL"))
    return make_user(role, email="quality@example.com")


@pytest.fixture
def published(monkeypatch) -> list[tuple[str, dict]]:
    """The events the trust service publishes (still validated by the real publisher)."""
    calls: list[tuple[str, dict]] = []
    real = trust.publish

    def spy(event, payload, **kwargs):
        calls.append((event, payload))
        real(event, payload, **kwargs)

    monkeypatch.setattr(trust, "publish", spy)
    return calls


Verdict = Literal["pass", "fail", "not_applicable"]


def current(config: AuditConfig) -> AuditConfigVersion:
    assert config.current_version is not None
    return config.current_version


def other_config() -> AuditConfig:
    return config_create(data={**copy.deepcopy(DEFAULT_CONFIG), "name": "Autre grille"})


def one_step_audit(fiche: FicheCache, config: AuditConfig, position: int, verdicts: dict[int, str]) -> Audit:
    """A completed audit holding only step ``position``, its points' AI verdicts given ({index: status},
    others pass) — what a trust window needs, without the rest of a scorecard."""
    audit = Audit.objects.create(
        fiche=fiche, config=config, config_version=current(config), status="completed", completed_at=T0
    )
    step = current(config).steps.get(position=position)
    row = AuditStepResult.objects.create(audit=audit, step=step, position=position, status="completed")
    for point in step.control_points.all():
        status = verdicts.get(point.index, "pass")
        ControlPointResult.objects.create(step_result=row, index=point.index, ai_status=status, status=status)
    reviews.rescore_step(row)
    return audit


T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)


def review(audit: Audit, position: int, index: int, status: str, user=None) -> None:
    reviews.review_create(
        audit=audit, position=position, control_point_index=index, status=status, comment="Relu.", user=user
    )


def reviewed(
    fiche: FicheCache, config: AuditConfig, pairs: list[tuple[str, str]], *, position=WITHDRAWAL, index=0, user=None
) -> list[Audit]:
    """One audit per (AI, reviewer) pair, reviewed in that order."""
    audits = []
    for ai, human in pairs:
        audit = one_step_audit(fiche, config, position, {index: ai})
        review(audit, position, index, human, user)
        audits.append(audit)
    return audits


def state(config: AuditConfig, position: int = WITHDRAWAL, index: int = 0) -> ControlPointTrust:
    return ControlPointTrust.objects.get(config=config, step_position=position, control_point_index=index)


def alternating(pairs: list[tuple[str, str]], n: int) -> list[tuple[str, str]]:
    return [pairs[i % 2] for i in range(n)]


def new_step(
    audit: Audit, position: int, answers: dict[int, Verdict], *, token: str = "claim-token"
) -> AuditStepResult:
    """Store a step's answer the way a worker does (a running claimed row, then ``steps.step_store``)."""
    step = audit.config_version.steps.get(position=position)
    row = AuditStepResult.objects.create(
        audit=audit, step=step, position=position, status="running", claim_token=token, claimed_at=timezone.now()
    )
    answer = StepAnswer(
        control_points=[
            ControlPointAnswer(index=i, status=s, quotes=[], rationale="Répond.") for i, s in answers.items()
        ]
    )
    result = StructuredResult(
        value=answer,
        usage=Usage(prompt_tokens=100, completion_tokens=20, total_tokens=120),
        model="test-model",
        tool_calls=[],
        rounds=1,
        latency_ms=12,
        response_format_used="json_schema",
    )
    gated = [steps.GatedPoint(i, s, s, "Répond.", []) for i, s in answers.items()]
    stored = steps.step_store(
        audit_id=str(audit.pk),
        position=position,
        asked=steps.StepAsked(answer, result, "hash"),
        gated=gated,
        token=token,
    )
    assert stored
    row.refresh_from_db()
    return row


def running_audit(fiche: FicheCache, config: AuditConfig) -> Audit:
    now = timezone.now()
    return Audit.objects.create(
        fiche=fiche,
        config=config,
        config_version=current(config),
        status="running",
        started_at=now,
        dispatched_at=now,
    )


def test_the_twentieth_disagreeing_review_withdraws_trust_and_new_verdicts_become_pending_advice(
    config, fiche, reviewer, config_reader, auth_client, published
):
    # 19 reviews, all disagreeing (kappa -1), are under the 20-review minimum: trust stays.
    reviewed(fiche, config, alternating(DISAGREE, 19), user=reviewer)
    kept = state(config)
    assert (kept.state, kept.sample_size, kept.agreement) == ("trusted", 19, 0.0)
    assert not ControlPointTrustChange.objects.exists() and published == []

    # The 20th tips the window: withdrawn at once, recorded and announced once.
    reviewed(fiche, config, [DISAGREE[1]], user=reviewer)
    withdrawn = state(config)
    assert (withdrawn.state, withdrawn.kappa, withdrawn.agreement, withdrawn.sample_size) == (
        "withdrawn",
        -1.0,
        0.0,
        20,
    )
    change = ControlPointTrustChange.objects.get()
    assert (change.trust_id, change.previous_state, change.state, change.kappa, change.sample_size) == (
        withdrawn.pk,
        "trusted",
        "withdrawn",
        -1.0,
        20,
    )
    assert [(e, p["config_id"], p["step_position"], p["status"], p["kappa"]) for e, p in published] == [
        ("audit.trust_changed", str(config.pk), WITHDRAWAL, "withdrawn", -1.0)
    ]
    assert trust.withdrawn_indexes(config.pk, WITHDRAWAL) == {0}

    # A new audit: every step passes, but the point's AI verdict is now advice → pending.
    audit = running_audit(fiche, config)
    for definition in current(config).steps.all():
        row = new_step(audit, definition.position, {p.index: "pass" for p in definition.control_points.all()})
        assert row.status == "completed"
    point = ControlPointResult.objects.get(step_result__audit=audit, step_result__position=WITHDRAWAL)
    assert (point.status, point.advisory, point.human_status, point.effective_status) == (
        "pass",
        True,
        None,
        "pending",
    )
    assert not ControlPointResult.objects.filter(step_result__audit=audit, advisory=True).exclude(pk=point.pk).exists()
    assert finish.audit_step_settled(audit_id=str(audit.pk)) is True
    audit.refresh_from_db()
    # 90 of 100 points of weight, but the critical point is not passed: REJET, and a reviewer must decide.
    assert (audit.status, audit.score_percentage, audit.niveau, audit.is_compliant, audit.needs_review) == (
        "completed",
        90.0,
        "REJET",
        False,
        True,
    )
    assert [(i["step_position"], i["control_point_index"], i["status"]) for i in audit.critical_issues] == [
        (WITHDRAWAL, 0, "pending")
    ]
    shown = auth_client(reviewer).get(f"/api/audits/{audit.pk}").json()
    [shown_step] = [s for s in shown["steps"] if s["position"] == WITHDRAWAL]
    assert {k: shown_step["control_points"][0][k] for k in ("status", "ai_status", "advisory", "pending_review")} == {
        "status": "pending",
        "ai_status": "pass",
        "advisory": True,
        "pending_review": True,
    }

    # The reviewer decides: the point counts as decided and the audit is rescored.
    body = {"control_point_index": 0, "status": "pass", "comment": "Délai de 14 jours annoncé."}
    decided = auth_client(reviewer).post(f"/api/audits/{audit.pk}/steps/{WITHDRAWAL}/reviews", body, format="json")
    assert decided.status_code == 201, decided.content
    assert (decided.json()["audit"]["niveau"], decided.json()["audit"]["needs_review"]) == ("EXCELLENT", False)
    assert decided.json()["step"]["control_points"][0]["pending_review"] is False
    assert HumanReview.objects.filter(step_result__audit=audit).get().ai_first_status == "pass"

    # The config's trust page (config data) shows the state and its change; a plain reviewer may not read it.
    page = auth_client(config_reader).get(f"/api/audit-configs/{config.pk}/trust")
    assert page.status_code == 200, page.content
    [entry] = [p for p in page.json()["control_points"] if (p["step_position"], p["control_point_index"]) == (7, 0)]
    assert entry["is_critical"] is True and entry["trust"]["state"] == "withdrawn"
    assert entry["trust"]["sample_size"] == 21  # the decision above is in the window too
    assert [(c["previous_state"], c["state"], c["kappa"], c["sample_size"]) for c in entry["trust"]["changes"]] == [
        ("trusted", "withdrawn", -1.0, 20)
    ]
    others = [p for p in page.json()["control_points"] if (p["step_position"], p["control_point_index"]) != (7, 0)]
    assert others and {p["trust"]["state"] for p in others} == {"trusted"}
    assert auth_client(reviewer).get(f"/api/audit-configs/{config.pk}/trust").status_code == 403
    assert auth_client(config_reader).get("/api/audit-configs/999999/trust").status_code == 404


def test_a_point_reviewed_twice_counts_once_with_its_latest_review(config, fiche, reviewer):
    audits = reviewed(fiche, config, alternating(DISAGREE, 19), user=reviewer)
    # A second look at the first audit's point: still one pair in the window (19, under the minimum)...
    review(audits[0], WITHDRAWAL, 0, "fail", reviewer)
    assert (state(config).sample_size, state(config).state) == (19, "trusted")
    # ...and it is the latest review that counts: the AI said pass, the reviewer now says pass.
    review(audits[0], WITHDRAWAL, 0, "pass", reviewer)
    assert (state(config).sample_size, state(config).agreement) == (19, round(1 / 19, 4))
    assert HumanReview.objects.filter(step_result__audit=audits[0]).count() == 3
    # A 20th audit tips it (18 disagreements and 1 agreement of 20: kappa far below 0.6).
    reviewed(fiche, config, [DISAGREE[1]], user=reviewer)
    assert (state(config).sample_size, state(config).state) == (20, "withdrawn")
    assert ControlPointTrustChange.objects.count() == 1


def test_agreeing_reviews_restore_trust_once_the_windows_kappa_reaches_the_minimum(config, fiche, reviewer, published):
    """20 disagreements, alternately (pass, fail) and (fail, pass): kappa -1, withdrawn. Then agreements,
    alternately (pass, pass) and (fail, fail). Once the 50-review window is full, each new agreement pushes
    the oldest disagreement out, two by two the marginals stay balanced (each rater says pass half the time:
    pe = 0.5), so kappa = (po - 0.5) / 0.5 = 2·po - 1 with po = agreements / 50. kappa >= 0.6 needs po >= 0.8,
    i.e. 40 agreements in the window (with the 10 newest disagreements): the 40th agreeing review restores
    trust; after the 39th, po = 0.78 and kappa = 0.56 (the marginals are one off: still under 0.6)."""
    reviewed(fiche, config, alternating(DISAGREE, 20), user=reviewer)
    assert state(config).state == "withdrawn"
    reviewed(fiche, config, alternating(AGREE, 39), user=reviewer)
    assert (state(config).state, state(config).kappa, state(config).sample_size) == ("withdrawn", 0.56, 50)
    reviewed(fiche, config, [AGREE[1]], user=reviewer)  # the 40th: (fail, fail)
    restored = state(config)
    assert (restored.state, restored.kappa, restored.agreement, restored.sample_size) == ("trusted", 0.6, 0.8, 50)
    changes = list(ControlPointTrustChange.objects.values_list("previous_state", "state", "kappa", "sample_size"))
    assert changes == [("trusted", "withdrawn", -1.0, 20), ("withdrawn", "trusted", 0.6, 50)]
    assert [p["status"] for _, p in published] == ["withdrawn", "trusted"]
    assert trust.withdrawn_indexes(config.pk, WITHDRAWAL) == set()
    # New verdicts of the point decide on their own again.
    audit = running_audit(fiche, config)
    row = new_step(audit, WITHDRAWAL, {0: "pass"})
    assert row.control_points.get().advisory is False and row.control_points.get().effective_status == "pass"


def test_a_guided_rerun_does_not_fake_agreement(config, fiche, reviewer):
    """The AI said pass; a reviewer-guided rerun then said fail, like the reviewer. Trust measures the AI's
    own first verdict: 20 such reviews are 20 disagreements (pass vs fail: kappa 0) and withdraw trust,
    where the guided verdicts alone would agree every time (kappa undefined, counted as 1)."""
    for _ in range(20):
        audit = running_audit(fiche, config)
        row = new_step(audit, WITHDRAWAL, {0: "pass"})
        steps.write_points(row, [steps.GatedPoint(0, "fail", "fail", "Guidé : pas de délai.", [])], guided=True)
        Audit.objects.filter(pk=audit.pk).update(status="completed", completed_at=timezone.now())
        audit.refresh_from_db()
        point = row.control_points.get()
        assert (point.unguided_status, point.status, point.guided) == ("pass", "fail", True)
        review(audit, WITHDRAWAL, 0, "fail", reviewer)
    assert set(HumanReview.objects.values_list("ai_first_status", "ai_status", "status")) == {("pass", "fail", "fail")}
    withdrawn = state(config)
    assert (withdrawn.state, withdrawn.agreement, withdrawn.kappa, withdrawn.sample_size) == ("withdrawn", 0.0, 0.0, 20)


def test_trust_of_one_point_of_one_config_leaves_other_points_and_configs_alone(config, fiche, reviewer):
    """Config A's point 4.2 gets 20 disagreeing reviews; in the same audits A's point 4.1 gets 19, and config
    B's point 4.2 gets 19: only A's 4.2 is withdrawn (merged windows would have withdrawn the others)."""
    other = other_config()
    for n, (ai, human) in enumerate(alternating(DISAGREE, 20)):
        audit = one_step_audit(fiche, config, NEEDS, {1: ai, 2: ai})
        review(audit, NEEDS, 2, human, reviewer)
        if n < 19:
            review(audit, NEEDS, 1, human, reviewer)
    reviewed(fiche, other, alternating(DISAGREE, 19), position=NEEDS, index=2, user=reviewer)

    assert (state(config, NEEDS, 2).state, state(config, NEEDS, 2).sample_size) == ("withdrawn", 20)
    assert (state(config, NEEDS, 1).state, state(config, NEEDS, 1).sample_size) == ("trusted", 19)
    assert (state(other, NEEDS, 2).state, state(other, NEEDS, 2).sample_size) == ("trusted", 19)
    assert ControlPointTrustChange.objects.count() == 1
    assert not ControlPointTrust.objects.filter(config=config, step_position=WITHDRAWAL).exists()

    answers: dict[int, Verdict] = {0: "pass", 1: "pass", 2: "pass", 3: "pass"}
    in_a = new_step(running_audit(fiche, config), NEEDS, answers)
    assert dict(in_a.control_points.values_list("index", "advisory")) == {0: False, 1: False, 2: True, 3: False}
    assert in_a.conforme is True  # a non-critical pending point: the step (ratio) may still pass
    in_b = new_step(running_audit(fiche, other), NEEDS, answers)
    assert not in_b.control_points.filter(advisory=True).exists()
    in_a_other_step = new_step(running_audit(fiche, config), WITHDRAWAL, {0: "pass"})
    assert in_a_other_step.control_points.get().advisory is False


def test_calibration_shows_a_kappa_interval_and_trust_only_to_audit_configs_readers(
    config, fiche, reviewer, config_reader, auth_client
):
    """10 reviews of point 7.0: (pass, pass) 4, (pass, fail) 1, (fail, pass) 1, (fail, fail) 4.
    po = 0.8; each rater says pass 5 times of 10, pe = 0.5·0.5 + 0.5·0.5 = 0.5; kappa = (0.8-0.5)/0.5 = 0.6.
    SE = sqrt(po(1-po) / (n(1-pe)²)) = sqrt(0.16 / 2.5) = 0.25298; 1.96·SE = 0.49585:
    [0.6 - 0.49585, 0.6 + 0.49585] = [0.1042, 1.0958], clipped to [0.1042, 1.0]."""
    pairs = [("pass", "pass")] * 4 + [("pass", "fail"), ("fail", "pass")] + [("fail", "fail")] * 4
    reviewed(fiche, config, pairs, user=reviewer)
    url = f"/api/audits/calibration?audit_config_id={config.pk}"

    plain = auth_client(reviewer).get(url)
    assert plain.status_code == 200, plain.content
    [point] = plain.json()["control_points"]
    assert (point["reviewed"], point["agreement_rate"], point["kappa"], point["kappa_ci95"]) == (
        10,
        0.8,
        0.6,
        [0.1042, 1.0],
    )
    assert point["trust_state"] == "trusted"  # everyone sees the state (their audits show advisory points)...
    assert "trust" not in point  # ...the figures are config data: audit-configs readers only

    [with_trust] = auth_client(config_reader).get(url).json()["control_points"]
    assert with_trust["kappa_ci95"] == [0.1042, 1.0]
    assert {k: with_trust["trust"][k] for k in ("state", "kappa", "agreement", "sample_size", "changes")} == {
        "state": "trusted",
        "kappa": 0.6,
        "agreement": 0.8,
        "sample_size": 10,
        "changes": [],
    }

    # Unclipped, n = 20 with the same proportions: SE = sqrt(0.16 / 5) = 0.17889, ± 0.35062 → [0.2494, 0.9506].
    assert kappa_interval(pairs * 2) == [0.2494, 0.9506]
    assert kappa_interval([("pass", "pass")] * 5) is None  # kappa undefined: no interval
