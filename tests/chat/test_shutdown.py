"""gunicorn told to stop (SIGTERM, as an orchestrator stops a web container) while a chat answer streams: it takes
no new connection, lets an answer that ends in time stream to its ``done``, and ends a longer one itself
``CHAT_STOP_SECONDS`` after the stop (an ``error`` event ``server_stopping``, the partial answer stored as
interrupted, the LLM stream closed) — before gunicorn's graceful timeout, within which the server has exited."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest
from httpx_sse import connect_sse

from chat.models import ChatMessage
from llm.slots import llm_semaphore
from tests.chat.conftest import FICHE_ID, Web, bearer, web_env
from tests.chat.test_api import QUESTION, kinds
from tests.workflow.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

PATH = f"/api/fiches/{FICHE_ID}/chat"


def stream_then_stop(server: Web, headers: dict[str, str]) -> tuple[list[tuple[str, dict]], float, float]:
    """Stream an answer; at its first token, SIGTERM to gunicorn's master. The events, and the seconds from the
    stop to the stream's end and to the server's exit."""
    events: list[tuple[str, dict]] = []
    stopped_at = 0.0
    with httpx.Client(base_url=server.url, timeout=30) as client:
        with connect_sse(client, "POST", PATH, json={"message": QUESTION}, headers=headers) as source:
            for event in source.iter_sse():
                events.append((event.event, event.json()))
                if not stopped_at:
                    stopped_at = time.monotonic()
                    os.kill(server.process.pid, signal.SIGTERM)
                    probe = threading.Thread(target=refused_after_stop, args=(server,))
                    probe.start()
    stream_ended = time.monotonic() - stopped_at
    server.process.wait(timeout=60)
    exited = time.monotonic() - stopped_at
    probe.join(timeout=10)
    return events, stream_ended, exited


REFUSED: list[bool] = []


def refused_after_stop(server: Web) -> None:
    """A new connection after the stop is not served: refused, or reset (the worker, draining, holds the socket
    without accepting)."""
    time.sleep(0.5)
    try:
        httpx.get(f"{server.url}/api/health", timeout=3)
        REFUSED.append(False)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        REFUSED.append(True)


@pytest.fixture
def stoppable(llm, sim):
    servers: list[Web] = []

    def start(**overrides: str) -> Web:
        server = Web(web_env(llm, **overrides), name="chat-web-stop").start()
        servers.append(server)
        return server

    REFUSED.clear()
    yield start
    for server in servers:
        server.stop()


def test_an_answer_that_ends_in_time_streams_to_its_end_through_a_stop(stoppable, sim, fiche, chatter):
    sim.config.stream_token_delay_ms = 60  # ~35 tokens: about 2 s
    server = stoppable(WEB_GRACEFUL_TIMEOUT="10", CHAT_STOP_SECONDS="6")

    events, stream_ended, exited = stream_then_stop(server, bearer(chatter))

    assert kinds(events) == ["token", "citations", "done"]
    assert stream_ended < 6 and exited < 10, (stream_ended, exited)
    assert server.process.returncode == 0
    assert REFUSED == [True]
    (answer,) = ChatMessage.objects.filter(role="assistant")
    assert answer.status == "complete" and answer.pk == events[-1][1]["message_id"]


def test_a_longer_answer_ends_itself_cleanly_before_gunicorn_would_kill_it(stoppable, sim, fiche, chatter):
    sim.config.stream_token_delay_ms = 500  # ~35 tokens: about 17 s, far past the stop's bound
    server = stoppable(WEB_GRACEFUL_TIMEOUT="8", CHAT_STOP_SECONDS="2")

    events, stream_ended, exited = stream_then_stop(server, bearer(chatter))

    assert kinds(events) == ["token", "error"], kinds(events)
    assert events[-1][1]["code"] == "server_stopping" and "redémarre" in events[-1][1]["message"]
    assert 2 <= stream_ended < 5 and exited < 8, (stream_ended, exited)
    assert server.process.returncode == 0  # every connection closed before the graceful timeout
    assert REFUSED == [True]
    (answer,) = ChatMessage.objects.filter(role="assistant")
    received = "".join(data["delta"] for name, data in events if name == "token")
    assert answer.status == "interrupted" and answer.content == received
    (request,) = wait_for(
        lambda: [r for r in sim.requests() if r["end"] is not None] or None, timeout=10, message="the LLM stream end"
    )
    assert request["cancelled"] is True  # the LLM stream was closed, not left to run
    assert llm_semaphore().holders() == []
