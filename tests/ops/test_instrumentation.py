"""The metrics the code records where it calls outside services and makes decisions (``core.metrics``).

Counters are process-global: every test reads a sample before and after and compares the delta. The outside
services are the project's simulators (CRM, speech-to-text, LLM) or small stubs on 127.0.0.1.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from audits.evidence import EvidenceIndex
from audits.prompts import StepAnswer
from audits.simulator.server import LlmSimulator, SimulatorConfig
from core.metrics import run_kind
from core.reconcile import Reconciler
from costs.services import record_llm_usage, record_stt_usage
from fiches.clients import crm as crm_client
from fiches.clients.crm import CrmPermanentError, CrmTransientError
from fiches.models import ProgressiveFetchJob
from fiches.notifications import send_job_webhook
from llm.client import LlmTransientError, Usage, complete_structured, stream_chat
from realtime.webhooks import attempt_delivery
from tests.audits.test_llm_client import API_KEY as LLM_KEY
from tests.audits.test_llm_client import CHAT, prompt_messages
from tests.fiches.conftest import FIRST_DAY, crm, crm_simulator, dead_crm, dead_crm_url  # noqa: F401 (fixtures)
from tests.realtime.conftest import Receiver, free_port, make_job, receiver  # noqa: F401 (fixtures)
from tests.transcriptions.test_elevenlabs_client import CALL, stt, stt_server  # noqa: F401 (fixtures)
from transcriptions.clients import elevenlabs
from transcriptions.clients.elevenlabs import ElevenLabsRateLimited, ElevenLabsTransientError


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Deltas:
    """Samples read now; ``delta(name, **labels)`` is how much each moved since."""

    def __init__(self, *keys: tuple[str, dict[str, str]]) -> None:
        self._before = {self._key(name, labels): sample(name, **labels) for name, labels in keys}

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
        return name, tuple(sorted(labels.items()))

    def delta(self, name: str, **labels: str) -> float:
        return sample(name, **labels) - self._before[self._key(name, labels)]


def outbound(service: str, outcome: str, status: str) -> list[tuple[str, dict[str, str]]]:
    return [
        ("outbound_requests_total", {"service": service, "outcome": outcome, "status": status}),
        ("outbound_request_duration_seconds_count", {"service": service, "outcome": outcome}),
    ]


def assert_outbound(deltas: Deltas, service: str, outcome: str, status: str, n: float = 1) -> None:
    assert deltas.delta("outbound_requests_total", service=service, outcome=outcome, status=status) == n
    assert deltas.delta("outbound_request_duration_seconds_count", service=service, outcome=outcome) == n


# --- CRM ---------------------------------------------------------------------------------------------------------


@dataclass
class StatusStub:
    """A server answering every GET with ``status`` and a small JSON error body."""

    status: int
    _server: ThreadingHTTPServer | None = field(default=None, init=False)

    def __enter__(self) -> StatusStub:
        status = self.status

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b'{"message": "slow down"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


def test_crm_calls_are_counted_per_attempt_with_their_outcome(crm, settings):  # noqa: F811
    deltas = Deltas(
        *outbound("crm", "ok", "200"),
        *outbound("crm", "error", "503"),
        *outbound("crm", "rate_limited", "429"),
        *outbound("crm", "timeout", "none"),
    )
    assert crm_client.fetch_sales_with_calls(FIRST_DAY, FIRST_DAY)
    crm.config.fail_rate = 1.0  # 503
    with pytest.raises(CrmTransientError):
        crm_client.fetch_sales_with_calls(FIRST_DAY, FIRST_DAY)
    crm.config.fail_rate, crm.config.latency_ms = 0.0, 600
    settings.CRM_TIMEOUT_SECONDS = 0.1
    with pytest.raises(CrmTransientError, match="timeout"):
        crm_client.fetch_sales_with_calls(FIRST_DAY, FIRST_DAY)
    with StatusStub(429) as stub:  # the simulator has no 429 knob
        settings.CRM_BASE_URL = stub.url
        with pytest.raises(CrmPermanentError):
            crm_client.fetch_sales_with_calls(FIRST_DAY, FIRST_DAY)

    assert_outbound(deltas, "crm", "ok", "200")
    assert_outbound(deltas, "crm", "error", "503")
    assert_outbound(deltas, "crm", "timeout", "none")
    assert_outbound(deltas, "crm", "rate_limited", "429")


def test_crm_connection_error_has_no_status(dead_crm):  # noqa: F811
    deltas = Deltas(*outbound("crm", "error", "none"))
    with pytest.raises(CrmTransientError, match="unreachable"):
        crm_client.fetch_fiche_details("2225000")
    assert_outbound(deltas, "crm", "error", "none")


# --- Speech-to-text ----------------------------------------------------------------------------------------------


def transcribe() -> elevenlabs.SttResult:
    return elevenlabs.transcribe(recording_url=CALL["recording_url"], call_id=CALL["call_id"])


def test_stt_posts_are_counted_with_their_outcome(stt, settings):  # noqa: F811
    deltas = Deltas(
        *outbound("stt", "ok", "200"), *outbound("stt", "rate_limited", "429"), *outbound("stt", "timeout", "none")
    )
    assert transcribe().words
    stt.config.burst_429 = 1
    with pytest.raises(ElevenLabsRateLimited):
        transcribe()
    stt.config.latency_ms = 600
    settings.ELEVENLABS_TIMEOUT_SECONDS = 0.1
    with pytest.raises(ElevenLabsTransientError, match="timeout"):
        transcribe()

    assert_outbound(deltas, "stt", "ok", "200")
    assert_outbound(deltas, "stt", "rate_limited", "429")
    assert_outbound(deltas, "stt", "timeout", "none")


@pytest.mark.django_db
def test_usage_counts_audio_seconds_and_tokens_once_committed(django_capture_on_commit_callbacks):
    deltas = Deltas(
        ("stt_audio_seconds_total", {"model": "scribe_v2"}),
        ("llm_tokens_total", {"model": "sim-model", "kind": "prompt"}),
        ("llm_tokens_total", {"model": "sim-model", "kind": "completion"}),
        ("llm_tokens_total", {"model": "sim-model", "kind": "cached"}),
    )
    with django_capture_on_commit_callbacks(execute=False) as pending:
        record_stt_usage(audio_seconds=12.5, model="scribe_v2", fiche_id=None, user_id=None)
    assert deltas.delta("stt_audio_seconds_total", model="scribe_v2") == 0  # not before the commit
    for callback in pending:
        callback()
    with django_capture_on_commit_callbacks(execute=True):
        record_llm_usage(
            purpose="chat",
            usage=Usage(prompt_tokens=100, completion_tokens=20, total_tokens=120, cached_tokens=64),
            model="sim-model",
            fiche_id=None,
            user_id=None,
        )

    assert deltas.delta("stt_audio_seconds_total", model="scribe_v2") == 12.5
    assert deltas.delta("llm_tokens_total", model="sim-model", kind="prompt") == 100
    assert deltas.delta("llm_tokens_total", model="sim-model", kind="completion") == 20
    assert deltas.delta("llm_tokens_total", model="sim-model", kind="cached") == 64


# --- LLM ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def llm_sim(settings) -> Iterator[LlmSimulator]:
    with LlmSimulator(SimulatorConfig()) as simulator:
        settings.LLM_BASE_URL = f"{simulator.url}/v1"
        settings.LLM_API_KEY = LLM_KEY
        settings.LLM_MODEL = "sim-model"
        settings.LLM_MAX_RETRIES = 0
        settings.LLM_TIMEOUT_SECONDS = 10.0
        settings.LLM_SEED = 1234
        yield simulator


def ask() -> Any:
    return complete_structured(messages=prompt_messages(), answer_model=StepAnswer, schema_name="step_answer")


def test_llm_calls_are_counted_per_sdk_call(llm_sim, settings):
    deltas = Deltas(
        *outbound("llm", "ok", "200"), *outbound("llm", "rate_limited", "429"), *outbound("llm", "error", "none")
    )
    assert ask().rounds == 1
    events = list(stream_chat(messages=CHAT))
    assert events[-1].kind == "done"
    llm_sim.config.burst_429 = 1
    with pytest.raises(LlmTransientError):
        ask()
    llm_sim.config.burst_429 = 1
    with pytest.raises(LlmTransientError):
        list(stream_chat(messages=CHAT))
    settings.LLM_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(LlmTransientError, match="unreachable"):
        ask()

    assert_outbound(deltas, "llm", "ok", "200", n=2)  # the structured answer and the stream
    assert_outbound(deltas, "llm", "rate_limited", "429", n=2)
    assert_outbound(deltas, "llm", "error", "none")


def test_llm_stream_closed_by_its_consumer_counts_once_as_ok(llm_sim):
    deltas = Deltas(*outbound("llm", "ok", "200"))
    events = stream_chat(messages=CHAT)
    assert next(events).kind == "delta"
    events.close()  # type: ignore[attr-defined]
    assert_outbound(deltas, "llm", "ok", "200")


# --- The evidence gate -------------------------------------------------------------------------------------------

TURNS = [
    {
        "call_id": "c1",
        "speaker": "agent",
        "start": 0.0,
        "end": 9.0,
        "text": "Vous disposez d'un délai de rétractation de quatorze jours à compter de la réception.",
    },
    {"call_id": "c1", "speaker": "client", "start": 9.0, "end": 11.0, "text": "D'accord, très bien, merci beaucoup."},
]


def verdicts(verified: str, reason: str) -> tuple[str, dict[str, str]]:
    return "evidence_gate_verdicts_total", {"verified": verified, "reason": reason}


def test_evidence_verdicts_are_counted_by_reason():
    deltas = Deltas(
        verdicts("true", "ok"),
        verdicts("false", "not_found"),
        verdicts("false", "number_mismatch"),
        verdicts("false", "too_short"),
    )
    index = EvidenceIndex(TURNS)
    checks = [
        index.check("un délai de rétractation de quatorze jours", speaker="agent"),
        index.check("un délai de rétractation de trente jours"),
        index.check("le contrat couvre les lunettes et les implants dentaires"),
        index.check("merci"),
    ]

    assert [(c.verified, c.reason) for c in checks] == [
        (True, None),
        (False, "number_mismatch"),
        (False, "not_found"),
        (False, "too_short"),
    ]
    assert deltas.delta("evidence_gate_verdicts_total", verified="true", reason="ok") == 1
    for reason in ("number_mismatch", "not_found", "too_short"):
        assert deltas.delta("evidence_gate_verdicts_total", verified="false", reason=reason) == 1


# --- Webhooks ----------------------------------------------------------------------------------------------------


def new_delivery(owner: Any, url: str) -> int:
    delivery = send_job_webhook(job=make_job(owner, webhook_url=url), event="fiches.progressive_fetch.progress")
    assert delivery is not None
    return delivery.pk


@pytest.mark.django_db
def test_webhook_attempts_are_counted_by_outcome(receiver: Receiver, make_role, make_user, settings):  # noqa: F811
    settings.PUSHER_APP_ID = ""
    owner = make_user(make_role("hook-owner", fiches=("rw", "SELF")), crm_user_id="u-1")
    outcomes = ("success", "retry", "failed", "refused")
    deltas = Deltas(*(("webhook_attempts_total", {"outcome": outcome}) for outcome in outcomes))

    delivered = new_delivery(owner, receiver.url())
    receiver.respond(500, 200)
    assert attempt_delivery(delivery_id=delivered).retry_in is not None  # 500: retried
    assert attempt_delivery(delivery_id=delivered).status == "success"
    rejected = new_delivery(owner, receiver.url())
    receiver.respond(400)
    assert attempt_delivery(delivery_id=rejected).status == "failed"
    refused = new_delivery(owner, f"http://127.0.0.1:{free_port()}/hook")  # not allowlisted: the SSRF guard
    assert attempt_delivery(delivery_id=refused).status == "failed"

    assert {outcome: deltas.delta("webhook_attempts_total", outcome=outcome) for outcome in outcomes} == {
        "success": 1,
        "retry": 1,
        "failed": 1,
        "refused": 1,
    }


# --- Workflow runs and reconcilers -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_run_end_is_counted_once_after_commit(make_user, django_capture_on_commit_callbacks):
    kind = run_kind(ProgressiveFetchJob)
    assert kind == "job"
    deltas = Deltas(
        ("workflow_runs_ended_total", {"kind": kind, "status": "complete"}),
        ("workflow_run_duration_seconds_count", {"kind": kind, "status": "complete"}),
        ("workflow_run_duration_seconds_sum", {"kind": kind, "status": "complete"}),
    )
    job = make_job(make_user())
    ended_at = job.created_at + timedelta(seconds=90)

    with django_capture_on_commit_callbacks(execute=True):
        assert ProgressiveFetchJob.end_once(job.pk, "complete", now=ended_at)
        assert not ProgressiveFetchJob.end_once(job.pk, "complete", now=ended_at)  # already ended: not counted
        assert deltas.delta("workflow_runs_ended_total", kind=kind, status="complete") == 0  # not before commit

    assert deltas.delta("workflow_runs_ended_total", kind=kind, status="complete") == 1
    assert deltas.delta("workflow_run_duration_seconds_count", kind=kind, status="complete") == 1
    assert deltas.delta("workflow_run_duration_seconds_sum", kind=kind, status="complete") == pytest.approx(90.0)


@dataclass
class FakeRun:
    pk: str
    progressed_at: datetime
    redriven_at: datetime | None = None
    done: bool = False


def test_reconciler_actions_are_counted_under_the_generic_names():
    now = timezone.now()
    reconciler: Reconciler[FakeRun] = Reconciler(
        name="test_workflow",
        stall_seconds=lambda: 60,
        deadline_seconds=lambda: 3600,
        time_out=lambda run: True,
        is_done=lambda run: run.done,
        finish=lambda run: True,
        mark_redriven=lambda run, at: None,
        names={"finished": "ended"},
    )
    deltas = Deltas(
        *(
            ("reconciler_actions_total", {"workflow": "test_workflow", "action": a})
            for a in ("redrive", "timed_out", "finished")
        )
    )
    runs = [
        FakeRun("stalled", now - timedelta(minutes=5)),
        FakeRun("dead", now - timedelta(hours=2)),
        FakeRun("lost-end", now - timedelta(minutes=5), done=True),
        FakeRun("busy", now - timedelta(seconds=5)),
    ]

    actions = reconciler.run(runs, now=now)

    assert actions == {"redrive": ["stalled"], "ended": ["lost-end"], "timed_out": ["dead"]}
    for action in ("redrive", "timed_out", "finished"):
        assert deltas.delta("reconciler_actions_total", workflow="test_workflow", action=action) == 1
