"""Audit step prompts: layout, the parseable control point lines, tools mode, the prompt hash, answer models."""

from __future__ import annotations

import re

import pydantic
import pytest

from audits import prompts
from audits.prompts import (
    POINTS_MARKER,
    TRANSCRIPT_MARKER,
    ControlPointAnswer,
    ControlPointSpec,
    QuoteOut,
    StepAnswer,
    StepSpec,
    build_step_messages,
    parse_control_points,
    prompt_hash,
)
from audits.simulator import judge

TIMELINE = """\
### Appel CALL-1 — 2026-02-02 10:00 (sortant)
[00:01] Agent: Bonjour, je suis Julie Martin de la société Assurdirect, courtier immatriculé à l'ORIAS.
[05:40] Agent: Vous disposez d'un délai de rétractation de quatorze jours à compter de la réception des documents.
[61:02] Client: Très bien, merci."""

STEP = StepSpec(
    position=3,
    name="Droit de rétractation",
    instructions="Vérifier les mentions légales.",
    weight=20,
    is_critical=True,
    control_points=[
        (1, "L'agent annonce-t-il le délai de rétractation de 14 jours ?", "délai de rétractation, 14 jours", True),
        (2, "L'agent précise-t-il  le point\nde départ du délai ?", "", False, "any"),
        (
            3,
            "Si le client est déjà assuré, l'agent parle-t-il de la résiliation ?",
            "résiliation — ancien contrat",
            False,
            "agent",
            True,
        ),
        (4, "Le client accepte-t-il de poursuivre l'appel ?", "j'accepte", False, "client"),
    ],
)
TURN_LINE = re.compile(r"^\[\d+:\d{2}\] (Agent|Client): ", re.MULTILINE)


def messages(**overrides) -> list[dict]:
    params = {
        "step": STEP,
        "fiche_context": "Fiche 2225007 — Mme Durand, complémentaire santé",
        "timeline_text": TIMELINE,
        "use_tools": False,
    } | overrides
    return build_step_messages(**params)


def test_prompt_mode_has_rules_points_fiche_and_transcript_in_order():
    system, user = messages()
    assert system["role"] == "system" and user["role"] == "user"
    assert "copiez mot pour mot les paroles de l'appel ; pas de citation, pas de conformité" in system["content"]
    assert "not_applicable" in system["content"] and "searchTranscript" not in system["content"]
    content = user["content"]
    assert content.startswith("# Étape 3 : Droit de rétractation (étape critique)")
    positions = [
        content.index(marker)
        for marker in (prompts.STEP_INSTRUCTIONS_MARKER, POINTS_MARKER, prompts.FICHE_MARKER, TRANSCRIPT_MARKER)
    ]
    assert positions == sorted(positions)
    assert content.rstrip().endswith(TIMELINE.rstrip())
    assert prompts.REVIEWER_MARKER not in content
    assert "20" not in content.split(POINTS_MARKER)[0]  # the weight is ours, not the model's


def test_control_point_lines_are_exact_and_round_trip():
    content = messages()[1]["content"]
    block = prompts.section(content, POINTS_MARKER)
    assert block is not None
    assert block.strip().splitlines() == [
        (
            "[1] L'agent annonce-t-il le délai de rétractation de 14 jours ? "
            "— Indice : délai de rétractation, 14 jours — Preuve : paroles de l'agent (critique)"
        ),
        "[2] L'agent précise-t-il le point de départ du délai ? — Preuve : paroles de l'agent ou du client",
        (
            "[3] Si le client est déjà assuré, l'agent parle-t-il de la résiliation ? — Indice : résiliation — ancien "
            "contrat — Preuve : paroles de l'agent (conditionnel)"
        ),
        "[4] Le client accepte-t-il de poursuivre l'appel ? — Indice : j'accepte — Preuve : paroles du client",
    ]
    assert parse_control_points(content) == [
        ControlPointSpec(
            1, "L'agent annonce-t-il le délai de rétractation de 14 jours ?", "délai de rétractation, 14 jours", True
        ),
        ControlPointSpec(2, "L'agent précise-t-il le point de départ du délai ?", "", False, "any"),
        ControlPointSpec(
            3,
            "Si le client est déjà assuré, l'agent parle-t-il de la résiliation ?",
            "résiliation — ancien contrat",
            False,
            "agent",
            True,
        ),
        ControlPointSpec(4, "Le client accepte-t-il de poursuivre l'appel ?", "j'accepte", False, "client"),
    ]


def test_simulator_reads_the_prompt_points_and_timeline():
    body = {"model": "m", "messages": messages()}
    reply = judge.respond(body)
    assert reply.kind == "answer" and reply.answer is not None
    answers = {item["index"]: item for item in reply.answer["control_points"]}
    assert set(answers) == {1, 2, 3, 4}
    assert answers[1]["status"] == "pass"
    assert answers[1]["quotes"][0]["text"] in TIMELINE
    assert answers[3]["status"] == "not_applicable"
    assert len(judge.parse_turns(TIMELINE)) == 3


def test_tools_mode_has_no_timeline_and_asks_for_the_tools():
    system, user = messages(use_tools=True, timeline_text=TIMELINE)
    assert "searchTranscript" in system["content"] and "getTranscriptChunks" in system["content"]
    for message in (system, user):
        assert TRANSCRIPT_MARKER not in message["content"]
        assert not TURN_LINE.search(message["content"])
        assert "délai de rétractation de quatorze jours" not in message["content"]
    assert prompts.TOOLS_MARKER in user["content"]
    assert len(parse_control_points(user["content"])) == 4
    assert build_step_messages(step=STEP, fiche_context="", timeline_text=None, use_tools=True)


def test_reviewer_instructions_and_a_single_control_point():
    content = messages(
        reviewer_instructions="Le client a rappelé : relire le passage sur le délai.", only_control_point=2
    )[1]["content"]
    assert f"{prompts.REVIEWER_MARKER}\nLe client a rappelé : relire le passage sur le délai." in content
    assert [point.index for point in parse_control_points(content)] == [2]
    with pytest.raises(ValueError, match="no control point 9"):
        messages(only_control_point=9)
    with pytest.raises(ValueError, match="timeline"):
        messages(timeline_text=None)


def test_step_spec_normalizes_tuples_and_refuses_duplicate_indices():
    assert all(isinstance(point, ControlPointSpec) for point in STEP.control_points)
    with pytest.raises(ValueError, match="duplicate"):
        StepSpec(1, "x", "", 1, False, [(1, "a", "", False), (1, "b", "", False)])


def test_prompt_hash_is_stable_and_follows_the_template(monkeypatch: pytest.MonkeyPatch):
    first = prompt_hash(messages())
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert prompt_hash(messages()) == first
    later_rounds = [
        *messages(),
        {"role": "assistant", "content": "{}"},
        {"role": "tool", "content": "x", "tool_call_id": "c1"},
    ]
    assert prompt_hash(later_rounds) == first
    assert prompt_hash(messages(use_tools=True)) != first
    assert prompt_hash(messages(fiche_context="Autre fiche")) != first

    monkeypatch.setattr(prompts, "SYSTEM_RULES", prompts.SYSTEM_RULES + "\n8. Soyez bref.")
    assert prompt_hash(messages()) != first
    monkeypatch.undo()
    assert prompt_hash(messages()) == first
    monkeypatch.setattr(prompts, "PROMPT_VERSION", "audit-step-fr-next")
    assert prompt_hash(messages()) != first


def test_answer_models_validate_the_expected_shape():
    answer = StepAnswer.model_validate(
        {
            "control_points": [
                {
                    "index": 1,
                    "status": "pass",
                    "quotes": [{"text": "Vous disposez d'un délai", "speaker": "agent"}],
                    "rationale": "Dit à 05:40.",
                },
                {"index": 2, "status": "not_applicable", "quotes": [], "rationale": "Sans objet."},
            ]
        }
    )
    assert answer.control_points[0].quotes[0] == QuoteOut(text="Vous disposez d'un délai", speaker="agent")
    assert QuoteOut.model_validate({"text": "x", "speaker": None}).speaker is None
    for broken in (
        {"index": 1, "status": "conforme", "quotes": [], "rationale": ""},
        {"index": 1, "status": "pass", "quotes": [{"text": "x", "speaker": "vendeur"}], "rationale": ""},
        {"index": 1, "status": "pass", "quotes": [], "rationale": "", "score": 10},
    ):
        with pytest.raises(pydantic.ValidationError):
            ControlPointAnswer.model_validate(broken)
