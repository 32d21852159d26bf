"""The evidence gate is the last word on a verdict (issue 18): ``not_applicable`` only on a conditional point,
quotes verified only in the turns of the point's speaker whatever the model claims, and calibration measuring
the AI before any reviewer-guided rerun. Service level, with the seeded French config and real rows."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from audits import compliance, selectors
from audits.evidence import EvidenceIndex
from audits.models import Audit, AuditConfig, AuditStepResult, ControlPointResult, RerunEvent
from audits.prompts import ControlPointAnswer, QuoteOut, StepAnswer
from audits.services import reviews, steps
from audits.services.configs import config_create
from fiches.models import FicheCache
from llm import client as llm

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)

# A call where the agent says every mandatory statement, and the client repeats the recording notice.
TURNS = [
    {
        "call_id": "c1",
        "speaker": "agent",
        "start": 0.0,
        "end": 9.0,
        "text": "Bonjour, je m'appelle Julie Martin du cabinet Assurdirect, je suis courtière, "
        "numéro ORIAS 07 012 345.",
    },
    {
        "call_id": "c1",
        "speaker": "agent",
        "start": 9.5,
        "end": 14.0,
        "text": "Je vous appelle dans le cadre d'un appel commercial pour une mutuelle santé.",
    },
    {
        "call_id": "c1",
        "speaker": "agent",
        "start": 14.5,
        "end": 18.0,
        "text": "Est-ce que vous acceptez de poursuivre cet appel ?",
    },
    {
        "call_id": "c1",
        "speaker": "client",
        "start": 18.5,
        "end": 21.0,
        "text": "Oui, j'accepte de poursuivre, allez-y.",
    },
    {
        "call_id": "c1",
        "speaker": "client",
        "start": 21.5,
        "end": 27.0,
        "text": "Je sais que cet appel est enregistré et conservé deux ans, on me l'a déjà dit.",
    },
    {"call_id": "c1", "speaker": "agent", "start": 27.5, "end": 30.0, "text": "Très bien, merci."},
]


@pytest.fixture
def index() -> EvidenceIndex:
    return EvidenceIndex(TURNS, threshold=90)


def _step(config: AuditConfig, position: int):
    return config.current_version.steps.get(position=position)


def _answer(*points: tuple[int, str, list[tuple[str, str | None]], str]) -> StepAnswer:
    return StepAnswer(
        control_points=[
            ControlPointAnswer(
                index=i, status=status, quotes=[QuoteOut(text=t, speaker=s) for t, s in quotes], rationale=why
            )
            for i, status, quotes, why in points
        ]
    )


def test_the_seeded_config_marks_its_si_points_conditional_and_every_point_the_agents(config):
    points = [p for s in config.current_version.steps.all() for p in s.control_points.all()]
    conditional = [p.question for p in points if p.conditional]
    assert conditional == [p.question for p in points if p.question.startswith("Si ")] and len(conditional) == 1
    assert {p.speaker for p in points} == {"agent"}


def test_not_applicable_on_a_point_that_is_not_conditional_is_uncertain_and_a_critical_miss(config, index):
    commercial = _step(config, 2)  # "Caractère commercial": critical step, one critical point
    gated = steps.gate_answer(
        definition=commercial,
        answer=_answer((0, "not_applicable", [], "Le point ne concerne pas cet appel.")),
        index=index,
    )
    assert [(g.ai_status, g.status, g.gate_reason) for g in gated] == [
        ("not_applicable", "uncertain", "not_conditional")
    ]
    verdicts = [compliance.PointVerdict(g.index, g.status, True, "q") for g in gated]
    score = compliance.step_score(weight=10, pass_ratio=1.0, points=verdicts)
    summary = compliance.audit_summary(
        [compliance.StepOutcome(2, "Caractère commercial", 10, True, score, verdicts)],
        {"excellent": 90, "bon": 75, "acceptable": 60},
    )
    assert (summary.niveau, summary.is_compliant, summary.needs_review, len(summary.critical_issues)) == (
        "REJET",
        False,
        True,
        1,
    )


def test_not_applicable_stands_on_a_conditional_point_only_with_the_models_reason(config, index):
    needs = _step(config, 5)  # "Analyse des besoins": point 2 is « Si le client a un contrat, … »
    assert needs.control_points.get(index=2).conditional
    gated = steps.gate_answer(
        definition=needs,
        answer=_answer(
            (0, "not_applicable", [], "Pas de question sur la situation."),
            (1, "fail", [], "Non demandé."),
            (2, "not_applicable", [], "Le client n'a pas de contrat en cours."),
        ),
        index=index,
    )
    assert [(g.status, g.gate_reason) for g in gated] == [
        ("uncertain", "not_conditional"),
        ("fail", None),
        ("not_applicable", None),
    ]
    without_reason = steps.gate_answer(
        definition=needs, answer=_answer((2, "not_applicable", [], "  ")), index=index, only_control_point=2
    )
    assert [(g.status, g.gate_reason) for g in without_reason] == [("uncertain", "not_applicable_without_reason")]


def test_a_model_answering_not_applicable_everywhere_never_gets_a_compliant_audit(config, index):
    outcomes = []
    for step in config.current_version.steps.all():
        answer = _answer(*((p.index, "not_applicable", [], "Ne s'applique pas.") for p in step.control_points.all()))
        gated = steps.gate_answer(definition=step, answer=answer, index=index)
        critical = {p.index: p.is_critical for p in step.control_points.all()}
        verdicts = [compliance.PointVerdict(g.index, g.status, critical[g.index]) for g in gated]
        score = compliance.step_score(weight=step.weight, pass_ratio=step.pass_ratio, points=verdicts)
        outcomes.append(
            compliance.StepOutcome(step.position, step.name, step.weight, step.is_critical, score, verdicts)
        )
    summary = compliance.audit_summary(outcomes, config.current_version.thresholds)
    assert summary.niveau == "REJET" and not summary.is_compliant and summary.needs_review
    assert len(summary.critical_issues) == sum(
        p.is_critical for s in config.current_version.steps.all() for p in s.control_points.all()
    )


def test_a_config_of_conditional_points_only_answered_not_applicable_is_not_compliant():
    config = config_create(
        data={
            "name": "Conditionnels",
            "thresholds": {"excellent": 90, "bon": 75, "acceptable": 60},
            "steps": [
                {
                    "name": "Résiliation",
                    "weight": 10,
                    "control_points": [
                        {
                            "question": "Si le client est assuré, la résiliation est-elle expliquée ?",
                            "conditional": True,
                        }
                    ],
                }
            ],
        }
    )
    step = config.current_version.steps.get()
    gated = steps.gate_answer(
        definition=step, answer=_answer((0, "not_applicable", [], "Pas assuré.")), index=EvidenceIndex(TURNS)
    )
    verdicts = [compliance.PointVerdict(g.index, g.status, False) for g in gated]
    score = compliance.step_score(weight=10, pass_ratio=1.0, points=verdicts)
    summary = compliance.audit_summary(
        [compliance.StepOutcome(1, "Résiliation", 10, False, score, verdicts)], config.current_version.thresholds
    )
    assert (gated[0].status, summary.score_percentage, summary.is_compliant) == ("not_applicable", 0.0, False)


def test_a_quote_proves_an_agent_point_only_in_the_agents_turns_whatever_speaker_the_model_claims(config, index):
    recording = _step(config, 4)  # « L'agent informe-t-il que l'appel est enregistré ? » (critical)
    client_words = "cet appel est enregistré et conservé deux ans"
    for claimed in ("agent", "client", None):
        gated = steps.gate_answer(
            definition=recording,
            answer=_answer((0, "pass", [(client_words, claimed)], "Annoncé.")),
            index=index,
            only_control_point=0,
        )
        (point,) = gated
        assert (point.status, point.gate_reason, point.checks[0].reason) == (
            "uncertain",
            "no_verified_quote",
            "speaker_mismatch",
        ), claimed


def test_client_and_any_points_are_proven_by_those_speakers():
    config = config_create(
        data={
            "name": "Consentement",
            "thresholds": {"excellent": 90, "bon": 75, "acceptable": 60},
            "steps": [
                {
                    "name": "Consentement",
                    "weight": 10,
                    "is_critical": True,
                    "control_points": [
                        {
                            "question": "Le client accepte-t-il de poursuivre ?",
                            "speaker": "client",
                            "is_critical": True,
                        },
                        {"question": "L'enregistrement est-il évoqué ?", "speaker": "any"},
                        {"question": "L'agent demande-t-il l'accord du client ?"},
                    ],
                }
            ],
        }
    )
    step = config.current_version.steps.get()
    assert [p.speaker for p in step.control_points.all()] == ["client", "any", "agent"]
    consent = "Oui, j'accepte de poursuivre, allez-y."
    gated = steps.gate_answer(
        definition=step,
        answer=_answer(
            (0, "pass", [(consent, "agent")], "Le client accepte."),  # the claimed speaker is ignored
            (1, "pass", [("cet appel est enregistré et conservé deux ans", "agent")], "Évoqué par le client."),
            (2, "pass", [(consent, "agent")], "Accord obtenu."),  # the client's words: not the agent's question
        ),
        index=EvidenceIndex(TURNS),
    )
    assert [(g.status, g.gate_reason) for g in gated] == [
        ("pass", None),
        ("pass", None),
        ("uncertain", "no_verified_quote"),
    ]


@pytest.fixture
def fiche() -> FicheCache:
    return FicheCache.objects.create(
        fiche_id="F-1", sales_date=date(2026, 2, 2), groupe="Lyon-2", details_success=True, details_fetched_at=T0
    )


def _completed_audit(fiche: FicheCache, config: AuditConfig, verdicts: dict[tuple[int, int], str]) -> Audit:
    audit = Audit.objects.create(
        fiche=fiche, config=config, config_version=config.current_version, status="completed", completed_at=T0
    )
    for step in config.current_version.steps.all():
        row = AuditStepResult.objects.create(audit=audit, step=step, position=step.position, status="completed")
        for point in step.control_points.all():
            gated = steps.GatedPoint(point.index, "pass", verdicts.get((step.position, point.index), "pass"), "", [])
            steps.write_points(row, [gated])
        reviews.rescore_step(row)
    reviews.recompute_audit(audit)
    return audit


def _asked(status: str, index: int) -> steps.StepAsked:
    answer = _answer((index, status, [], "Après les consignes du relecteur."))
    result = llm.StructuredResult(
        value=answer,
        usage=llm.Usage(10, 5, 15),
        model="m",
        tool_calls=[],
        rounds=1,
        latency_ms=1,
        response_format_used="json_schema",
    )
    return steps.StepAsked(answer, result, "hash")


def _rerun(audit: Audit, position: int, index: int, instructions: str, status: str) -> None:
    event = reviews.rerun_request(audit=audit, position=position, control_point_index=index, instructions=instructions)
    assert reviews.rerun_claim(rerun_id=str(event.pk)) is not None
    gated = [steps.GatedPoint(index, status, status, "", [])]
    assert reviews.rerun_apply(rerun_id=str(event.pk), asked=_asked(status, index), gated=gated)


def test_calibration_measures_the_ai_before_any_reviewer_guided_rerun(config, fiche, settings):
    settings.LLM_API_KEY = "sk-test"
    # The AI said "fail" on step 2's point; a reviewer says pass, then guides a rerun that now says pass.
    audit = _completed_audit(fiche, config, {(2, 0): "fail"})
    reviews.review_create(audit=audit, position=2, control_point_index=0, status="pass", comment="Dit à 00:09.")
    _rerun(audit, 2, 0, "Regardez 00:09 : l'appel commercial y est annoncé.", "pass")
    point = ControlPointResult.objects.get(step_result__audit=audit, step_result__position=2, index=0)
    assert (point.status, point.unguided_status, point.guided, point.human_status) == ("pass", "fail", True, "pass")
    # An unguided rerun afterwards does not launder the guided verdict into the AI's own.
    _rerun(audit, 2, 0, "", "pass")
    point = ControlPointResult.objects.get(step_result__audit=audit, step_result__position=2, index=0)
    assert (point.status, point.unguided_status, point.guided) == ("pass", "fail", True)

    report = selectors.calibration(Audit.objects.all(), config_id=config.pk)
    (row,) = [r for r in report["control_points"] if (r["step_position"], r["control_point_index"]) == (2, 0)]
    assert (row["reviewed"], row["agreements"], row["agreement_rate"]) == (1, 0, 0.0)
    assert row["confusion"] == {"fail": {"pass": 1}}
    assert (row["guided_reruns"], row["guided_agreements"]) == (1, 1)
    assert not RerunEvent.objects.filter(status__in=["pending", "running"]).exists()


def test_an_unguided_rerun_is_the_ais_own_verdict(config, fiche, settings):
    settings.LLM_API_KEY = "sk-test"
    audit = _completed_audit(fiche, config, {(2, 0): "fail"})
    _rerun(audit, 2, 0, "", "pass")  # no reviewer guidance: the AI changed its mind by itself
    reviews.review_create(audit=audit, position=2, control_point_index=0, status="pass", comment="Exact.")
    point = ControlPointResult.objects.get(step_result__audit=audit, step_result__position=2, index=0)
    assert (point.unguided_status, point.guided) == ("pass", False)
    report = selectors.calibration(Audit.objects.all(), config_id=config.pk)
    (row,) = [r for r in report["control_points"] if (r["step_position"], r["control_point_index"]) == (2, 0)]
    assert (row["agreements"], row["guided_reruns"]) == (1, 0)
