"""The chat endpoints over real HTTP (gunicorn + the LLM simulator): the answer streams as SSE
(tokens, then the gated citations, then done), both messages are stored, the LLM sees the last 50
messages, checks answer JSON before any stream or LLM call, two streams run while the server still
answers, and a client that goes away stops the LLM stream."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from httpx_sse import connect_sse

from chat.models import ChatConversation, ChatMessage
from llm.slots import llm_semaphore
from tests.chat.conftest import CALL, FICHE_ID, LLM_KEY, T0, bearer
from tests.workflow.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "Quel délai de rétractation le conseiller a-t-il annoncé au client ?"


def stream(web, path: str, message: str, headers: dict[str, str]) -> list[tuple[str, dict]]:
    """POST a chat message and read the whole event stream: ``[(event, data), ...]``."""
    with httpx.Client(base_url=web.url, timeout=30) as client:
        with connect_sse(client, "POST", path, json={"message": message}, headers=headers) as source:
            response = source.response
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            return [(event.event, event.json()) for event in source.iter_sse()]


def kinds(events: list[tuple[str, dict]]) -> list[str]:
    """Event names with consecutive tokens collapsed: ``["token", "citations", "done"]``."""
    names: list[str] = []
    for name, _ in events:
        if not names or names[-1] != name or name != "token":
            names.append(name)
    return names


def test_fiche_chat_streams_tokens_then_gated_citations_then_done_and_stores_both_messages(web, sim, fiche, chatter):
    headers = bearer(chatter)
    events = stream(web, f"/api/fiches/{FICHE_ID}/chat", QUESTION, headers)

    assert kinds(events) == ["token", "citations", "done"]
    tokens = [data["delta"] for name, data in events if name == "token"]
    assert len(tokens) > 5
    answer = "".join(tokens)
    citations = events[-2][1]
    verified = [c for c in citations["citations"] if "quatorze jours" in c["text"]]
    assert len(verified) == 1
    assert verified[0]["call_id"] == CALL and verified[0]["speaker"] == "agent"
    assert 150 < verified[0]["start"] < verified[0]["end"] < 165  # said at 02:34
    done = events[-1][1]
    assert done["tokens"] > 0

    # The LLM got the rules in French, the fiche without mail_devis, the whole timeline, then the question.
    (request,) = sim.requests()
    assert request["body"]["stream"] is True
    messages = request["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    system = messages[0]["content"]
    assert "mot pour mot" in system and "guillemets" in system and "ne le dit pas" in system
    assert "## Fiche 2227002" in system and "Habitation Plus" in system and "mail_devis" not in system
    assert "[02:34] Agent: je vous rappelle aussi votre droit de rétractation" in system
    assert messages[1]["content"] == QUESTION

    with httpx.Client(base_url=web.url, timeout=10) as client:
        conversation = client.get(f"/api/fiches/{FICHE_ID}/chat", headers=headers).json()
    assert conversation["entity_type"] == "fiche" and conversation["entity_id"] == FICHE_ID
    user_message, assistant = conversation["messages"]
    assert (user_message["role"], user_message["content"], user_message["status"]) == ("user", QUESTION, "complete")
    assert (assistant["role"], assistant["content"], assistant["status"]) == ("assistant", answer, "complete")
    assert assistant["id"] == done["message_id"] and assistant["tokens"] == done["tokens"]
    assert assistant["citations"] == citations["citations"] and assistant["rejected"] == citations["rejected"]


def test_a_quote_that_is_not_in_the_call_is_rejected(web, sim, fiche, chatter):
    """The simulator quotes the lines of the other messages that best match the question: an earlier
    user message claims something the call never says, and the answer quotes it."""
    invented = "Le conseiller a promis une remise de cinquante pour cent sur la cotisation annuelle"
    conversation = ChatConversation.objects.create(user=chatter, entity_type="fiche", entity_id=FICHE_ID)
    ChatMessage.objects.create(conversation=conversation, role="user", content=invented, created_at=T0)

    events = stream(web, f"/api/fiches/{FICHE_ID}/chat", "Quelle remise sur la cotisation annuelle ?", bearer(chatter))

    assert kinds(events) == ["token", "citations", "done"]
    answer = "".join(data["delta"] for name, data in events if name == "token")
    assert f"« {invented} »" in answer
    gated = events[-2][1]
    assert {"text": invented, "reason": "not_found"} in gated["rejected"]
    assert all(invented not in c["text"] for c in gated["citations"])
    stored = ChatMessage.objects.get(pk=events[-1][1]["message_id"])
    assert {"text": invented, "reason": "not_found"} in stored.citations["rejected"]


def test_audit_chat_sends_the_audit_results_and_only_the_last_50_messages_in_order(web, sim, audit, chatter):
    conversation = ChatConversation.objects.create(user=chatter, entity_type="audit", entity_id=str(audit.pk))
    ChatMessage.objects.bulk_create(
        ChatMessage(
            conversation=conversation,
            role="user" if i % 2 == 0 else "assistant",
            content=f"message numéro {i}",
            created_at=T0 + timedelta(seconds=i),
        )
        for i in range(60)
    )

    events = stream(web, f"/api/audits/{audit.pk}/chat", QUESTION, bearer(chatter))

    assert kinds(events) == ["token", "citations", "done"]
    (request,) = sim.requests()
    messages = request["body"]["messages"]
    assert len(messages) == 1 + 50 + 1
    system = messages[0]["content"]
    assert "## Résultats de l'audit" in system and "niveau : BON" in system and "score : 92/100" in system
    assert "Étape 7 — " in system and "  [02:34] Agent: je vous rappelle aussi" in system
    assert [m["content"] for m in messages[1:-1]] == [f"message numéro {i}" for i in range(10, 60)]
    assert [m["role"] for m in messages[1:-1]] == ["user", "assistant"] * 25
    assert messages[-1] == {"role": "user", "content": QUESTION}

    with httpx.Client(base_url=web.url, timeout=10) as client:
        stored = client.get(f"/api/audits/{audit.pk}/chat", headers=bearer(chatter)).json()["messages"]
    assert [m["content"] for m in stored[:60]] == [f"message numéro {i}" for i in range(60)]
    assert [m["role"] for m in stored[60:]] == ["user", "assistant"] and stored[60]["content"] == QUESTION


def test_checks_answer_json_errors_before_any_stream_or_llm_call(web, sim, audit, make_role, make_user):
    reader = make_user(make_role("reader", chat=("r", "ALL"), fiches=("r", "ALL"), audits=("r", "ALL")))
    elsewhere = make_user(
        make_role("paris", chat=("rw", "ALL"), fiches=("r", "GROUP"), audits=("r", "GROUP")), groupes=["Paris-1"]
    )
    no_chat = make_user(make_role("auditor", fiches=("r", "ALL"), audits=("r", "ALL")))
    fiche_path, audit_path = f"/api/fiches/{FICHE_ID}/chat", f"/api/audits/{audit.pk}/chat"
    body = {"message": QUESTION}
    with httpx.Client(base_url=web.url, timeout=10) as client:
        # chat.read is not chat.write
        response = client.post(fiche_path, json=body, headers=bearer(reader))
        assert response.status_code == 403
        assert response.json()["error"]["details"] == {"required": "chat.write"}
        assert client.get(fiche_path, headers=bearer(reader)).status_code == 200
        assert client.get(fiche_path, headers=bearer(no_chat)).status_code == 403
        assert client.post(fiche_path, json=body).status_code == 401
        # GROUP scope, another groupe: the fiche and the audit are out of scope, for POST and GET
        for path in (fiche_path, audit_path):
            response = client.post(path, json=body, headers={**bearer(elsewhere), "Accept": "text/event-stream"})
            assert response.status_code == 403
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]["code"] == "scope_denied"
            assert client.get(path, headers=bearer(elsewhere)).status_code == 403
        # unknown entities
        response = client.post(f"/api/audits/{uuid.uuid4()}/chat", json=body, headers=bearer(elsewhere))
        assert (response.status_code, response.json()["error"]["code"]) == (404, "audit_not_found")
        assert client.post("/api/audits/not-a-uuid/chat", json=body, headers=bearer(elsewhere)).status_code == 404
        # a fiche we do not hold, for a GROUP user: answered as a foreign one (no telling them apart)
        response = client.post("/api/fiches/999999/chat", json=body, headers=bearer(elsewhere))
        assert (response.status_code, response.json()["error"]["code"]) == (403, "scope_denied")
        foreign = client.post(fiche_path, json=body, headers=bearer(elsewhere)).json()["error"]["message"]
        assert response.json()["error"]["message"].replace("999999", FICHE_ID) == foreign
        # an empty message
        for bad in ({"message": ""}, {"message": "   "}, {}):
            response = client.post(fiche_path, json=bad, headers=bearer(elsewhere))
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "validation_error"
    assert sim.requests() == []
    assert not ChatMessage.objects.exists()


def test_two_streams_at_once_while_the_server_still_answers(web, sim, fiche, chatter):
    sim.config.stream_token_delay_ms = 60  # ~35 tokens: about 2 s a stream
    headers = bearer(chatter)
    results: list[tuple[float, float, list]] = []

    def one() -> None:
        started = time.monotonic()
        events = stream(web, f"/api/fiches/{FICHE_ID}/chat", QUESTION, headers)
        results.append((started, time.monotonic(), events))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: sim.current_in_flight() == 2, timeout=10, message="both streams under way")
    with httpx.Client(base_url=web.url, timeout=10) as client:
        health = client.get("/api/health")
    assert health.status_code == 200
    assert sim.current_in_flight() == 2  # both were still streaming when the health check answered
    for thread in threads:
        thread.join(timeout=30)

    assert len(results) == 2 and sim.max_in_flight() == 2
    for started, ended, events in results:
        assert kinds(events) == ["token", "citations", "done"]
        assert ended - started > 1.0
    assert ChatMessage.objects.filter(role="assistant", status="complete").count() == 2


def test_a_client_going_away_stops_the_llm_stream_and_keeps_the_partial_answer(web, sim, fiche, chatter):
    sim.config.stream_token_delay_ms = 100
    received: list[str] = []
    with httpx.Client(base_url=web.url, timeout=30) as client:
        path = f"/api/fiches/{FICHE_ID}/chat"
        with connect_sse(client, "POST", path, json={"message": QUESTION}, headers=bearer(chatter)) as source:
            for event in source.iter_sse():
                assert event.event == "token"
                received.append(event.json()["delta"])
                if len(received) == 3:
                    break  # leaving the block closes the connection

    (request,) = wait_for(
        lambda: [r for r in sim.requests() if r["end"] is not None] or None, timeout=10, message="the LLM stream end"
    )
    assert request["stream"] is True and request["cancelled"] is True
    partial = wait_for(
        lambda: ChatMessage.objects.filter(role="assistant").first(), timeout=10, message="the partial answer"
    )
    assert partial.status == "interrupted"
    assert partial.content.startswith("".join(received)) and partial.tokens is None
    assert ChatMessage.objects.filter(role="user", content=QUESTION).exists()
    assert wait_for(lambda: llm_semaphore().holders() == [], timeout=5, message="the LLM slot released")


def test_the_llm_failing_ends_the_stream_with_an_error_event(web, sim, fiche, chatter):
    sim.config.fail_rate = 1.0
    events = stream(web, f"/api/fiches/{FICHE_ID}/chat", QUESTION, bearer(chatter))
    assert kinds(events) == ["error"]
    assert "indisponible" in events[0][1]["message"]
    assert [(m.role, m.status) for m in ChatMessage.objects.order_by("id")] == [
        ("user", "complete"),
        ("assistant", "failed"),
    ]
    assert llm_semaphore().holders() == []


def test_every_llm_slot_busy_is_a_429_before_the_stream(web, sim, fiche, chatter, settings):
    semaphore = llm_semaphore()
    holders = [f"test-{i}" for i in range(settings.LLM_MAX_CONCURRENCY)]
    assert all(semaphore.acquire(holder) for holder in holders)
    try:
        with httpx.Client(base_url=web.url, timeout=30) as client:
            response = client.post(f"/api/fiches/{FICHE_ID}/chat", json={"message": QUESTION}, headers=bearer(chatter))
    finally:
        for holder in holders:
            semaphore.release(holder)
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "llm_busy"
    assert sim.requests() == [] and not ChatMessage.objects.exists()


def test_without_an_llm_key_the_post_is_a_503(sim, fiche, chatter, settings, api_client):
    """In-process (this setting lives in the server's environment): the error comes before any stream."""
    settings.LLM_API_KEY = "  "
    api_client.credentials(HTTP_AUTHORIZATION=bearer(chatter)["Authorization"])
    response = api_client.post(f"/api/fiches/{FICHE_ID}/chat", {"message": QUESTION}, format="json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "llm_not_configured"
    assert sim.requests() == [] and not ChatMessage.objects.exists()
    assert LLM_KEY not in response.content.decode()
