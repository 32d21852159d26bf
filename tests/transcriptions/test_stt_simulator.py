"""The speech-to-text simulator: deterministic transcripts (transcriptions.simulator.script), its HTTP server
(knobs, request log, concurrency limit) and the ``run_stt_simulator`` command."""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.management.base import CommandError

from fiches.simulator import data
from transcriptions.management.commands.run_stt_simulator import Command
from transcriptions.simulator import script
from transcriptions.simulator.script import (
    CONTRADICTED,
    MISSING,
    OK,
    SEGMENT_KEYS,
    SEGMENT_TERMS,
    contains_term,
)
from transcriptions.simulator.server import SttSimulator, SttSimulatorConfig, fake_audio

STT = "/v1/speech-to-text"
FIRST_DAY = date(2026, 2, 2)
ROOT = Path(__file__).resolve().parents[2]
FORM = {
    "model_id": "scribe_v2",
    "language_code": "fr",
    "diarize": "true",
    "num_speakers": "2",
    "timestamps_granularity": "word",
    "tag_audio_events": "false",
}


@cache
def crm_recordings(count: int, seed: int = 42) -> tuple[dict[str, Any], ...]:
    """The first ``count`` recordings of the CRM simulator from FIRST_DAY on (20 fiches a day)."""
    found: list[dict[str, Any]] = []
    day = FIRST_DAY
    while len(found) < count:
        for sale in data.sales_for_date(day, seed=seed, fiches_per_day=20, revision=0, include_recordings=True):
            found += [{**rec, "agent_name": sale["agent_name"]} for rec in sale["recordings"]]
        day += timedelta(days=1)
    return tuple(found[:count])


def post(
    sim: SttSimulator,
    *,
    source_url: str | None = None,
    file: tuple[str, bytes] | None = None,
    fields: dict[str, str] | None = None,
    key: str | None = None,
) -> requests.Response:
    form = FORM if fields is None else fields
    parts: list[tuple[str, Any]] = [(name, (None, value)) for name, value in form.items()]
    if source_url is not None:
        parts.append(("source_url", (None, source_url)))
    if file is not None:
        parts.append(("file", (file[0], file[1], "audio/mpeg")))
    headers = {"xi-api-key": key} if key is not None else {}
    return requests.post(f"{sim.url}{STT}", files=parts, headers=headers, timeout=30)


def recording_url(call_id: str) -> str:
    return f"https://recordings.example/{call_id}.mp3"


@pytest.fixture
def sim() -> Iterator[SttSimulator]:
    with SttSimulator(SttSimulatorConfig()) as simulator:
        yield simulator


# --- Transcripts --------------------------------------------------------------------------------------


def test_same_seed_same_transcript_other_seed_another():
    call_id = crm_recordings(1)[0]["call_id"]
    assert script.transcript_for(call_id) == script.transcript_for(call_id, seed=42, crm_seed=42)
    assert script.truth_for(call_id) == script.truth_for(call_id)
    assert script.transcript_for(call_id, seed=7)["text"] != script.transcript_for(call_id)["text"]
    changed = script.transcript_for(call_id)
    changed["words"].clear()  # callers get a fresh dict
    assert script.transcript_for(call_id)["words"]


def test_transcripts_do_not_depend_on_the_process_hash_seed():
    code = (
        "import hashlib, json; from transcriptions.simulator import script; "
        "body = [script.transcript_for(c) for c in ('c-2225000-1', 'free-id-1')]; "
        "print(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={"PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(digests) == 1


def test_durations_match_the_crm_simulator():
    for rec in crm_recordings(80):
        transcript = script.transcript_for(rec["call_id"])
        truth = script.truth_for(rec["call_id"])
        assert transcript["audio_duration_secs"] == truth["duration"] == float(rec["duration_seconds"])
        assert truth["from_crm"] and truth["direction"] == rec["direction"]
        assert truth["agent_name"] == rec["agent_name"]
    other_seed = crm_recordings(20, seed=7)
    assert [script.recording_duration(r["call_id"], crm_seed=7) for r in other_seed] == [
        float(r["duration_seconds"]) for r in other_seed
    ]
    assert [script.recording_duration(r["call_id"]) for r in other_seed] != [
        float(r["duration_seconds"]) for r in other_seed
    ]


def test_recordings_added_by_a_crm_revision_are_found():
    for n in range(60):
        day = FIRST_DAY + timedelta(days=n)
        base = {
            r["call_id"]
            for s in data.sales_for_date(day, seed=42, fiches_per_day=20, revision=0, include_recordings=True)
            for r in s["recordings"]
        }
        revised = [
            r
            for s in data.sales_for_date(day, seed=42, fiches_per_day=20, revision=1, include_recordings=True)
            for r in s["recordings"]
            if r["call_id"] not in base
        ]
        if revised:
            assert script.recording_duration(revised[0]["call_id"]) == float(revised[0]["duration_seconds"])
            return
    pytest.fail("no recording added by revision 1 in 60 days")


def test_other_ids_get_a_deterministic_hashed_duration():
    durations = [script.recording_duration(f"rec-{n}") for n in range(200)]
    assert durations == [script.recording_duration(f"rec-{n}") for n in range(200)]
    assert all(25 <= d <= 1800 for d in durations) and len(set(durations)) > 100
    assert script.truth_for("rec-1")["from_crm"] is False
    assert script.call_id_from_recording("https://cdn.example/a/b/c-2225000-1.mp3?sig=x") == "c-2225000-1"
    assert script.call_id_from_recording("c-2225000-1.mp3") == "c-2225000-1"
    assert script.parse_call_id("c-2225000-1") == ("2225000", 1) and script.parse_call_id("c-x-1") is None


def test_vendor_shape_and_words_spanning_the_whole_audio():
    for rec in crm_recordings(40):
        body = script.transcript_for(rec["call_id"])
        assert set(body) == {
            "language_code",
            "language_probability",
            "text",
            "words",
            "transcription_id",
            "audio_duration_secs",
        }
        assert body["language_code"] == "fr" and 0.9 < body["language_probability"] <= 1
        assert body["transcription_id"].startswith("tr_")
        words = body["words"]
        assert body["text"] == "".join(w["text"] for w in words)
        assert {w["type"] for w in words} <= {"word", "spacing"}
        assert {w["speaker_id"] for w in words} <= {"speaker_0", "speaker_1"}
        for word in words:
            assert word["start"] <= word["end"]
            if word["type"] == "word":
                assert word["text"].strip() == word["text"] and -1 <= word["logprob"] <= 0
            else:
                assert word["text"] == " " and "logprob" not in word
        assert all(a["end"] <= b["start"] + 1e-9 for a, b in itertools.pairwise(words))
        assert [w["type"] for w in words[::2]] == ["word"] * len(words[::2])  # word, spacing, word, ...
        duration = body["audio_duration_secs"]
        assert words[0]["start"] < 1.0 and duration - 1.6 <= words[-1]["end"] <= duration
        count = sum(1 for w in words if w["type"] == "word")
        if duration >= 300:
            assert 2.15 <= count / duration <= 2.5
        elif duration >= 60:
            assert 1.8 <= count / duration <= 3.1


def test_a_thirty_minute_call_has_about_four_thousand_words():
    rec = next(r for r in crm_recordings(300) if r["duration_seconds"] >= 1700)
    words = sum(1 for w in script.transcript_for(rec["call_id"])["words"] if w["type"] == "word")
    assert 0.9 * 2.3 * rec["duration_seconds"] <= words <= 1.1 * 2.3 * rec["duration_seconds"]


class _Indexed:
    """A transcript's words with their normalized text, to read the words within a time span quickly."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.words = [w for w in body["words"] if w["type"] == "word"]
        self.starts = [w["start"] for w in self.words]
        self.text = body["text"]

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        return self.words[bisect.bisect_left(self.starts, start) : bisect.bisect_right(self.starts, end)]


def test_segments_and_truth_are_consistent():
    """Over 300 CRM recordings: ok segments hold the auditor's words, missing ones leave no trace in the whole
    call, contradicted ones hold a contradiction; ok and contradicted segments are where the truth says, opened
    by the agent; and every variant occurs."""
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    agent_ids = set()
    client_first = compliant = 0
    for rec in crm_recordings(300):
        body = script.transcript_for(rec["call_id"])
        truth = script.truth_for(rec["call_id"])
        indexed = _Indexed(body)
        kinds[truth["kind"]] += 1
        compliant += all(segment["variant"] == OK for segment in truth["segments"])
        agent_ids.add(truth["agent_speaker_id"])
        client_first += indexed.words[0]["speaker_id"] != truth["agent_speaker_id"]
        assert [s["key"] for s in truth["segments"]] == list(SEGMENT_KEYS)
        for segment in truth["segments"]:
            key, variant = segment["key"], segment["variant"]
            terms = SEGMENT_TERMS[key]
            if truth["kind"] == "full":
                seen[key, variant] += 1
            if variant == MISSING:
                assert segment["start"] is None and segment["end"] is None
                found = [t for t in terms.trace if contains_term(indexed.text, t)]
                assert not found, (rec["call_id"], key, found)
                continue
            assert 0 <= segment["start"] < segment["end"] <= truth["duration"]
            span = indexed.between(segment["start"], segment["end"])
            span_text = " ".join(w["text"] for w in span)
            assert span[0]["speaker_id"] == truth["agent_speaker_id"], (rec["call_id"], key)  # the agent opens it
            if variant == OK:
                for group in terms.required:
                    assert any(contains_term(span_text, t) for t in group), (rec["call_id"], key, group)
            else:
                assert variant == CONTRADICTED and key in script.CONTRADICTABLE
                assert any(contains_term(span_text, t) for t in terms.contradiction), (rec["call_id"], key)
        if truth["kind"] == "full" and truth["segments"][0]["variant"] == OK:
            assert contains_term(indexed.text, truth["company"]) and contains_term(indexed.text, "ORIAS")
            orias = [w for w in indexed.words if contains_term(w["text"], "orias")]
            assert orias and {w["speaker_id"] for w in orias} == {truth["agent_speaker_id"]}
    assert set(kinds) == {"full", "callback", "refusal", "voicemail"}
    assert kinds["full"] > 0.6 * sum(kinds.values())
    assert agent_ids == {"speaker_0", "speaker_1"} and client_first > 20
    assert seen[("withdrawal", MISSING)] and seen[("withdrawal", CONTRADICTED)]
    assert sum(n for (_k, v), n in seen.items() if v == MISSING) >= 15
    assert sum(n for (_k, v), n in seen.items() if v == CONTRADICTED) >= 15
    assert 0.55 <= compliant / kinds["full"] <= 0.85


def test_every_wording_of_the_library_meets_its_terms():
    """Compliant wordings hold the required terms, contradicted ones a contradiction, and filler never holds
    a segment's trace terms (so a missing segment stays missing)."""
    for key, library in script.SEGMENTS.items():
        for wording in library.get(OK, ()):
            text = " ".join(line for _speaker, line in wording)
            for group in SEGMENT_TERMS[key].required:
                assert any(contains_term(text, t) for t in group), (key, text)
        for wording in library.get(CONTRADICTED, ()):
            text = " ".join(line for _speaker, line in wording)
            assert any(contains_term(text, t) for t in SEGMENT_TERMS[key].contradiction), (key, text)
    all_traces = {key: terms.trace for key, terms in SEGMENT_TERMS.items()}
    pools: dict[str, list[script.Wording]] = {
        "small talk": list(script.SMALL_TALK),
        "form": list(script.FORM_FILLER),
        "needs": list(script.NEEDS_FILLER_COMMON) + [w for pool in script.NEEDS_FILLER.values() for w in pool],
        "product": list(script.PRODUCT_FILLER_COMMON)
        + list(script.PRODUCT_DETAIL)
        + [w for pool in script.PRODUCT_FILLER.values() for w in pool],
    }
    allowed = {"needs": "needs_analysis", "product": "offer"}
    for pool_name, wordings in pools.items():
        for wording in wordings:
            text = " ".join(line for _speaker, line in wording)
            for key, traces in all_traces.items():
                if allowed.get(pool_name) != key:
                    assert not [t for t in traces if contains_term(text, t)], (pool_name, key, text)


def test_french_numbers():
    assert [script.french_number(n) for n in (0, 14, 21, 71, 80, 84, 91, 100, 200, 250, 1000, 2026, 80000)] == [
        "zéro",
        "quatorze",
        "vingt et un",
        "soixante et onze",
        "quatre-vingts",
        "quatre-vingt-quatre",
        "quatre-vingt-onze",
        "cent",
        "deux cents",
        "deux cent cinquante",
        "mille",
        "deux mille vingt-six",
        "quatre-vingt mille",
    ]


# --- HTTP server ------------------------------------------------------------------------------------


def test_post_with_source_url_returns_the_transcript(sim):
    rec = crm_recordings(3)[2]
    response = post(sim, source_url=rec["recording_url"])
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    assert response.json() == script.transcript_for(rec["call_id"])
    [entry] = sim.requests()
    assert entry["call_id"] == rec["call_id"] and entry["fields"] == FORM | {"source_url": rec["recording_url"]}
    assert (entry["status"], entry["in_flight"], entry["detail_status"]) == (200, 1, None)


def test_upload_is_identified_by_its_file_name_and_recordings_are_served(sim):
    rec = crm_recordings(3)[1]
    audio = requests.get(sim.recording_url(rec["call_id"]), timeout=10)
    assert audio.status_code == 200 and audio.headers["Content-Type"] == "audio/mpeg"
    assert audio.content == fake_audio(rec["call_id"]) and 200 <= len(audio.content) <= 1000
    assert audio.content != fake_audio("other")
    response = post(sim, file=(f"{rec['call_id']}.mp3", audio.content))
    assert response.json() == script.transcript_for(rec["call_id"])
    assert sim.requests()[-1]["fields"]["file"] == {
        "name": "file",
        "filename": f"{rec['call_id']}.mp3",
        "size": len(audio.content),
        "content_type": "audio/mpeg",
    }
    assert requests.get(f"{sim.url}/recordings/x.wav", timeout=10).status_code == 404


def test_truth_endpoint(sim):
    call_id = crm_recordings(5)[4]["call_id"]
    body = requests.get(f"{sim.url}/__sim__/truth/{call_id}", timeout=10).json()
    assert body == json.loads(json.dumps(script.truth_for(call_id)))
    assert set(body) >= {"call_id", "duration", "agent_speaker_id", "segments", "company", "agent_name", "orias"}
    sim.config.seed = 7
    assert (
        requests.get(f"{sim.url}/__sim__/truth/{call_id}", timeout=10).json()["agent_speaker_id"]
        == script.truth_for(call_id, seed=7)["agent_speaker_id"]
    )


@pytest.mark.parametrize(
    "fields,extra,field",
    [
        ({k: v for k, v in FORM.items() if k != "model_id"}, {"source_url": recording_url("c-1-1")}, "model_id"),
        (FORM, {}, "file"),
        (FORM, {"source_url": recording_url("c-1-1"), "file": ("c-1-1.mp3", b"abc")}, "file"),
        (FORM | {"diarize": "maybe"}, {"source_url": recording_url("c-1-1")}, "diarize"),
        (FORM | {"num_speakers": "40"}, {"source_url": recording_url("c-1-1")}, "num_speakers"),
        (
            FORM | {"timestamps_granularity": "sentence"},
            {"source_url": recording_url("c-1-1")},
            "timestamps_granularity",
        ),
        (FORM, {"source_url": "ftp://x/c-1-1.mp3"}, "source_url"),
    ],
)
def test_invalid_requests_are_422_naming_the_field(sim, fields, extra, field):
    response = post(sim, fields=fields, **extra)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail[0]["loc"] == ["body", field]


def test_non_multipart_unknown_path_and_method(sim):
    response = requests.post(f"{sim.url}{STT}", data={"model_id": "scribe_v2"}, timeout=10)
    assert response.status_code == 422
    assert requests.get(f"{sim.url}/v1/nothing", timeout=10).status_code == 404
    assert requests.get(f"{sim.url}{STT}", timeout=10).status_code == 405


def test_api_key_knob(sim):
    sim.config.api_key = "xi-s3cret-key"
    url = recording_url("c-2225000-1")
    for key in (None, "wrong", "xi-s3cret-key "):
        response = post(sim, source_url=url, key=key)
        assert response.status_code == 401 and response.json()["detail"]["status"] == "invalid_api_key"
        assert "xi-s3cret-key" not in response.text
    assert post(sim, source_url=url, key="xi-s3cret-key").status_code == 200
    assert "xi-s3cret-key" not in json.dumps(sim.requests())
    config = requests.get(f"{sim.url}/__sim__/config", timeout=10)
    assert config.json()["api_key"] == "(set)" and "xi-s3cret-key" not in config.text


def test_failure_knobs(sim):
    a, b = recording_url("c-2225000-1"), recording_url("c-2225001-1")
    sim.config.fail_call_ids = frozenset({"c-2225000-1"})
    assert post(sim, source_url=a).status_code == 500
    assert post(sim, source_url=b).status_code == 200
    sim.config.fail_rate = 1.0
    response = post(sim, source_url=b)
    assert response.status_code == 503 and response.json()["detail"]["status"] == "service_unavailable"
    sim.config.update({"fail_rate": 0.5, "fail_call_ids": []})
    assert {post(sim, source_url=b).status_code for _ in range(30)} == {200, 503}
    sim.config.update({"fail_rate": 0.0, "missing_words_call_ids": ["c-2225001-1"]})
    body = post(sim, source_url=b).json()
    assert "words" not in body and body["text"]
    assert "words" in post(sim, source_url=a).json()


def test_burst_429_answers_system_busy_then_recovers(sim):
    requests.post(f"{sim.url}/__sim__/config", json={"burst_429": 2}, timeout=10)
    url = recording_url("c-2225000-1")
    for _ in range(2):
        response = post(sim, source_url=url)
        assert response.status_code == 429 and response.headers["Retry-After"] == "1"
        assert response.json()["detail"]["status"] == "system_busy" and response.json()["detail"]["message"]
    assert post(sim, source_url=url).status_code == 200
    assert sim.config.burst_429 == 0
    assert sim.rejected() == {"too_many_concurrent_requests": 0, "system_busy": 2}
    assert [e["detail_status"] for e in sim.requests()] == ["system_busy", "system_busy", None]


def parallel_posts(sim: SttSimulator, count: int) -> list[requests.Response]:
    barrier = threading.Barrier(count)
    responses: list[requests.Response] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        barrier.wait()
        response = post(sim, source_url=recording_url(f"c-222500{n}-1"))
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


def test_concurrency_limit_rejects_requests_beyond_it(sim):
    sim.config.update({"concurrency_limit": 2, "latency_ms": 1000})
    responses = parallel_posts(sim, 6)

    statuses = collections.Counter(r.status_code for r in responses)
    assert statuses[200] >= 2 and statuses[429] >= 1 and statuses[200] + statuses[429] == 6
    for response in responses:
        if response.status_code == 429:
            assert response.json()["detail"]["status"] == "too_many_concurrent_requests"
            assert response.json()["detail"]["message"]
    assert sim.rejected()["too_many_concurrent_requests"] == statuses[429]
    log = sim.requests()
    assert len(log) == 6 and max(e["in_flight"] for e in log) == sim.max_in_flight() >= 3
    admitted = [count for _t, count in sim.in_flight_timeline(admitted_only=True)]
    assert max(admitted) <= 2 and admitted[-1] == 0
    assert max(count for _t, count in sim.in_flight_timeline()) >= 3
    ok = [e for e in log if e["status"] == 200]
    assert all(e["end"] - e["start"] >= 1.0 for e in ok)


def test_without_limit_requests_overlap_and_the_log_measures_it(sim):
    sim.config.latency_ms = 1000
    responses = parallel_posts(sim, 4)
    assert [r.status_code for r in responses] == [200] * 4
    log = sim.requests()
    assert max(e["in_flight"] for e in log) == sim.max_in_flight() >= 2
    assert max(e["start"] for e in log) < min(e["end"] for e in log)  # all four overlapped
    assert sim.max_in_flight() == 4
    assert 2.0 <= sim.average_in_flight() <= 4.0
    assert sim.rejected() == {"too_many_concurrent_requests": 0, "system_busy": 0}


def test_latency_per_audio_minute(sim):
    rec = next(r for r in crm_recordings(100) if 300 <= r["duration_seconds"] <= 900)
    sim.config.update({"latency_ms": 50, "latency_ms_per_audio_minute": 100})
    assert post(sim, source_url=rec["recording_url"]).status_code == 200
    [entry] = sim.requests()
    assert entry["end"] - entry["start"] >= 0.05 + 0.1 * rec["duration_seconds"] / 60


def test_request_log_endpoint_and_clearing(sim):
    post(sim, source_url=recording_url("c-2225000-1"))
    requests.get(sim.recording_url("c-2225000-1"), timeout=10)
    log = requests.get(f"{sim.url}/__sim__/requests", timeout=10).json()
    assert log["requests"] == json.loads(json.dumps(sim.requests()))
    assert [(e["method"], e["path"], e["call_id"], e["in_flight"]) for e in log["requests"]] == [
        ("POST", STT, "c-2225000-1", 1),
        ("GET", "/recordings/c-2225000-1.mp3", "c-2225000-1", None),
    ]
    assert log["max_in_flight"] == 1 and log["rejected"] == {"too_many_concurrent_requests": 0, "system_busy": 0}
    for entry in log["requests"]:
        assert entry["start"] <= entry["end"]
    assert requests.delete(f"{sim.url}/__sim__/requests", timeout=10).status_code == 200
    assert sim.requests() == [] and sim.max_in_flight() == 0


def test_post_config_changes_a_running_simulator(sim):
    config_url = f"{sim.url}/__sim__/config"
    assert requests.get(config_url, timeout=10).json() == SttSimulatorConfig().to_dict()
    response = requests.post(
        config_url, json={"seed": 7, "concurrency_limit": 3, "fail_call_ids": ["c-1-1"]}, timeout=10
    )
    assert response.status_code == 200
    assert (response.json()["seed"], response.json()["concurrency_limit"], response.json()["fail_call_ids"]) == (
        7,
        3,
        ["c-1-1"],
    )
    assert sim.config.fail_call_ids == {"c-1-1"}
    assert post(sim, source_url=recording_url("c-2225000-1")).json() == script.transcript_for("c-2225000-1", seed=7)
    for invalid in (
        {"fail_rate": 2},
        {"latency_ms": "fast"},
        {"concurrency_limit": 0},
        {"fail_call_ids": "c-1"},
        {"nope": 1},
        [1],
        {"burst_429": -1},
    ):
        response = requests.post(config_url, json=invalid, timeout=10)
        assert response.status_code == 400 and response.json()["detail"]
    assert sim.config.concurrency_limit == 3  # invalid updates change nothing


def test_config_from_env():
    config = SttSimulatorConfig.from_env(
        {
            "STT_SIM_SEED": "7",
            "STT_SIM_CRM_SEED": "8",
            "STT_SIM_LATENCY_MS": "25",
            "STT_SIM_LATENCY_MS_PER_AUDIO_MINUTE": "12.5",
            "STT_SIM_FAIL_RATE": "0.1",
            "STT_SIM_FAIL_CALL_IDS": "c-1-1, c-2-1",
            "STT_SIM_BURST_429": "3",
            "STT_SIM_CONCURRENCY_LIMIT": "10",
            "STT_SIM_API_KEY": "key",
            "STT_SIM_MISSING_WORDS_CALL_IDS": "c-3-1",
        }
    )
    assert config == SttSimulatorConfig(
        seed=7,
        crm_seed=8,
        latency_ms=25,
        latency_ms_per_audio_minute=12.5,
        fail_rate=0.1,
        fail_call_ids=frozenset({"c-1-1", "c-2-1"}),
        burst_429=3,
        concurrency_limit=10,
        api_key="key",
        missing_words_call_ids=frozenset({"c-3-1"}),
    )
    assert (
        SttSimulatorConfig.from_env({"STT_SIM_API_KEY": "", "STT_SIM_CONCURRENCY_LIMIT": "none"})
        == SttSimulatorConfig()
    )
    with pytest.raises(ValueError, match="STT_SIM_FAIL_RATE"):
        SttSimulatorConfig.from_env({"STT_SIM_FAIL_RATE": "often"})


# --- The management command -----------------------------------------------------------------------------


def parse(*argv: str) -> SttSimulatorConfig:
    parser = Command().create_parser("manage.py", "run_stt_simulator")
    return Command.config_from_options(vars(parser.parse_args(list(argv))))


def test_command_flags_set_the_knobs(monkeypatch):
    monkeypatch.delenv("STT_SIM_SEED", raising=False)
    monkeypatch.setenv("STT_SIM_LATENCY_MS", "40")
    config = parse(
        "--seed",
        "9",
        "--concurrency-limit",
        "4",
        "--burst-429",
        "2",
        "--fail-call-ids",
        "c-1-1,c-2-1",
        "--latency-ms-per-audio-minute",
        "7.5",
        "--missing-words-call-ids",
        "c-9-1",
    )
    assert dataclasses.asdict(config) | {"fail_call_ids": None, "missing_words_call_ids": None} == dataclasses.asdict(
        SttSimulatorConfig(seed=9, latency_ms=40, concurrency_limit=4, burst_429=2, latency_ms_per_audio_minute=7.5)
    ) | {"fail_call_ids": None, "missing_words_call_ids": None}
    assert config.fail_call_ids == {"c-1-1", "c-2-1"} and config.missing_words_call_ids == {"c-9-1"}
    assert parse("--latency-ms", "5").latency_ms == 5  # a flag overrides its variable
    with pytest.raises(CommandError, match="fail_rate"):
        parse("--fail-rate", "often")
    with pytest.raises(CommandError, match="concurrency_limit"):
        parse("--concurrency-limit", "-2")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a background job of a non-interactive shell inherits


@pytest.mark.parametrize(
    ("stop_with", "sigint_ignored_by_parent"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c", "ctrl-c-started-in-background", "sigterm"],
)
def test_command_serves_until_interrupted(stop_with, sigint_ignored_by_parent):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.test_settings", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_stt_simulator", "--port", "0", "--seed", "5", "--api-key", "k-123"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint if sigint_ignored_by_parent else None,
    )
    try:
        first_line = process.stdout.readline()
        assert "STT simulator listening on http://127.0.0.1:" in first_line
        url = first_line.strip().rsplit(" ", 1)[-1]
        config = requests.get(f"{url}/__sim__/config", timeout=10).json()
        assert (config["seed"], config["api_key"]) == (5, "(set)")
        form = FORM | {"source_url": recording_url("a")}
        transcript = requests.post(
            f"{url}{STT}", headers={"xi-api-key": "k-123"}, timeout=30, files=[(k, (None, v)) for k, v in form.items()]
        )
        assert transcript.json() == script.transcript_for("a", seed=5)
    finally:
        process.send_signal(stop_with)
        try:
            out, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    assert process.returncode == 0, err
    assert "Stopping the STT simulator." in out and "k-123" not in out
