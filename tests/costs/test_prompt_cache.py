"""Cached prompt tokens, as OpenAI's prompt caching reports them, from the LLM simulator over HTTP: the longest
prefix of whole messages already sent, from 1024 tokens, in steps of 128; read by our client from plain and
streamed answers."""

from __future__ import annotations

import math

import httpx
import pydantic
import pytest

from llm import client as llm_client
from tests.chat.conftest import LLM_KEY

CONTEXT = "Le conseiller rappelle le droit de rétractation de quatorze jours. " * 90  # 6,030 characters
PREFIX_TOKENS = math.ceil(len(CONTEXT) / 4)  # 1,508: cached as 1,408 (a multiple of 128)


def ask(sim, messages: list[dict], model: str = "sim-judge-1") -> dict:
    response = httpx.post(
        f"{sim.url}/v1/chat/completions",
        json={"model": model, "messages": messages},
        headers={"Authorization": f"Bearer {LLM_KEY}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["usage"]


def conversation(question: str, context: str = CONTEXT) -> list[dict]:
    return [{"role": "system", "content": context}, {"role": "user", "content": question}]


def test_a_repeated_long_prefix_is_reported_cached_in_steps_of_128(sim):
    sim.clear_prompt_cache()
    first = ask(sim, conversation("Le délai est-il annoncé ?"))
    assert first["prompt_tokens_details"] == {"cached_tokens": 0}  # nothing seen yet
    second = ask(sim, conversation("Une signature est-elle demandée ?"))
    assert PREFIX_TOKENS == 1508
    assert second["prompt_tokens_details"] == {"cached_tokens": 1408}
    assert second["prompt_tokens"] > 1408
    again = ask(sim, conversation("Une signature est-elle demandée ?"))  # the whole request seen: all of it
    assert again["prompt_tokens_details"]["cached_tokens"] == again["prompt_tokens"] // 128 * 128


def test_short_prefixes_and_other_models_are_not_cached(sim):
    sim.clear_prompt_cache()
    short = "Règles courtes. " * 100  # 1,600 characters: 400 tokens, under 1,024
    ask(sim, conversation("A ?", short))
    assert ask(sim, conversation("B ?", short))["prompt_tokens_details"]["cached_tokens"] == 0
    ask(sim, conversation("A ?"))
    assert ask(sim, conversation("B ?"), model="other-model")["prompt_tokens_details"]["cached_tokens"] == 0


class Verdict(pydantic.BaseModel):
    answer: str


@pytest.mark.django_db
def test_the_client_reads_cached_tokens_from_plain_and_streamed_answers(sim):
    sim.clear_prompt_cache()
    first = llm_client.complete_structured(
        messages=conversation("Le délai ?"), answer_model=Verdict, schema_name="verdict"
    )
    assert first.usage.cached_tokens == 0
    second = llm_client.complete_structured(
        messages=conversation("La signature ?"), answer_model=Verdict, schema_name="verdict"
    )
    assert second.usage.cached_tokens == 1408 and second.usage.prompt_tokens > 1408
    assert (first.usage + second.usage).cached_tokens == 1408

    # A chat has no response format: its prompt is another prefix (as with OpenAI, where the schema is part of it).
    first_chat = list(llm_client.stream_chat(messages=conversation("Le prix ?")))[-1]
    assert first_chat.usage is not None and first_chat.usage.cached_tokens == 0
    done = list(llm_client.stream_chat(messages=conversation("La garantie ?")))[-1]
    assert done.kind == "done" and done.usage is not None
    assert done.usage.cached_tokens == 1408 and done.usage.estimated is False


@pytest.mark.django_db
def test_a_server_without_cache_details_means_no_cached_tokens(sim):
    sim.clear_prompt_cache()
    sim.config.no_usage = True  # estimated usage: nothing known of a cache
    for question in ("A ?", "B ?"):
        result = llm_client.complete_structured(
            messages=conversation(question), answer_model=Verdict, schema_name="verdict"
        )
    assert result.usage.estimated is True and result.usage.cached_tokens == 0
