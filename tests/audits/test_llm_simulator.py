"""The LLM simulator: its lexical judge, tools mode, the misbehaviour knobs, its admin endpoints and request log,
all over real HTTP; and the token economy of tools mode on a 60-minute transcript."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from audits.prompts import StepAnswer, StepSpec, build_step_messages
from audits.simulator import judge
from audits.simulator.server import ENV_VARS, LlmSimulator, SimulatorConfig
from audits.transcript_tools import (
    TOOL_SPECS,
    TranscriptTools,
    chunks_from_timeline_text,
    fold,
)
from llm.client import complete_structured

HEADER = "### Appel CALL-1 — 2026-02-02 10:00 (sortant)"
IDENTITY = (
    "Bonjour madame Durand, je suis Julie Martin de la société Assurdirect. Nous sommes courtier en "
    "assurances, immatriculé à l'ORIAS sous le numéro 12 345 678."
)
RECORDING = (
    "Je vous informe que cet appel est enregistré. L'enregistrement est conservé deux ans après la "
    "signature et vous pouvez en obtenir une copie sur simple demande."
)
WITHDRAWAL = "Vous disposez d'un délai de rétractation de quatorze jours à compter de la réception des documents."
NO_WITHDRAWAL = "Alors non, vous n'avez pas de délai de rétractation, le contrat est ferme dès aujourd'hui."
NO_SIGNATURE = (
    "Je ne vous demande aucune signature par téléphone : je vous envoie les documents par e-mail et vous "
    "signerez après les avoir lus."
)
PRICE = "Votre cotisation mensuelle sera de 29,90 euros, avec un début de contrat au premier mars."
ALREADY_INSURED = "Je suis déjà assurée chez une autre mutuelle depuis dix ans."
CANCEL_OLD = "Si vous le souhaitez, nous nous occupons de la résiliation de votre ancien contrat, c'est gratuit."


def timeline(*agent_lines: str, client_line: str = "D'accord, je vous écoute.") -> str:
    lines = [
        HEADER,
        f"[00:01] Agent: {IDENTITY}",
        f"[00:12] Client: {client_line}",
        f"[00:15] Agent: {RECORDING}",
        "[01:30] Agent: Pour l'optique, vous avez un forfait lunettes tous les deux ans, monture comprise.",
        "[02:10] Client: D'accord, et pour les dents ?",
    ]
    minute = 3
    for line in agent_lines:
        lines.append(f"[{minute:02d}:05] Agent: {line}")
        minute += 2
    lines.append(f"[{minute:02d}:00] Client: Très bien, merci.")
    return "\n".join(lines) + "\n"


COMPLIANT = timeline(PRICE, WITHDRAWAL, NO_SIGNATURE)
MISSING = timeline(PRICE, NO_SIGNATURE)
NEGATED = timeline(PRICE, NO_WITHDRAWAL, NO_SIGNATURE)
INSURED = timeline(PRICE, WITHDRAWAL, CANCEL_OLD, NO_SIGNATURE, client_line=ALREADY_INSURED)

STEP = StepSpec(
    position=1,
    name="Mentions obligatoires",
    instructions="",
    weight=10,
    is_critical=True,
    control_points=[
        (
            1,
            "L'agent donne-t-il son nom, la société, sa qualité de courtier et son numéro ORIAS ?",
            "nom, société, courtier, numéro ORIAS",
            True,
        ),
        (
            2,
            "L'agent indique-t-il que l'appel est enregistré, conservé deux ans, et qu'une copie peut être obtenue ?",
            "appel enregistré, conservé 2 ans, copie",
            True,
        ),
        (3, "L'agent annonce-t-il le délai de rétractation de 14 jours ?", "délai de rétractation de 14 jours", True),
        (
            4,
            "L'agent précise-t-il qu'aucune signature n'est demandée par téléphone ?",
            "pas de signature par téléphone, documents envoyés par e-mail",
            True,
        ),
        (
            5,
            "Si le client est déjà assuré, l'agent indique-t-il que l'ancien contrat peut être résilié ?",
            "résiliation de l'ancien contrat",
            False,
            "agent",
            True,  # conditional
        ),
    ],
)
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "step_answer",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"control_points": {"type": "array"}},
            "required": ["control_points"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture
def sim() -> Iterator[LlmSimulator]:
    with LlmSimulator(SimulatorConfig()) as simulator:
        yield simulator


def step_messages(text: str | None, *, use_tools: bool = False, step: StepSpec = STEP) -> list[dict]:
    return build_step_messages(step=step, fiche_context="Fiche 2225007", timeline_text=text, use_tools=use_tools)


def post(sim: LlmSimulator, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(
        f"{sim.url}/v1/chat/completions", json={"model": "sim-model", **body}, headers=headers, timeout=10
    )


def judged(sim: LlmSimulator, text: str, **extra: Any) -> dict[int, dict[str, Any]]:
    response = post(sim, {"messages": step_messages(text), "response_format": SCHEMA_FORMAT, **extra})
    assert response.status_code == 200
    content = response.json()["choices"][0]["message"]["content"]
    return {item["index"]: item for item in json.loads(content)["control_points"]}


def turn_texts(text: str) -> dict[str, str]:
    """Quote-able text of each turn → its speaker."""
    return {turn.text: turn.speaker for turn in judge.parse_turns(text)}


def assert_verbatim(quote: dict[str, Any], text: str) -> None:
    owner = [turn for turn, speaker in turn_texts(text).items() if quote["text"] in turn]
    assert owner, f"not verbatim: {quote['text']!r}"
    assert turn_texts(text)[owner[0]] == quote["speaker"]
    assert len(quote["text"].split()) >= judge.MIN_QUOTE_WORDS


# --- the judge ----------------------------------------------------------------------------------------------------


def test_compliant_transcript_passes_with_verbatim_quotes(sim: LlmSimulator):
    answers = judged(sim, COMPLIANT)
    assert {index: item["status"] for index, item in answers.items()} == {
        1: "pass",
        2: "pass",
        3: "pass",
        4: "pass",
        5: "not_applicable",
    }
    for index in (1, 2, 3, 4):
        assert answers[index]["quotes"], index
        for quote in answers[index]["quotes"]:
            assert_verbatim(quote, COMPLIANT)
        assert answers[index]["rationale"]
    assert answers[3]["quotes"][0]["text"] == WITHDRAWAL
    assert answers[5]["quotes"] == [] and "condition" in answers[5]["rationale"]


def test_missing_statement_fails(sim: LlmSimulator):
    answers = judged(sim, MISSING)
    assert answers[3]["status"] == "fail"
    assert all(WITHDRAWAL not in quote["text"] for quote in answers[3]["quotes"])
    assert answers[1]["status"] == answers[2]["status"] == answers[4]["status"] == "pass"


def test_negated_statement_fails_quoting_it(sim: LlmSimulator):
    answers = judged(sim, NEGATED)
    assert answers[3]["status"] == "fail"
    assert answers[3]["quotes"] == [{"text": NO_WITHDRAWAL, "speaker": "agent"}]
    assert "contraire" in answers[3]["rationale"]
    other = judged(sim, timeline(PRICE, "Vous n'avez aucun droit de rétractation de quatorze jours sur ce contrat."))
    assert other[3]["status"] == "fail" and "aucun droit" in other[3]["quotes"][0]["text"]


def test_negative_point_passes_a_negative_statement_and_fails_the_opposite(sim: LlmSimulator):
    assert judged(sim, COMPLIANT)[4]["status"] == "pass"
    signing = timeline(
        PRICE,
        WITHDRAWAL,
        "Je vous demande une signature par téléphone maintenant, les documents seront envoyés par e-mail ensuite.",
    )
    answer = judged(sim, signing)[4]
    assert answer["status"] == "fail" and "signature par téléphone maintenant" in answer["quotes"][0]["text"]


def test_condition_absent_is_not_applicable_and_present_is_judged(sim: LlmSimulator):
    assert judged(sim, COMPLIANT)[5]["status"] == "not_applicable"
    answer = judged(sim, INSURED)[5]
    assert answer["status"] == "pass" and answer["quotes"][0]["text"] == CANCEL_OLD


def test_a_single_control_point_is_answered_alone(sim: LlmSimulator):
    messages = build_step_messages(
        step=STEP, fiche_context="", timeline_text=COMPLIANT, use_tools=False, only_control_point=3
    )
    response = post(sim, {"messages": messages, "response_format": SCHEMA_FORMAT})
    answer = json.loads(response.json()["choices"][0]["message"]["content"])
    assert [item["index"] for item in answer["control_points"]] == [3]


@pytest.mark.parametrize("text", [COMPLIANT, MISSING, NEGATED, INSURED])
def test_tools_mode_agrees_with_prompt_mode(settings, sim: LlmSimulator, text: str):
    settings.LLM_BASE_URL, settings.LLM_API_KEY, settings.LLM_MAX_RETRIES = f"{sim.url}/v1", "sk-sim-key", 0
    prompt = complete_structured(messages=step_messages(text), answer_model=StepAnswer, schema_name="step_answer")
    tools = TranscriptTools(chunks_from_timeline_text(text, max_chars=250))
    tooled = complete_structured(
        messages=step_messages(None, use_tools=True),
        answer_model=StepAnswer,
        schema_name="step_answer",
        tools=TOOL_SPECS,
        tool_handler=tools.handle,
    )
    assert tooled.rounds == 3 and tooled.tool_calls
    for left, right in zip(prompt.value.control_points, tooled.value.control_points, strict=True):
        assert (left.index, left.status, left.quotes) == (right.index, right.status, right.quotes)


def test_tools_mode_asks_for_searches_then_chunks(sim: LlmSimulator):
    messages = step_messages(None, use_tools=True)
    first = post(sim, {"messages": messages, "tools": TOOL_SPECS}).json()["choices"][0]
    assert first["finish_reason"] == "tool_calls" and first["message"]["content"] is None
    calls = first["message"]["tool_calls"]
    assert [call["function"]["name"] for call in calls] == ["searchTranscript"] * 5
    args = json.loads(calls[2]["function"]["arguments"])
    assert args == {"query": "délai de rétractation de 14 jours", "max_results": judge.SEARCH_RESULTS_PER_POINT}
    assert "déjà assuré" in json.loads(calls[4]["function"]["arguments"])["query"]  # the condition is searched too

    tools = TranscriptTools(chunks_from_timeline_text(COMPLIANT, max_chars=250))
    results = [
        {
            "role": "tool",
            "tool_call_id": call["id"],
            "content": tools.handle("searchTranscript", json.loads(call["function"]["arguments"])),
        }
        for call in calls
    ]
    messages = [*messages, {"role": "assistant", "content": None, "tool_calls": calls}, *results]
    second = post(sim, {"messages": messages, "tools": TOOL_SPECS}).json()["choices"][0]
    reads = second["message"]["tool_calls"]
    assert {call["function"]["name"] for call in reads} == {"getTranscriptChunks"}
    for call in reads:
        assert 1 <= len(json.loads(call["function"]["arguments"])["chunk_ids"]) <= 4


def test_chat_answers_in_french_quoting_the_context(sim: LlmSimulator):
    messages = [
        {"role": "system", "content": f"Transcription :\n{COMPLIANT}"},
        {"role": "user", "content": "Le numéro ORIAS a-t-il été donné ?"},
    ]
    message = post(sim, {"messages": messages}).json()["choices"][0]["message"]
    assert message["content"].startswith("D'après")
    quoted = re.findall(r"« (.+?) »", message["content"])
    assert quoted and quoted[0] == IDENTITY
    nothing = post(sim, {"messages": [{"role": "user", "content": "Quelle est la capitale du Pérou ?"}]}).json()
    assert "Je ne trouve rien" in nothing["choices"][0]["message"]["content"]


def test_unknown_schema_gets_a_conforming_filler(sim: LlmSimulator):
    schema = {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "count": {"type": "integer"},
            "level": {"type": ["string", "null"], "enum": ["low", "high", None]},
        },
        "required": ["summary", "count", "level"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "other", "strict": True, "schema": schema}}
    body = post(sim, {"messages": [{"role": "user", "content": "Résumez."}], "response_format": response_format})
    assert json.loads(body.json()["choices"][0]["message"]["content"]) == {"summary": "", "count": 0, "level": "low"}


# --- knobs --------------------------------------------------------------------------------------------------------


def pass_quotes(answers: dict[int, dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return [(index, quote) for index, item in answers.items() for quote in item["quotes"]]


def test_fabricate_rate_replaces_quotes_with_plausible_sentences_not_in_the_transcript(sim: LlmSimulator):
    honest = judged(sim, COMPLIANT)
    sim.config.fabricate_rate = 1.0
    faked = judged(sim, COMPLIANT)
    assert {i: a["status"] for i, a in faked.items()} == {i: a["status"] for i, a in honest.items()}
    quotes = pass_quotes(faked)
    assert len(quotes) == len(pass_quotes(honest)) >= 4
    for _, quote in quotes:
        assert fold(quote["text"]) not in fold(COMPLIANT)
        assert len(quote["text"].split()) >= 8 and quote["text"][-1] in ".?!"
        assert quote["speaker"] == "agent"
    withdrawal = faked[3]["quotes"][0]["text"]
    assert re.search(r"jours|mois|renoncer|avis", withdrawal)  # on topic


def test_alter_numbers_rate_changes_a_number_in_quotes(sim: LlmSimulator):
    honest = dict(pass_quotes(judged(sim, COMPLIANT)))
    sim.config.alter_numbers_rate = 1.0
    altered = dict(pass_quotes(judged(sim, COMPLIANT)))
    assert honest[3]["text"] == WITHDRAWAL
    assert altered[3]["text"] != WITHDRAWAL and "quatorze" not in altered[3]["text"]
    assert altered[3]["text"].replace("quatorze", "") != WITHDRAWAL
    assert altered[1]["text"] != honest[1]["text"]
    assert re.findall(r"\d+", altered[1]["text"]) != re.findall(r"\d+", honest[1]["text"])
    for index in (1, 3):
        assert altered[index]["text"] not in COMPLIANT
        assert len(altered[index]["text"].split()) == len(honest[index]["text"].split())  # same sentence otherwise


def test_negate_rate_flips_the_negation_of_quotes(sim: LlmSimulator):
    honest = dict(pass_quotes(judged(sim, COMPLIANT)))
    sim.config.negate_rate = 1.0
    flipped = dict(pass_quotes(judged(sim, COMPLIANT)))
    assert not judge.has_negation(honest[3]["text"]) and judge.has_negation(flipped[3]["text"])
    assert flipped[3]["text"].startswith("Vous ne disposez pas d'un délai de rétractation")
    assert judge.has_negation(honest[4]["text"]) and not judge.has_negation(flipped[4]["text"])
    for index in (3, 4):
        assert flipped[index]["text"] not in COMPLIANT


def test_dodge_rate_answers_not_applicable_everywhere_without_evidence(sim: LlmSimulator):
    sim.config.dodge_rate = 1.0
    dodged = judged(sim, COMPLIANT)
    assert set(dodged) == {1, 2, 3, 4, 5}
    assert all(a["status"] == "not_applicable" and a["quotes"] == [] and a["rationale"] for a in dodged.values())


def test_wrong_speaker_rate_passes_agent_points_on_the_clients_words(sim: LlmSimulator):
    client_turns = {text for text, speaker in turn_texts(INSURED).items() if speaker == "client"}
    sim.config.wrong_speaker_rate = 1.0
    lied = judged(sim, INSURED)
    assert set(lied) == {1, 2, 3, 4, 5}
    for answer in lied.values():
        assert answer["status"] == "pass"
        (quote,) = answer["quotes"]
        assert quote["speaker"] == "agent"  # claimed…
        assert any(quote["text"] in turn for turn in client_turns)  # …but the client said it


def test_the_honest_judge_looks_for_evidence_in_the_points_speakers_turns(sim: LlmSimulator):
    """A client who repeats the recording notice does not make the agent's point pass."""
    recording_point = StepSpec(
        position=1,
        name="Enregistrement",
        instructions="",
        weight=10,
        is_critical=True,
        control_points=[(1, "L'agent informe-t-il que l'appel est enregistré ?", "appel enregistré", True)],
    )
    text = "\n".join(
        [
            HEADER,
            "[00:01] Agent: Bonjour madame, Julie Martin de la société Assurdirect.",
            "[00:09] Client: Je sais que cet appel est enregistré, on me le dit à chaque fois.",
            "[00:15] Agent: Très bien, alors parlons de votre mutuelle.",
        ]
    )
    response = post(sim, {"messages": step_messages(text, step=recording_point), "response_format": SCHEMA_FORMAT})
    (answer,) = json.loads(response.json()["choices"][0]["message"]["content"])["control_points"]
    assert answer["status"] == "fail"
    assert all(q["speaker"] == "agent" for q in answer["quotes"])


def test_bad_json_rate_and_bad_json_next_break_the_answer(sim: LlmSimulator):
    sim.config.bad_json_rate = 1.0
    body = {"messages": step_messages(COMPLIANT), "response_format": SCHEMA_FORMAT}
    content = post(sim, body).json()["choices"][0]["message"]["content"]
    with pytest.raises(ValueError):
        StepAnswer.model_validate_json(content)
    sim.config.bad_json_rate = 0.0
    sim.config.bad_json_next = 1
    with pytest.raises(ValueError):
        StepAnswer.model_validate_json(post(sim, body).json()["choices"][0]["message"]["content"])
    assert StepAnswer.model_validate_json(post(sim, body).json()["choices"][0]["message"]["content"])
    assert sim.config.bad_json_next == 0


def test_length_rate_cuts_the_answer(sim: LlmSimulator):
    body = {"messages": step_messages(COMPLIANT), "response_format": SCHEMA_FORMAT}
    whole = post(sim, body).json()["choices"][0]["message"]["content"]
    sim.config.length_rate = 1.0
    choice = post(sim, body).json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert whole.startswith(choice["message"]["content"]) and len(choice["message"]["content"]) < len(whole)


def test_fail_rate_and_429_bursts(sim: LlmSimulator):
    body = {"messages": [{"role": "user", "content": "Bonjour"}]}
    sim.config.burst_429 = 2
    limited = [post(sim, body) for _ in range(3)]
    assert [response.status_code for response in limited] == [429, 429, 200]
    assert limited[0].headers["Retry-After"] == "1"
    assert limited[0].json()["error"]["type"] == "rate_limit_error"
    assert sim.config.burst_429 == 0
    sim.config.fail_rate = 1.0
    failed = post(sim, body)
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "server_error"


def test_no_json_schema_quirk_rejects_only_json_schema(sim: LlmSimulator):
    sim.config.no_json_schema = True
    rejected = post(sim, {"messages": step_messages(COMPLIANT), "response_format": SCHEMA_FORMAT})
    assert rejected.status_code == 400 and rejected.json()["error"]["param"] == "response_format"
    accepted = post(sim, {"messages": step_messages(COMPLIANT), "response_format": {"type": "json_object"}})
    assert StepAnswer.model_validate_json(accepted.json()["choices"][0]["message"]["content"])


def test_api_key_is_required_when_set(sim: LlmSimulator):
    sim.config.api_key = "sim-secret"
    body = {"messages": [{"role": "user", "content": "Bonjour"}]}
    assert post(sim, body).status_code == 401
    assert post(sim, body, Authorization="Bearer wrong").status_code == 401
    assert post(sim, body, Authorization="Bearer sim-secret").status_code == 200
    models = httpx.get(f"{sim.url}/v1/models", headers={"Authorization": "Bearer sim-secret"}, timeout=5)
    assert models.status_code == 200 and models.json()["data"][0]["id"] == "llm-simulator"
    log = json.dumps(sim.requests())
    assert "sim-secret" not in log and "wrong" not in log


def test_stream_is_server_sent_events_with_usage_and_done(sim: LlmSimulator):
    messages = [{"role": "system", "content": COMPLIANT}, {"role": "user", "content": "Le délai de rétractation ?"}]
    body = {"messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{sim.url}/v1/chat/completions", json={"model": "m", **body}, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks if chunk["choices"])
    plain = post(sim, {"messages": messages}).json()
    assert text == plain["choices"][0]["message"]["content"]
    finish = [chunk["choices"][0]["finish_reason"] for chunk in chunks if chunk["choices"]]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]


# --- admin endpoints, log, configuration --------------------------------------------------------------------------


def test_config_endpoint_reads_and_updates_knobs_all_or_none(sim: LlmSimulator):
    config = httpx.get(f"{sim.url}/__sim__/config", timeout=5).json()
    assert config["seed"] == 42 and config["fabricate_rate"] == 0.0 and config["no_json_schema"] is False
    updated = httpx.post(f"{sim.url}/__sim__/config", json={"negate_rate": 0.5, "no_tool_ids": True}, timeout=5)
    assert updated.status_code == 200 and updated.json()["negate_rate"] == 0.5
    assert sim.config.no_tool_ids is True
    for bad in ({"negate_rate": 2}, {"nope": 1}, {"fenced_json": "yes"}, {"burst_429": -1}, {"seed": 1, "model": ""}):
        response = httpx.post(f"{sim.url}/__sim__/config", json=bad, timeout=5)
        assert response.status_code == 400 and response.json()["message"]
    assert sim.config.seed == 42  # all or none
    assert httpx.post(f"{sim.url}/__sim__/config", content=b"[1]", timeout=5).status_code == 400


def test_request_log_records_requests_without_secrets_and_can_be_cleared(sim: LlmSimulator):
    messages = step_messages(COMPLIANT)
    post(sim, {"messages": messages, "response_format": SCHEMA_FORMAT}, Authorization="Bearer sk-top-secret")
    post(sim, {"messages": "nope"})
    ok, bad = sim.requests()
    assert ok["method"] == "POST" and ok["path"] == "/v1/chat/completions" and ok["status"] == 200
    assert ok["body"]["messages"] == messages and ok["body"]["response_format"] == SCHEMA_FORMAT
    assert ok["start"] <= ok["end"] and ok["stream"] is False and ok["cancelled"] is False
    assert ok["response"]["kind"] == "answer" and ok["response"]["usage"]["prompt_tokens"] > 0
    assert "authorization" not in {name.lower() for name in ok["headers"]} and "sk-top-secret" not in json.dumps(ok)
    assert bad["status"] == 400
    over_http = httpx.get(f"{sim.url}/__sim__/requests", timeout=5).json()["requests"]
    assert over_http == sim.requests()
    assert httpx.delete(f"{sim.url}/__sim__/requests", timeout=5).status_code == 200
    assert sim.requests() == []
    assert httpx.get(f"{sim.url}/v1/unknown", timeout=5).status_code == 404


def test_config_from_environment():
    config = SimulatorConfig.from_env(
        {
            ENV_VARS["fabricate_rate"]: "0.25",
            ENV_VARS["no_usage"]: "true",
            ENV_VARS["burst_429"]: "3",
            ENV_VARS["api_key"]: "k",
        }
    )
    assert (config.fabricate_rate, config.no_usage, config.burst_429, config.api_key) == (0.25, True, 3, "k")
    assert ENV_VARS["stream_token_delay_ms"] == "LLM_SIM_STREAM_TOKEN_DELAY_MS"
    with pytest.raises(ValueError, match="LLM_SIM_NEGATE_RATE"):
        SimulatorConfig.from_env({"LLM_SIM_NEGATE_RATE": "beaucoup"})
    with pytest.raises(ValueError, match="between 0 and 1"):
        SimulatorConfig.from_env({"LLM_SIM_LENGTH_RATE": "1.5"})


def test_management_command_serves_with_flags():
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_llm_simulator", "--port", "0", "--no-json-schema", "true"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "LLM_SIM_SEED": "7", "DJANGO_SETTINGS_MODULE": "config.test_settings"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        url = re.search(r"listening on (http://\S+)", first)
        assert url, first + (process.stderr.read() if process.poll() is not None and process.stderr else "")
        config = httpx.get(f"{url.group(1)}/__sim__/config", timeout=5).json()
        assert config["no_json_schema"] is True and config["seed"] == 7
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- token economy of tools mode ----------------------------------------------------------------------------------

_AGENT_FILLER = [
    "Alors je regarde votre dossier, vous habitez toujours à Lyon dans le troisième arrondissement.",
    "Je vais noter vos informations pour préparer une proposition adaptée à votre situation.",
    "Pour les soins courants, les consultations chez le généraliste sont remboursées à cent pour cent.",
    "Pour l'optique, vous avez un forfait pour les lunettes tous les deux ans, monture et verres compris.",
    "Pour le dentaire, les prothèses sont prises en charge avec un plafond annuel assez confortable.",
    "L'hospitalisation est couverte, avec la chambre particulière et le forfait journalier.",
    "Vous pouvez ajouter votre conjoint ou vos enfants sur le même contrat si vous le souhaitez.",
    "Les remboursements arrivent en général sous quarante-huit heures grâce à la télétransmission.",
    "Vous aurez une application pour suivre vos remboursements et envoyer vos factures.",
    "Notre service client est joignable du lundi au samedi, de huit heures à vingt heures.",
    "Je comprends tout à fait, c'est une question qui revient souvent chez nos adhérents.",
    "On peut aussi regarder la formule supérieure si vous avez des besoins particuliers en dentaire.",
    "La médecine douce est incluse, ostéopathe et kinésithérapeute, plusieurs séances par an.",
    "Je vous laisse réfléchir, prenez votre temps, il n'y a aucune urgence de votre côté.",
    "Votre mutuelle actuelle vous coûte combien par mois, si ce n'est pas indiscret ?",
    "Est-ce que vous portez des lunettes ou des lentilles en ce moment ?",
    "Très bien, je note que vous êtes en bonne santé et que vous consultez assez peu.",
]
_CLIENT_FILLER = [
    "D'accord, je vois.",
    "Oui, c'est ça.",
    "Hum, et pour les lunettes alors ?",
    "Ah bon, c'est intéressant.",
    "Je ne sais pas trop, il faut que je réfléchisse.",
    "Oui, je porte des lunettes depuis longtemps.",
    "Et ça coûte combien tout ça ?",
    "Non, pas de soins prévus pour l'instant.",
    "Oui, allez-y, continuez.",
]
_KEY_TURNS = {2: IDENTITY, 6: RECORDING, 120: PRICE, 180: WITHDRAWAL, 220: NO_SIGNATURE}


def sixty_minute_timeline() -> str:
    """About 8,000 spoken words over 60 minutes (130 a minute), the mandatory statements spread along it."""
    rng = random.Random(7)
    lines = ["### Appel CALL-60 — 2026-02-02 10:00 (sortant)"]
    seconds = turn = 0
    while seconds < 60 * 60:
        if turn in _KEY_TURNS:
            speaker, text = "Agent", _KEY_TURNS[turn]
        elif turn % 2 == 0:
            speaker, text = "Agent", " ".join(rng.sample(_AGENT_FILLER, rng.randint(2, 4)))
        else:
            speaker, text = "Client", " ".join(rng.sample(_CLIENT_FILLER, rng.randint(1, 2)))
        lines.append(f"[{seconds // 60:02d}:{seconds % 60:02d}] {speaker}: {text}")
        seconds += max(3, len(text.split()) * 60 // 130)
        turn += 1
    return "\n".join(lines) + "\n"


def test_tools_mode_uses_at_most_40_percent_of_prompt_mode_tokens_on_an_hour(settings, sim: LlmSimulator):
    settings.LLM_BASE_URL, settings.LLM_API_KEY, settings.LLM_MAX_RETRIES = f"{sim.url}/v1", "sk-sim-key", 0
    text = sixty_minute_timeline()
    assert 7_500 <= sum(len(turn.text.split()) for turn in judge.parse_turns(text)) <= 8_500
    step = StepSpec(
        1,
        "Mentions obligatoires",
        "",
        10,
        True,
        [
            *STEP.control_points[:4],
            (5, "L'agent annonce-t-il le montant de la cotisation mensuelle ?", "cotisation mensuelle en euros", False),
        ],
    )
    prompt = complete_structured(
        messages=step_messages(text, step=step), answer_model=StepAnswer, schema_name="step_answer"
    )
    tools = TranscriptTools(chunks_from_timeline_text(text))
    tooled = complete_structured(
        messages=step_messages(None, use_tools=True, step=step),
        answer_model=StepAnswer,
        schema_name="step_answer",
        tools=TOOL_SPECS,
        tool_handler=tools.handle,
    )
    ratio = tooled.usage.prompt_tokens / prompt.usage.prompt_tokens
    assert ratio <= 0.40, (tooled.usage, prompt.usage)
    assert [(p.status, p.quotes) for p in prompt.value.control_points] == [
        (t.status, t.quotes) for t in tooled.value.control_points
    ]
    assert {p.status for p in prompt.value.control_points} == {"pass"}
