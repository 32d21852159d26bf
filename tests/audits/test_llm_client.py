"""The LLM client against the LLM simulator over real HTTP: structured answers, every server quirk and error,
the tools loop and its budget, streaming and its cancellation; plus the strict JSON schema helper."""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Iterator
from typing import Literal

import httpx
import pydantic
import pytest

from audits.prompts import StepAnswer, StepSpec, build_step_messages
from audits.simulator.server import LlmSimulator, SimulatorConfig, message_chars
from audits.transcript_tools import (
    TOOL_SPECS,
    TranscriptTools,
    chunks_from_timeline_text,
)
from llm import client as llm
from llm.client import (
    ANSWER_NOW_MESSAGE,
    ChatEvent,
    LlmInvalidAnswer,
    LlmNotConfigured,
    LlmPermanentError,
    LlmTransientError,
    LlmTruncated,
    Usage,
    complete_structured,
    stream_chat,
    strict_json_schema,
)

API_KEY = "sk-test-0123456789abcdef"
TIMELINE = """\
### Appel CALL-1 — 2026-02-02 10:00 (sortant)
[00:01] Agent: Bonjour madame Durand, je suis Julie Martin de la société Assurdirect. Nous sommes courtier en \
assurances, immatriculé à l'ORIAS sous le numéro 12 345 678.
[00:12] Client: Oui, bonjour.
[00:15] Agent: Je vous informe que cet appel est enregistré. L'enregistrement est conservé deux ans après la \
signature et vous pouvez en obtenir une copie sur simple demande.
[01:30] Agent: Pour l'optique, vous avez un forfait lunettes tous les deux ans, monture et verres compris.
[02:10] Client: D'accord, et les dents ?
[02:30] Agent: Le dentaire est bien couvert, avec un plafond annuel confortable.
[05:40] Agent: Vous disposez d'un délai de rétractation de quatorze jours à compter de la réception des documents.
[06:00] Agent: Je ne vous demande aucune signature par téléphone : je vous envoie les documents par e-mail et \
vous signerez après les avoir lus.
[06:20] Client: Très bien, merci.
"""
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
            True,  # conditional: the only kind that may be not_applicable
        ),
    ],
)
EXPECTED = {1: "pass", 2: "pass", 3: "pass", 4: "pass", 5: "not_applicable"}


@pytest.fixture
def sim() -> Iterator[LlmSimulator]:
    with LlmSimulator(SimulatorConfig()) as simulator:
        yield simulator


@pytest.fixture
def llm_settings(settings, sim: LlmSimulator):
    settings.LLM_BASE_URL = f"{sim.url}/v1"
    settings.LLM_API_KEY = API_KEY
    settings.LLM_MODEL = "sim-model"
    settings.LLM_MAX_RETRIES = 0
    settings.LLM_TIMEOUT_SECONDS = 10.0
    settings.LLM_SEED = 1234
    return settings


def prompt_messages() -> list[dict]:
    return build_step_messages(step=STEP, fiche_context="Fiche 2225007", timeline_text=TIMELINE, use_tools=False)


def tools_messages() -> list[dict]:
    return build_step_messages(step=STEP, fiche_context="Fiche 2225007", timeline_text=None, use_tools=True)


def ask(**kwargs) -> llm.StructuredResult:
    return complete_structured(
        **({"messages": prompt_messages(), "answer_model": StepAnswer, "schema_name": "step_answer"} | kwargs)
    )


def ask_with_tools(max_tool_calls: int = 8) -> llm.StructuredResult:
    tools = TranscriptTools(chunks_from_timeline_text(TIMELINE, max_chars=300))
    return complete_structured(
        messages=tools_messages(),
        answer_model=StepAnswer,
        schema_name="step_answer",
        tools=TOOL_SPECS,
        tool_handler=tools.handle,
        max_tool_calls=max_tool_calls,
    )


def statuses(result: llm.StructuredResult) -> dict[int, str]:
    assert isinstance(result.value, StepAnswer)
    return {item.index: item.status for item in result.value.control_points}


def raw_completion(sim: LlmSimulator, messages: list[dict], **extra) -> dict:
    response = httpx.post(
        f"{sim.url}/v1/chat/completions", json={"model": "m", "messages": messages, **extra}, timeout=10
    )
    assert response.status_code == 200
    return response.json()


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# --- strict schema ---------------------------------------------------------------------------------------------


class Inner(pydantic.BaseModel):
    label: str = "x"
    rank: int | None


class Outer(pydantic.BaseModel):
    name: str
    note: str | None = None
    kind: Literal["a", "b"] | None
    inner: Inner
    maybe_inner: Inner | None
    items: list[Inner]
    tags: list[str] | None


def test_strict_json_schema_requires_every_property_and_forbids_extras():
    schema = strict_json_schema(Outer)
    assert "$defs" not in schema and "$ref" not in json.dumps(schema)
    assert "title" not in json.dumps(schema) and '"default"' not in json.dumps(schema)

    def objects(node):
        if isinstance(node, dict):
            if node.get("type") == "object" or "properties" in node:
                yield node
            for value in node.values():
                yield from objects(value)
        elif isinstance(node, list):
            for value in node:
                yield from objects(value)

    found = list(objects(schema))
    assert len(found) == 4  # Outer, inner, maybe_inner's object variant, items' items
    for node in found:
        assert node["additionalProperties"] is False
        assert node["required"] == list(node["properties"])
    props = schema["properties"]
    assert props["note"] == {"type": ["string", "null"]}
    assert props["kind"] == {"type": ["string", "null"], "enum": ["a", "b", None]}
    assert props["tags"] == {"type": ["array", "null"], "items": {"type": "string"}}
    assert props["inner"]["properties"]["rank"] == {"type": ["integer", "null"]}
    assert [variant.get("type") for variant in props["maybe_inner"]["anyOf"]] == ["object", "null"]
    assert props["items"]["items"]["required"] == ["label", "rank"]


def test_strict_json_schema_of_the_step_answer():
    schema = strict_json_schema(StepAnswer)
    point = schema["properties"]["control_points"]["items"]
    assert point["required"] == ["index", "status", "quotes", "rationale"]
    assert point["properties"]["status"]["enum"] == ["pass", "fail", "not_applicable"]
    quote = point["properties"]["quotes"]["items"]
    assert quote["properties"]["speaker"] == {"type": ["string", "null"], "enum": ["agent", "client", None]}


def test_strict_json_schema_refuses_recursive_models():
    class Node(pydantic.BaseModel):
        children: list[Node]

    with pytest.raises(ValueError, match="recursive"):
        strict_json_schema(Node)


def test_usage_adds_up_and_keeps_the_estimated_flag():
    total = Usage(10, 2, 12, False) + Usage(5, 1, 6, True)
    assert total == Usage(15, 3, 18, True)
    assert Usage.zero() + Usage(1, 1, 2, False) == Usage(1, 1, 2, False)


# --- configuration and requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["LLM_API_KEY", "LLM_BASE_URL"])
def test_not_configured_names_the_setting(llm_settings, missing: str):
    setattr(llm_settings, missing, "")
    with pytest.raises(LlmNotConfigured, match=missing) as caught:
        ask()
    assert isinstance(caught.value, LlmPermanentError)
    with pytest.raises(LlmNotConfigured, match=missing):
        next(stream_chat(messages=[{"role": "user", "content": "Bonjour"}]))


def test_structured_answer_with_json_schema(llm_settings, sim: LlmSimulator):
    result = ask()
    assert statuses(result) == EXPECTED
    assert result.response_format_used == "json_schema" and result.rounds == 1 and result.tool_calls == []
    assert result.model == "sim-model" and result.latency_ms >= 0
    quote = result.value.control_points[2].quotes[0]
    assert quote.text in TIMELINE and quote.speaker == "agent"

    (entry,) = sim.requests()
    body = entry["body"]
    assert body["model"] == "sim-model" and body["temperature"] == 0 and body["seed"] == 1234
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "step_answer", "strict": True, "schema": strict_json_schema(StepAnswer)},
    }
    assert "tools" not in body and body["messages"] == prompt_messages()
    assert not any(name.lower() == "authorization" for name in entry["headers"])
    usage = entry["response"]["usage"]
    assert result.usage == Usage(usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"], False)


def test_falls_back_to_json_object_without_json_schema_and_remembers(llm_settings, sim: LlmSimulator):
    sim.config.no_json_schema = True
    result = ask()
    assert statuses(result) == EXPECTED and result.response_format_used == "json_object"
    rejected, accepted = sim.requests()
    assert rejected["status"] == 400 and rejected["body"]["response_format"]["type"] == "json_schema"
    assert accepted["status"] == 200 and accepted["body"]["response_format"] == {"type": "json_object"}
    instruction = accepted["body"]["messages"][1]
    assert instruction["role"] == "system" and "JSON" in instruction["content"]
    assert '"control_points"' in instruction["content"]

    sim.clear_requests()
    again = ask()
    assert again.response_format_used == "json_object"
    (only,) = sim.requests()  # remembered: no second 400
    assert only["body"]["response_format"] == {"type": "json_object"}


def test_reads_json_in_a_markdown_fence_with_text_around(llm_settings, sim: LlmSimulator):
    sim.config.fenced_json = True
    content = raw_completion(sim, prompt_messages())["choices"][0]["message"]["content"]
    assert content.startswith("Voici") and "```json" in content
    assert statuses(ask()) == EXPECTED


def test_invalid_answer_is_reasked_once_with_the_error(llm_settings, sim: LlmSimulator):
    sim.config.bad_json_next = 1
    result = ask()
    assert statuses(result) == EXPECTED and result.rounds == 2
    first, second = sim.requests()
    reask = second["body"]["messages"][-1]
    assert reask["role"] == "user" and reask["content"].startswith("Votre réponse précédente n'est pas valide")
    assert "JSON" in reask["content"]
    assert second["body"]["messages"][-2]["role"] == "assistant"
    assert second["body"]["messages"][:-2] == first["body"]["messages"]
    total = sum(entry["response"]["usage"]["prompt_tokens"] for entry in (first, second))
    assert result.usage.prompt_tokens == total


def test_still_invalid_after_one_reask_raises(llm_settings, sim: LlmSimulator):
    sim.config.bad_json_rate = 1.0
    with pytest.raises(LlmInvalidAnswer) as caught:
        ask()
    assert len(sim.requests()) == 2
    assert caught.value.validation_error and caught.value.validation_error in str(caught.value)
    assert isinstance(caught.value, LlmPermanentError)


def test_cut_answer_raises_truncated_without_parsing(llm_settings, sim: LlmSimulator):
    sim.config.length_rate = 1.0
    with pytest.raises(LlmTruncated, match="length"):
        ask()
    assert len(sim.requests()) == 1  # no re-ask of a cut answer


def test_refusal_is_permanent(llm_settings, sim: LlmSimulator):
    sim.config.refusal_rate = 1.0
    with pytest.raises(LlmPermanentError, match="refused"):
        ask()
    assert len(sim.requests()) == 1


def test_content_filter_is_permanent(llm_settings, sim: LlmSimulator):
    sim.config.content_filter_rate = 1.0
    with pytest.raises(LlmPermanentError, match="content_filter"):
        ask()


def test_missing_usage_is_estimated_from_characters(llm_settings, sim: LlmSimulator):
    sim.config.no_usage = True
    assert "usage" not in raw_completion(sim, prompt_messages())
    sim.clear_requests()
    result = ask()
    assert result.usage.estimated is True
    (entry,) = sim.requests()
    assert result.usage.prompt_tokens == math.ceil(message_chars(entry["body"]["messages"]) / 4)
    assert result.usage.prompt_tokens == entry["response"]["usage"]["prompt_tokens"]
    assert result.usage.completion_tokens > 0


# --- errors -----------------------------------------------------------------------------------------------------


def test_429_is_retried_after_retry_after(llm_settings, sim: LlmSimulator):
    llm_settings.LLM_MAX_RETRIES = 1
    sim.config.burst_429 = 1
    assert statuses(ask()) == EXPECTED
    limited, answered = sim.requests()
    assert limited["status"] == 429 and answered["status"] == 200
    assert answered["start"] - limited["end"] >= 0.9  # Retry-After: 1


def test_429_after_retries_is_transient_with_retry_after(llm_settings, sim: LlmSimulator):
    sim.config.burst_429 = 3
    with pytest.raises(LlmTransientError) as caught:
        ask()
    assert caught.value.status == 429 and caught.value.retry_after == 1.0
    assert len(sim.requests()) == 1


def test_5xx_is_transient_after_bounded_retries(llm_settings, sim: LlmSimulator):
    llm_settings.LLM_MAX_RETRIES = 1
    sim.config.fail_rate = 1.0
    with pytest.raises(LlmTransientError) as caught:
        ask()
    assert caught.value.status == 500
    assert [entry["status"] for entry in sim.requests()] == [500, 500]


def test_timeout_is_transient(llm_settings, sim: LlmSimulator):
    llm_settings.LLM_TIMEOUT_SECONDS = 0.3
    sim.config.latency_ms = 1500
    started = time.monotonic()
    with pytest.raises(LlmTransientError, match="timeout") as caught:
        ask()
    assert caught.value.status is None and time.monotonic() - started < 1.4


def test_connection_error_is_transient(llm_settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    llm_settings.LLM_BASE_URL = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(LlmTransientError, match="unreachable"):
        ask()


def test_400_is_permanent_and_not_taken_for_a_schema_problem(llm_settings, sim: LlmSimulator):
    with pytest.raises(LlmPermanentError) as caught:
        ask(messages=[])
    assert caught.value.status == 400 and "messages" in str(caught.value)
    assert not isinstance(caught.value, LlmTransientError)
    assert len(sim.requests()) == 1  # no json_object fallback for an unrelated 400
    assert ask().response_format_used == "json_schema"


def test_401_is_permanent_and_never_shows_the_key(llm_settings, sim: LlmSimulator):
    sim.config.api_key = "the-right-key"
    with pytest.raises(LlmPermanentError) as caught:
        ask()
    error = caught.value
    assert error.status == 401
    for text in (str(error), repr(error), str(error.args)):
        assert API_KEY not in text
    assert "***" in str(error)  # the simulator echoes the bearer, as some servers do; we scrub it
    sim.config.api_key = API_KEY
    assert statuses(ask()) == EXPECTED


def test_404_is_permanent(llm_settings, sim: LlmSimulator):
    llm_settings.LLM_BASE_URL = f"{sim.url}/nope/v1"
    with pytest.raises(LlmPermanentError) as caught:
        ask()
    assert caught.value.status == 404


# --- tools ------------------------------------------------------------------------------------------------------


def test_tools_loop_searches_reads_then_answers(llm_settings, sim: LlmSimulator):
    result = ask_with_tools()
    assert statuses(result) == EXPECTED
    assert result.rounds == 3
    names = [call["name"] for call in result.tool_calls]
    assert names[:5] == ["searchTranscript"] * 5 and set(names[5:]) == {"getTranscriptChunks"}
    assert all(isinstance(call["arguments"], dict) and call["result_size"] > 0 for call in result.tool_calls)
    entries = sim.requests()
    assert len(entries) == 3
    assert all(entry["body"]["tools"] == TOOL_SPECS and entry["body"]["tool_choice"] == "auto" for entry in entries)
    last = entries[-1]["body"]["messages"]
    tool_messages = [message for message in last if message["role"] == "tool"]
    assert len(tool_messages) == len(result.tool_calls)
    assert result.usage.prompt_tokens == sum(entry["response"]["usage"]["prompt_tokens"] for entry in entries)
    assert result.usage.completion_tokens == sum(entry["response"]["usage"]["completion_tokens"] for entry in entries)
    prompt_quotes = {item.index: item.quotes for item in ask().value.control_points}
    assert {item.index: item.quotes for item in result.value.control_points} == prompt_quotes


def test_tools_budget_then_a_forced_answer(llm_settings, sim: LlmSimulator):
    result = ask_with_tools(max_tool_calls=2)
    assert len(result.tool_calls) == 2 and result.rounds == 2
    first, forced = sim.requests()
    assert first["body"]["tool_choice"] == "auto"
    assert forced["body"]["tool_choice"] == "none"
    messages = forced["body"]["messages"]
    assert messages[-1] == {"role": "user", "content": ANSWER_NOW_MESSAGE}
    calls = next(message for message in messages if message["role"] == "assistant")["tool_calls"]
    answers = [message for message in messages if message["role"] == "tool"]
    assert len(calls) == 5 and [m["tool_call_id"] for m in answers] == [call["id"] for call in calls]
    assert all("error" in json.loads(message["content"]) for message in answers[2:])
    assert set(statuses(result)) == {1, 2, 3, 4, 5}


def test_tool_arguments_given_as_objects(llm_settings, sim: LlmSimulator):
    sim.config.args_as_object = True
    call = raw_completion(sim, tools_messages(), tools=TOOL_SPECS)["choices"][0]["message"]["tool_calls"][0]
    assert isinstance(call["function"]["arguments"], dict)
    sim.clear_requests()
    result = ask_with_tools()
    assert statuses(result) == EXPECTED and all(isinstance(c["arguments"], dict) for c in result.tool_calls)
    echoed = next(m for m in sim.requests()[1]["body"]["messages"] if m["role"] == "assistant")["tool_calls"]
    assert all(isinstance(c["function"]["arguments"], str) for c in echoed)  # sent back as the standard string


def test_tool_calls_without_ids_get_generated_ids(llm_settings, sim: LlmSimulator):
    sim.config.no_tool_ids = True
    call = raw_completion(sim, tools_messages(), tools=TOOL_SPECS)["choices"][0]["message"]["tool_calls"][0]
    assert "id" not in call
    sim.clear_requests()
    result = ask_with_tools()
    assert statuses(result) == EXPECTED
    messages = sim.requests()[1]["body"]["messages"]
    ids = [c["id"] for c in next(m for m in messages if m["role"] == "assistant")["tool_calls"]]
    assert all(i.startswith("call_") for i in ids) and len(set(ids)) == len(ids)
    assert [m["tool_call_id"] for m in messages if m["role"] == "tool"] == ids


def test_tools_need_a_handler(llm_settings):
    with pytest.raises(ValueError, match="tool_handler"):
        complete_structured(messages=tools_messages(), answer_model=StepAnswer, schema_name="s", tools=TOOL_SPECS)


# --- streaming --------------------------------------------------------------------------------------------------

CHAT = [
    {"role": "system", "content": f"Vous aidez un superviseur. Transcription de la vente :\n{TIMELINE}"},
    {"role": "user", "content": "Quel délai de rétractation l'agent a-t-il annoncé ?"},
]


def test_stream_chat_yields_deltas_then_done(llm_settings, sim: LlmSimulator):
    events = list(stream_chat(messages=CHAT))
    *deltas, done = events
    assert len(deltas) > 5 and all(event.kind == "delta" and event.text for event in deltas)
    text = "".join(event.text for event in deltas)
    assert "« Vous disposez d'un délai de rétractation de quatorze jours" in text and "»" in text
    assert done == ChatEvent(kind="done", usage=done.usage, finish_reason="stop")
    assert done.usage is not None and done.usage.estimated is False
    (entry,) = sim.requests()
    assert entry["stream"] is True and entry["cancelled"] is False
    body = entry["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0 and body["seed"] == 1234
    assert done.usage.prompt_tokens == entry["response"]["usage"]["prompt_tokens"]


def test_stream_without_usage_is_estimated(llm_settings, sim: LlmSimulator):
    sim.config.no_usage = True
    done = list(stream_chat(messages=CHAT))[-1]
    assert done.usage is not None and done.usage.estimated is True
    assert done.usage.prompt_tokens == math.ceil(message_chars(CHAT) / 4)


def test_closing_the_stream_closes_the_http_request(llm_settings, sim: LlmSimulator):
    sim.config.stream_token_delay_ms = 40
    events = stream_chat(messages=CHAT)
    first = [next(events), next(events)]
    assert all(event.kind == "delta" for event in first)
    closed_at = time.time()
    events.close()
    wait_for(lambda: sim.requests() and sim.requests()[0]["end"] is not None)
    (entry,) = sim.requests()
    assert entry["cancelled"] is True
    assert entry["end"] - closed_at < 0.5  # the server saw the disconnect within a few deltas
    full = len(list(stream_chat(messages=CHAT))) * 0.04
    assert entry["end"] - entry["start"] < full / 2


def test_stream_errors_map_to_client_errors(llm_settings, sim: LlmSimulator):
    sim.config.burst_429 = 1
    with pytest.raises(LlmTransientError) as caught:
        list(stream_chat(messages=CHAT))
    assert caught.value.status == 429
    sim.config.api_key = "another-key"
    with pytest.raises(LlmPermanentError) as denied:
        list(stream_chat(messages=CHAT))
    assert denied.value.status == 401 and API_KEY not in str(denied.value)
