"""Transcription workflows with real worker processes, the CRM simulator and the speech-to-text
simulator over HTTP, and a Pusher-API stub: every recording transcribed with its events; a failing
recording → partial, all failing → failed; a rerun skips done recordings; simultaneous triggers and
a worker killed mid-call never send a recording twice at once and end the run exactly once; a 429
storm is absorbed; the vendor key never leaks; a batch ends with counts that add up."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from collections import Counter, defaultdict

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.tokens import issue_tokens
from batches.models import Batch
from fiches.services.details import fiche_ensure_details
from fiches.simulator.server import CrmSimulator, SimulatorConfig
from realtime.events import EVENTS
from tests.workflow.conftest import Worker, wait_for, worker_env
from tests.workflow.faults import Recorder
from transcriptions.models import Transcription, TranscriptionRun
from transcriptions.simulator.script import truth_for
from transcriptions.simulator.server import SttSimulator, SttSimulatorConfig

pytestmark = [pytest.mark.workflow, pytest.mark.django_db(transaction=True)]

KEY = "xi-test-key-Zq8SUPERSECRET-do-not-log"
# Fiches of the CRM simulator (seed 42, 6 a day) and their recordings.
FICHE_3 = "2225000"  # 3 recordings, Lyon-2
FICHE_4 = "2225002"  # 4 recordings, Lyon-2
FICHE_2 = "2225004"  # 2 recordings, Marseille
OTHERS = ("2226001", "2226003")


@pytest.fixture(scope="module")
def sims():
    crm = CrmSimulator(SimulatorConfig(seed=42, fiches_per_day=6)).start()
    stt = SttSimulator(SttSimulatorConfig(seed=42, crm_seed=42)).start()
    pusher = Recorder()
    yield crm, stt, pusher
    crm.stop()
    stt.stop()
    pusher.stop()


def stt_env(crm: CrmSimulator, stt: SttSimulator, pusher: Recorder, **overrides: str) -> dict[str, str]:
    return worker_env(
        crm.url,
        ELEVENLABS_BASE_URL=stt.url,
        ELEVENLABS_API_KEY=f'  "{KEY}"  ',  # normalized by the client: trimmed, quotes stripped
        ELEVENLABS_MAX_CONCURRENCY="6",
        TRANSCRIPTION_RETRY_BASE_SECONDS="0.2",
        TRANSCRIPTION_MAX_ERRORS="2",
        PUSHER_APP_ID="42",
        PUSHER_KEY="stt-key",
        PUSHER_SECRET="stt-secret",
        PUSHER_HOST="127.0.0.1",
        PUSHER_PORT=str(pusher.server_address[1]),
        PUSHER_USE_TLS="false",
        PUSHER_BACKOFF_SECONDS="0",
        **overrides,
    )


@pytest.fixture
def stack(sims, settings):
    crm, stt, pusher = sims
    crm.clear_requests()
    default = SttSimulatorConfig(seed=42, crm_seed=42)
    stt.config.update({f.name: getattr(default, f.name) for f in dataclasses.fields(default)})
    stt.clear_requests()
    with pusher.lock:
        pusher.records.clear()
    settings.CRM_BASE_URL = crm.url
    settings.ELEVENLABS_BASE_URL = stt.url
    settings.ELEVENLABS_API_KEY = KEY
    settings.PUSHER_APP_ID, settings.PUSHER_KEY, settings.PUSHER_SECRET = "42", "stt-key", "stt-secret"
    settings.PUSHER_HOST, settings.PUSHER_PORT, settings.PUSHER_USE_TLS = "127.0.0.1", pusher.server_address[1], False
    workers: list[Worker] = []

    def start(name: str, **overrides: str) -> Worker:
        w = Worker(env=stt_env(crm, stt, pusher, **overrides), name=name, concurrency=8).start()
        workers.append(w)
        return w

    yield crm, stt, pusher, start
    for w in workers:
        w.stop()


@pytest.fixture
def user(make_role, make_user):
    role = make_role("stt-all", transcriptions=("rw", "ALL"), fiches=("r", "ALL"))
    return make_user(role, email="stt@example.com")


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_tokens(user).access}")
    return client


def transcribe(user, fiche_id: str, **body) -> dict:
    response = client_for(user).post(f"/api/transcriptions/{fiche_id}", body, format="json")
    assert response.status_code in (200, 202), response.content
    return response.json()


def run_ended(run_id: str, timeout: float = 60) -> TranscriptionRun:
    return wait_for(
        lambda: (r := TranscriptionRun.objects.get(pk=run_id)).is_terminal and r,
        timeout=timeout,
        message=f"run {run_id} to end",
    )


def events(
    pusher: Recorder, fiche_id: str, name: str | None = None, kind: str = "transcription"
) -> list[tuple[str, dict]]:
    """The events of a fiche's transcription channel (whole), or with ``kind="fiche"`` of the fiche channel
    (authorized by fiches.read alone: identifiers and status only)."""
    with pusher.lock:
        batches = [
            json.loads(r["body"])["batch"] for r in pusher.records if r["path"].split("?")[0].endswith("/batch_events")
        ]
    return [
        (e["name"], json.loads(e["data"]))
        for b in batches
        for e in b
        if e["channel"] == f"private-{kind}-{fiche_id}" and (name is None or e["name"] == name)
    ]


def stt_calls(stt: SttSimulator) -> list[dict]:
    return [r for r in stt.requests() if r["path"] == "/v1/speech-to-text"]


def test_a_fiche_is_transcribed_with_every_event_of_the_contract(stack, user):
    crm, stt, pusher, start = stack
    start("stt1")

    body = transcribe(user, FICHE_3, priority="high")
    assert (body["status"], body["total_recordings"], body["to_transcribe"]) == ("pending", 3, 3)
    run = run_ended(body["run_id"])
    assert run.status == "completed" and sorted(run.done_call_ids) == sorted(run.call_ids)

    status = client_for(user).get(f"/api/transcriptions/{FICHE_3}").json()
    assert status["status"] == "completed" and status["transcribed"] == 3 and status["failed"] == 0
    assert all(r["status"] == "completed" and r["text"] and r["language"] == "fr" for r in status["recordings"])
    # One vendor call per recording, each with the contract's fields (and never the key).
    calls = stt_calls(stt)
    assert Counter(c["call_id"] for c in calls) == Counter({f"c-{FICHE_3}-{n}": 1 for n in (1, 2, 3)})
    fields = calls[0]["fields"]
    assert fields["model_id"] == "scribe_v2" and fields["language_code"] == "fr" and fields["diarize"] == "true"
    assert fields["timestamps_granularity"] == "word" and fields["tag_audio_events"] == "false"
    assert fields["source_url"].startswith("https://recordings.example/")

    # The speakers: the agent is the one the simulator's script made the agent.
    for rec in Transcription.objects.filter(fiche__fiche_id=FICHE_3):
        truth = truth_for(rec.call_id, seed=42, crm_seed=42)
        assert rec.speaker_map[truth["agent_speaker_id"]] == "agent"
    timeline = client_for(user).get(f"/api/transcriptions/{FICHE_3}/timeline").json()
    assert timeline["recordings"] == 3 and {t["speaker"] for t in timeline["turns"]} == {"agent", "client"}
    starts = [(t["call_id"], t["start"]) for t in timeline["turns"]]
    assert [c for c, _ in starts] == sorted((c for c, _ in starts), key=[c for c, _ in starts].index)  # grouped
    words = client_for(user).get(f"/api/transcriptions/{FICHE_3}/recordings/c-{FICHE_3}-2").json()
    assert (
        words["status"] == "completed" and words["words"] and {"start", "end", "speaker_id"} <= words["words"][0].keys()
    )

    # Events: exactly the contract's fields, in a sensible order, the terminal one once.
    wait_for(lambda: events(pusher, FICHE_3, "transcription.completed"), message="the completed event")
    seen = events(pusher, FICHE_3)
    names = [name for name, _ in seen]
    for name, payload in seen:
        assert set(EVENTS[name].required) <= payload.keys(), name
    assert names[:2] == ["transcription.started", "transcription.status_check"]
    assert names.count("transcription.recording_started") == 3 and names.count("transcription.recording_completed") == 3
    assert names.count("transcription.progress") >= 1 and names.count("transcription.completed") == 1
    assert names[-1] == "transcription.completed"
    started = dict(seen)["transcription.started"]
    assert (started["priority"], started["status"], started["total_recordings"]) == ("high", "started", 3)
    assert all("recording_url" not in payload for _, payload in seen)  # signed URLs never go out
    on_fiche = events(pusher, FICHE_3, kind="fiche")
    assert [name for name, _ in on_fiche] == names  # the same notifications on the fiche channel…
    for _, payload in on_fiche:  # …with identifiers and status only
        assert payload["redacted"] is True and set(payload) <= {
            "fiche_id",
            "call_id",
            "transcription_id",
            "status",
            "redacted",
        }
    completed = dict(seen)["transcription.completed"]
    assert (completed["transcribed"], completed["failed"], completed["status"]) == (3, 0, "completed")
    assert all(p["status"] == "in_progress" for n, p in seen if n == "transcription.progress")


def test_a_failing_recording_gives_partial_and_all_failing_gives_failed(stack, user):
    crm, stt, pusher, start = stack
    start("stt2")
    stt.config.fail_call_ids = frozenset({f"c-{FICHE_4}-2"} | {f"c-{FICHE_2}-{n}" for n in (1, 2)})

    partial = run_ended(transcribe(user, FICHE_4)["run_id"])
    assert partial.status == "partial" and partial.failed_call_ids == [f"c-{FICHE_4}-2"]
    row = Transcription.objects.get(call_id=f"c-{FICHE_4}-2")
    assert row.status == "failed" and "500" in row.error and row.attempts == 3  # 1 + TRANSCRIPTION_MAX_ERRORS
    assert Counter(c["call_id"] for c in stt_calls(stt))[f"c-{FICHE_4}-2"] == 3
    assert client_for(user).get(f"/api/transcriptions/{FICHE_4}").json()["status"] == "partial"

    failed = run_ended(transcribe(user, FICHE_2)["run_id"])
    assert failed.status == "failed"
    wait_for(lambda: events(pusher, FICHE_2, "transcription.failed"), message="the failed event")
    ((_, payload),) = events(pusher, FICHE_2, "transcription.failed")
    assert payload["partial_results"] == {"total": 2, "transcribed": 0, "failed": 2}
    assert payload["status"] == "failed" and payload["error"]
    assert events(pusher, FICHE_2, "transcription.completed") == []
    assert len(events(pusher, FICHE_2, "transcription.recording_failed")) == 2

    # A rerun transcribes only what is missing; a forced one everything again.
    stt.config.fail_call_ids = frozenset()
    stt.clear_requests()
    rerun = transcribe(user, FICHE_4)
    assert rerun["to_transcribe"] == 1
    assert run_ended(rerun["run_id"]).status == "completed"
    assert [c["call_id"] for c in stt_calls(stt)] == [f"c-{FICHE_4}-2"]
    again = transcribe(user, FICHE_4)
    assert (again["status"], again["to_transcribe"], again["run_id"]) == ("completed", 0, None)
    assert len(stt_calls(stt)) == 1
    forced = transcribe(user, FICHE_4, force=True)
    assert forced["to_transcribe"] == 4 and run_ended(forced["run_id"]).status == "completed"
    assert len(stt_calls(stt)) == 5


def _in_flight_overlaps(calls: list[dict]) -> dict[str, int]:
    """Per call id, how many of its vendor requests overlapped another one in time."""
    spans = defaultdict(list)
    for c in calls:
        spans[c["call_id"]].append((c["start"], c["end"] or time.time()))
    overlaps = {}
    for call_id, items in spans.items():
        items.sort()
        overlaps[call_id] = sum(
            1 for (_, a_end), (b_start, _) in zip(items, items[1:], strict=False) if b_start < a_end
        )
    return overlaps


def test_simultaneous_triggers_send_each_recording_once_and_end_the_run_once(stack, user):
    crm, stt, pusher, start = stack
    start("stt3")
    stt.config.latency_ms = 300
    results: list[dict] = []

    def trigger():
        try:
            results.append(transcribe(user, FICHE_3))
        finally:
            connection.close()

    threads = [threading.Thread(target=trigger) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r["run_id"] for r in results}) == 1  # one run, whoever asked first
    run_ended(results[0]["run_id"])
    time.sleep(1.0)
    assert Counter(c["call_id"] for c in stt_calls(stt)) == Counter({f"c-{FICHE_3}-{n}": 1 for n in (1, 2, 3)})
    assert len(events(pusher, FICHE_3, "transcription.completed")) == 1


def test_a_worker_killed_mid_call_never_doubles_a_call_and_the_run_ends_once(stack, user):
    crm, stt, pusher, start = stack
    timing = {"CLAIM_LEASE_SECONDS": "3", "CLAIM_HEARTBEAT_SECONDS": "1", "TRANSCRIPTION_STALL_SECONDS": "2"}
    first = start("stt4a", **timing)
    stt.config.latency_ms = 2500
    run_id = transcribe(user, FICHE_4)["run_id"]
    wait_for(lambda: stt.current_in_flight() >= 2, message="vendor calls in flight", interval=0.05)
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait()
    stt.config.latency_ms = 0
    start("stt4b", **timing)
    from transcriptions.tasks import reconcile_transcription_runs

    stop = threading.Event()

    def beat():
        while not stop.wait(1.0):
            reconcile_transcription_runs.delay()

    beat_thread = threading.Thread(target=beat, daemon=True)
    beat_thread.start()
    try:
        run = run_ended(run_id, timeout=60)
    finally:
        stop.set()
        beat_thread.join()
    assert run.status == "completed"
    calls = stt_calls(stt)
    assert set(_in_flight_overlaps(calls).values()) == {0}  # never two calls of one recording at once
    per_call = Counter(c["call_id"] for c in calls)
    assert set(per_call) == {f"c-{FICHE_4}-{n}" for n in (1, 2, 3, 4)}
    assert all(n <= 2 for n in per_call.values())  # the call lost with the worker, then one more
    assert max(per_call.values()) == 2  # some calls were indeed lost mid-flight and made again
    time.sleep(1.0)
    assert len(events(pusher, FICHE_4, "transcription.completed")) == 1


def test_a_429_storm_is_absorbed_without_a_failed_recording(stack, user):
    crm, stt, pusher, start = stack
    start("stt5")
    stt.config.latency_ms = 400
    stt.config.concurrency_limit = 2  # the vendor allows fewer than our cap of 6: it answers 429
    stt.config.burst_429 = 4
    runs = [transcribe(user, fiche)["run_id"] for fiche in (FICHE_3, FICHE_4)]
    for run_id in runs:
        assert run_ended(run_id, timeout=90).status == "completed"
    assert not Transcription.objects.filter(status="failed").exists()
    assert sum(stt.rejected().values()) >= 1  # the storm happened
    rows = Transcription.objects.filter(fiche__fiche_id__in=(FICHE_3, FICHE_4))
    assert all(r.attempts >= 1 and r.error is None for r in rows)


def test_the_key_never_appears_in_logs_rows_or_api_output(stack, user):
    crm, stt, pusher, start = stack
    worker = start("stt6")
    stt.config.fail_call_ids = frozenset({f"c-{FICHE_2}-1"})
    stt.config.api_key = "another-key"  # every call answers 401: errors everywhere
    run = run_ended(transcribe(user, FICHE_2)["run_id"])
    assert run.status == "failed" and "401" in (Transcription.objects.get(call_id=f"c-{FICHE_2}-2").error or "")
    stt.config.api_key = None
    run_ended(transcribe(user, FICHE_3)["run_id"])
    texts = [worker.log()]
    texts += [json.dumps(list(Transcription.objects.values()), default=str)]
    texts += [json.dumps(list(TranscriptionRun.objects.values()), default=str)]
    for fiche in (FICHE_2, FICHE_3):
        texts.append(client_for(user).get(f"/api/transcriptions/{fiche}", {"include_words": "true"}).content.decode())
    texts += [json.dumps(stt.requests())]
    assert all(KEY not in text and "SUPERSECRET" not in text for text in texts)


def test_a_batch_ends_with_counts_that_add_up_and_one_completed_event(stack, user):
    crm, stt, pusher, start = stack
    start("stt7")
    stt.config.fail_call_ids = frozenset({f"c-{OTHERS[0]}-{n}" for n in (1, 2, 3)})  # one fiche fails entirely
    fiche_ensure_details(fiche_id=FICHE_2)
    response = client_for(user).post(
        "/api/transcriptions/batch", {"fiche_ids": [FICHE_2, *OTHERS, "9999999"], "priority": "low"}, format="json"
    )
    assert response.status_code == 202, response.content
    batch_id = response.json()["batch_id"]
    batch = wait_for(
        lambda: (b := Batch.objects.get(pk=batch_id)).status == "completed" and b,
        timeout=90,
        message="the batch to end",
    )
    assert (batch.total, batch.completed, batch.failed) == (4, 2, 2)  # the unknown fiche and the failing one
    shown = client_for(user).get(f"/api/batches/{batch_id}").json()
    assert (shown["status"], shown["completed"], shown["failed"]) == ("completed", 2, 2) and shown["finished_at"]
    with pusher.lock:
        global_events = [
            e
            for r in pusher.records
            if r["path"].split("?")[0].endswith("/batch_events")
            for e in json.loads(r["body"])["batch"]
            if e["channel"] in ("private-global", f"private-user-{user.pk}")
        ]
    own = [json.loads(e["data"]) | {"channel": e["channel"]} for e in global_events]
    completed = [e for e in own if e["channel"] != "private-global" and "operation_type" in e]
    assert (
        len([e for e in completed if "duration_ms" in e]) == 1
        and completed[-1]["batch_id"] == batch_id
        and completed[-1]["operation_type"] == "transcription"
    )
    progress = [e for e in completed if "progress_percentage" in e]
    assert len(progress) == 4 and progress[-1]["progress_percentage"] == 100
    # Every other user is on the global channel: the batch's id there, nothing else.
    assert {tuple(sorted(e)) for e in own if e["channel"] == "private-global"} == {("batch_id", "channel", "redacted")}
