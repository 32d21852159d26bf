"""The ElevenLabs client (transcriptions.clients.elevenlabs) against the STT simulator over real HTTP, and
against a tiny stub server for bodies the simulator never sends (audio events, odd vendor answers)."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fiches.simulator import data
from transcriptions.clients import elevenlabs as client
from transcriptions.clients.elevenlabs import (
    ElevenLabsError,
    ElevenLabsNotConfigured,
    ElevenLabsPermanentError,
    ElevenLabsRateLimited,
    ElevenLabsTransientError,
    SttResult,
    normalize_api_key,
)
from transcriptions.simulator import script
from transcriptions.simulator.server import SttSimulator, SttSimulatorConfig

KEY = "sk_test_Zq8vK3-distinctive-elevenlabs-key-91"
DEFAULT_CONFIG = SttSimulatorConfig(api_key=KEY)
WORD_KEYS = {"text", "start", "end", "type", "speaker_id", "logprob"}
EXPECTED_FIELDS = {
    "model_id": "scribe_v2",
    "language_code": "fr",
    "diarize": "true",
    "num_speakers": "2",
    "timestamps_granularity": "word",
    "tag_audio_events": "false",
}


def crm_recording(index: int = 0) -> dict[str, Any]:
    """A recording of the CRM simulator (seed 42), as the fiche cache would hand it over."""
    recordings = [
        rec
        for sale in data.sales_for_date(
            datetime(2026, 2, 2).date(), seed=42, fiches_per_day=20, revision=0, include_recordings=True
        )
        for rec in sale["recordings"]
    ]
    return recordings[index]


CALL = crm_recording(0)
OTHER_CALL = crm_recording(1)


@pytest.fixture(scope="module")
def stt_server() -> Iterator[SttSimulator]:
    with SttSimulator(dataclasses.replace(DEFAULT_CONFIG)) as simulator:
        yield simulator


@pytest.fixture
def stt(stt_server: SttSimulator, settings) -> SttSimulator:
    """The module's simulator with default knobs (key required) and an empty log; settings point at it."""
    stt_server.config.update({f.name: getattr(DEFAULT_CONFIG, f.name) for f in dataclasses.fields(DEFAULT_CONFIG)})
    stt_server.clear_requests()
    settings.ELEVENLABS_BASE_URL = stt_server.url
    settings.ELEVENLABS_API_KEY = KEY
    settings.ELEVENLABS_MODEL_ID = "scribe_v2"
    settings.ELEVENLABS_TIMEOUT_SECONDS = 30.0
    settings.TRANSCRIPTION_LANGUAGE = "fr"
    settings.TRANSCRIPTION_UPLOAD_AUDIO = False
    return stt_server


def transcribe(recording: dict[str, Any] = CALL) -> SttResult:
    return client.transcribe(recording_url=recording["recording_url"], call_id=recording["call_id"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_no_secret(exc: BaseException) -> None:
    """Neither the key nor the headers in the exception, its chain, or its formatted traceback."""
    rendered = [str(exc), repr(exc), repr(exc.args), "".join(traceback.format_exception(exc))]
    for text in rendered:
        assert KEY not in text and "xi-api-key" not in text.lower()
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    assert exc.__context__ is None


def assert_logs_clean(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "expected log lines"
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in repr(vars(record))  # extras too
    assert KEY not in caplog.text


# --- Success ------------------------------------------------------------------------------------------


def test_transcribe_returns_the_normalized_transcript(stt):
    result = transcribe()

    expected = script.transcript_for(CALL["call_id"])
    assert isinstance(result, SttResult)
    assert result.language_code == "fr" and 0.9 <= result.language_probability <= 1
    assert result.transcription_id == expected["transcription_id"]
    assert result.audio_duration_secs == float(CALL["duration_seconds"])
    assert result.text == expected["text"]
    assert len(result.words) == len(expected["words"]) > 100
    for word, raw in zip(result.words, expected["words"], strict=True):
        assert set(word) == WORD_KEYS
        assert (word["text"], word["start"], word["end"], word["type"], word["speaker_id"]) == (
            raw["text"],
            raw["start"],
            raw["end"],
            raw["type"],
            raw["speaker_id"],
        )
        assert word["logprob"] == raw.get("logprob")
        assert isinstance(word["start"], float) and isinstance(word["end"], float)
    assert {w["type"] for w in result.words} == {"word", "spacing"}
    assert {w["speaker_id"] for w in result.words} == {"speaker_0", "speaker_1"}

    [call] = stt.requests()
    assert (call["method"], call["path"], call["status"], call["call_id"]) == (
        "POST",
        "/v1/speech-to-text",
        200,
        CALL["call_id"],
    )
    assert call["fields"] == EXPECTED_FIELDS | {"source_url": CALL["recording_url"]}
    assert KEY not in json.dumps(stt.requests())


def test_fields_follow_the_settings(stt, settings):
    settings.ELEVENLABS_MODEL_ID = "scribe_v3_experimental"
    settings.TRANSCRIPTION_LANGUAGE = "en"
    transcribe()
    [call] = stt.requests()
    assert call["fields"]["model_id"] == "scribe_v3_experimental"
    assert call["fields"]["language_code"] == "en"


def test_upload_mode_downloads_the_recording_and_sends_it_as_a_file(stt, settings):
    settings.TRANSCRIPTION_UPLOAD_AUDIO = True
    settings.RECORDING_ALLOWED_ORIGINS = [stt.url]  # a loopback simulator: trusted explicitly
    result = client.transcribe(recording_url=stt.recording_url(OTHER_CALL["call_id"]), call_id=OTHER_CALL["call_id"])

    assert result.audio_duration_secs == float(OTHER_CALL["duration_seconds"])
    assert result.text == script.transcript_for(OTHER_CALL["call_id"])["text"]
    download, post = stt.requests()
    assert (download["method"], download["path"], download["status"]) == (
        "GET",
        f"/recordings/{OTHER_CALL['call_id']}.mp3",
        200,
    )
    assert post["call_id"] == OTHER_CALL["call_id"]
    assert "source_url" not in post["fields"]
    assert post["fields"]["file"] == {
        "name": "file",
        "filename": f"{OTHER_CALL['call_id']}.mp3",
        "size": 512,
        "content_type": "audio/mpeg",
    }
    assert {k: v for k, v in post["fields"].items() if k != "file"} == EXPECTED_FIELDS


def test_upload_mode_download_failures_are_typed(stt, settings):
    settings.TRANSCRIPTION_UPLOAD_AUDIO = True
    closed_port = free_port()
    settings.RECORDING_ALLOWED_ORIGINS = [stt.url, f"http://127.0.0.1:{closed_port}"]
    with pytest.raises(ElevenLabsPermanentError) as excinfo:
        client.transcribe(recording_url=f"{stt.url}/recordings/nope.wav?token=secret-token", call_id="nope")
    assert excinfo.value.status == 404 and "secret-token" not in str(excinfo.value)
    with pytest.raises(ElevenLabsTransientError) as excinfo:
        client.transcribe(recording_url=f"http://127.0.0.1:{closed_port}/a.mp3", call_id="a")
    assert excinfo.value.status is None
    assert [r["path"] for r in stt.requests()] == ["/recordings/nope.wav"]  # nothing was posted


# --- Errors -------------------------------------------------------------------------------------------


def test_wrong_key_is_a_permanent_401_without_the_key(stt, settings, caplog):
    caplog.set_level(logging.DEBUG)
    stt.config.api_key = "the-right-key-0000"
    with pytest.raises(ElevenLabsPermanentError) as excinfo:
        transcribe()
    exc = excinfo.value
    assert not isinstance(exc, ElevenLabsTransientError)
    assert exc.status == 401 and "ELEVENLABS_API_KEY" in str(exc)
    assert_no_secret(exc)
    assert_logs_clean(caplog)
    assert [r["status"] for r in stt.requests()] == [401]


def test_invalid_request_is_a_permanent_422_naming_the_field(stt, settings):
    settings.ELEVENLABS_MODEL_ID = ""
    with pytest.raises(ElevenLabsPermanentError) as excinfo:
        transcribe()
    assert excinfo.value.status == 422 and "model_id" in str(excinfo.value)
    assert not isinstance(excinfo.value, ElevenLabsTransientError)


def test_too_many_concurrent_requests_is_rate_limited_with_its_reason(stt):
    stt.config.update({"concurrency_limit": 1, "latency_ms": 1500})
    results: list[SttResult] = []
    first = threading.Thread(target=lambda: results.append(transcribe()))
    first.start()
    deadline = time.monotonic() + 10
    while stt.current_in_flight() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # arrived; now surely admitted (it has 1.5 s of latency ahead)
    try:
        with pytest.raises(ElevenLabsRateLimited) as excinfo:
            transcribe(OTHER_CALL)
    finally:
        first.join()
    exc = excinfo.value
    assert isinstance(exc, ElevenLabsTransientError)
    assert (exc.status, exc.reason, exc.retry_after) == (429, "too_many_concurrent_requests", None)
    assert len(results) == 1  # the first request was served
    assert stt.rejected()["too_many_concurrent_requests"] == 1


def test_system_busy_429_carries_retry_after(stt):
    stt.config.burst_429 = 1
    with pytest.raises(ElevenLabsRateLimited) as excinfo:
        transcribe()
    assert (excinfo.value.status, excinfo.value.reason, excinfo.value.retry_after) == (429, "system_busy", 1.0)
    assert transcribe().words  # the burst is over
    assert stt.rejected() == {"too_many_concurrent_requests": 0, "system_busy": 1}


def test_server_errors_are_transient(stt):
    stt.config.fail_call_ids = frozenset({CALL["call_id"]})
    with pytest.raises(ElevenLabsTransientError) as excinfo:
        transcribe()
    assert excinfo.value.status == 500 and not isinstance(excinfo.value, ElevenLabsRateLimited)
    assert transcribe(OTHER_CALL).words
    stt.config.fail_rate = 1.0
    with pytest.raises(ElevenLabsTransientError) as excinfo:
        transcribe(OTHER_CALL)
    assert excinfo.value.status == 503


def test_read_timeout_is_transient(stt, settings):
    settings.ELEVENLABS_TIMEOUT_SECONDS = 0.3
    stt.config.latency_ms = 1500
    with pytest.raises(ElevenLabsTransientError) as excinfo:
        transcribe()
    assert excinfo.value.status is None and "timeout" in str(excinfo.value).lower()
    assert_no_secret(excinfo.value)


def test_connection_refused_is_transient(stt, settings):
    settings.ELEVENLABS_BASE_URL = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ElevenLabsTransientError) as excinfo:
        transcribe()
    assert excinfo.value.status is None and "unreachable" in str(excinfo.value)
    assert_no_secret(excinfo.value)


def test_missing_words_breaks_the_contract_and_names_the_field(stt):
    stt.config.missing_words_call_ids = frozenset({CALL["call_id"]})
    with pytest.raises(ElevenLabsPermanentError) as excinfo:
        transcribe()
    assert excinfo.value.status == 200 and "'words'" in str(excinfo.value)
    assert not isinstance(excinfo.value, ElevenLabsTransientError)


# --- Key handling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [f"  {KEY}  ", f'"{KEY}"', f"'{KEY}'\n", f' " {KEY} " ', KEY])
def test_key_is_normalized_before_use(stt, settings, raw):
    assert normalize_api_key(raw) == KEY
    settings.ELEVENLABS_API_KEY = raw
    assert transcribe().words
    assert [r["status"] for r in stt.requests()] == [200]


@pytest.mark.parametrize("raw", ["", "   ", '""', "''", " ' ' "])
def test_missing_key_is_not_configured_and_names_the_setting(stt, settings, raw):
    settings.ELEVENLABS_API_KEY = raw
    with pytest.raises(ElevenLabsNotConfigured) as excinfo:
        transcribe()
    assert isinstance(excinfo.value, ElevenLabsPermanentError)
    assert "ELEVENLABS_API_KEY" in str(excinfo.value)
    assert stt.requests() == []


def test_a_key_that_cannot_be_a_header_is_refused_without_echoing_it(stt, settings):
    settings.ELEVENLABS_API_KEY = f"{KEY}\r\nX-Injected: 1"
    with pytest.raises(ElevenLabsNotConfigured) as excinfo:
        transcribe()
    assert "ELEVENLABS_API_KEY" in str(excinfo.value)
    assert_no_secret(excinfo.value)
    assert stt.requests() == []


def test_key_never_appears_in_errors_or_logs(stt, settings, caplog):
    """Every failure path with a distinctive (quoted, padded) key: exception texts and every log record."""
    caplog.set_level(logging.DEBUG)
    settings.ELEVENLABS_API_KEY = f'  "{KEY}" '
    errors: list[ElevenLabsError] = []

    def attempt(**knobs: Any) -> None:
        stt.config.update(knobs)
        try:
            transcribe()
        except ElevenLabsError as exc:
            errors.append(exc)
        stt.config.update({f.name: getattr(DEFAULT_CONFIG, f.name) for f in dataclasses.fields(DEFAULT_CONFIG)})

    attempt(api_key="another-key")
    attempt(burst_429=1)
    attempt(fail_call_ids=[CALL["call_id"]])
    attempt(missing_words_call_ids=[CALL["call_id"]])
    settings.ELEVENLABS_TIMEOUT_SECONDS = 0.2
    attempt(latency_ms=800)
    settings.ELEVENLABS_TIMEOUT_SECONDS = 30.0
    settings.ELEVENLABS_BASE_URL = f"http://127.0.0.1:{free_port()}"
    attempt()
    assert [type(e).__name__ for e in errors] == [
        "ElevenLabsPermanentError",
        "ElevenLabsRateLimited",
        "ElevenLabsTransientError",
        "ElevenLabsPermanentError",
        "ElevenLabsTransientError",
        "ElevenLabsTransientError",
    ]
    for exc in errors:
        assert_no_secret(exc)
    assert_logs_clean(caplog)
    assert any(r.name == "transcriptions.elevenlabs" and r.levelno == logging.WARNING for r in caplog.records)


# --- Vendor answers the simulator never gives (a stub server) -------------------------------------------


class _Stub(ThreadingHTTPServer):
    daemon_threads = True
    answer: tuple[int, dict[str, str], bytes] = (200, {}, b"{}")


class _StubHandler(BaseHTTPRequestHandler):
    server: _Stub

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, body = self.server.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stub(settings) -> Iterator[_Stub]:
    server = _Stub(("127.0.0.1", 0), _StubHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    settings.ELEVENLABS_BASE_URL = f"http://127.0.0.1:{server.server_address[1]}"
    settings.ELEVENLABS_API_KEY = KEY
    settings.ELEVENLABS_TIMEOUT_SECONDS = 10.0
    settings.TRANSCRIPTION_UPLOAD_AUDIO = False
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def answer(stub: _Stub, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    stub.answer = (status, {"Content-Type": "application/json", **(headers or {})}, raw)


def test_audio_events_are_dropped_and_words_normalized(stub):
    answer(
        stub,
        200,
        {
            "language_code": "fr",
            "language_probability": 1,
            "text": "(rire) Bonjour.",
            "transcription_id": "tr_1",
            "audio_duration_secs": 3,
            "additional_formats": None,
            "words": [
                {"text": "(rire)", "start": 0.0, "end": 0.5, "type": "audio_event", "speaker_id": "speaker_1"},
                {"text": " ", "start": 0.5, "end": 0.6, "type": "spacing", "speaker_id": "speaker_1", "logprob": 0},
                {
                    "text": "Bonjour.",
                    "start": 1,
                    "end": 1.4,
                    "type": "word",
                    "speaker_id": "speaker_0",
                    "logprob": -0.2,
                    "characters": None,
                },
            ],
        },
    )
    result = transcribe()
    assert result.words == [
        {"text": " ", "start": 0.5, "end": 0.6, "type": "spacing", "speaker_id": "speaker_1", "logprob": 0.0},
        {"text": "Bonjour.", "start": 1.0, "end": 1.4, "type": "word", "speaker_id": "speaker_0", "logprob": -0.2},
    ]
    assert (result.language_probability, result.audio_duration_secs) == (1.0, 3.0)
    assert isinstance(result.audio_duration_secs, float)


@pytest.mark.parametrize(
    "body,field",
    [
        ({"text": "x", "words": "nope"}, "'words'"),
        ({"text": "x", "words": [{"text": "a", "end": 1, "type": "word"}]}, "words[0].start"),
        (
            {"text": "x", "words": [{"text": "a", "start": 0, "end": 1, "type": "word"}, {"start": 1, "end": 2}]},
            "words[1].text",
        ),
        ({"text": "x", "words": [{"text": "a", "start": 0, "end": 1, "type": "mystery"}]}, "words[0].type"),
        ({"text": 3, "words": []}, "'text'"),
        (["not", "an", "object"], "object"),
        (b"<html>oops</html>", "not JSON"),
    ],
)
def test_bodies_breaking_the_contract_are_permanent(stub, body, field):
    answer(stub, 200, body)
    with pytest.raises(ElevenLabsPermanentError) as excinfo:
        transcribe()
    assert field in str(excinfo.value)


def test_retry_after_as_an_http_date_and_5xx_detail(stub):
    when = datetime.now(UTC) + timedelta(seconds=30)
    answer(
        stub,
        503,
        {"detail": {"status": "service_unavailable", "message": "Down for maintenance"}},
        {"Retry-After": format_datetime(when, usegmt=True)},
    )
    with pytest.raises(ElevenLabsTransientError) as excinfo:
        transcribe()
    assert excinfo.value.status == 503 and "Down for maintenance" in str(excinfo.value)
    assert 20 <= excinfo.value.retry_after <= 31
    answer(
        stub,
        429,
        {"detail": {"status": "too_many_concurrent_requests", "message": "slow down"}},
        {"Retry-After": "2.5"},
    )
    with pytest.raises(ElevenLabsRateLimited) as excinfo:
        transcribe()
    assert (excinfo.value.retry_after, excinfo.value.reason) == (2.5, "too_many_concurrent_requests")


@pytest.mark.parametrize("status", [302, 400, 403, 404, 413])
def test_other_statuses_are_permanent(stub, status):
    answer(stub, status, {"detail": "nope"})
    with pytest.raises(ElevenLabsPermanentError) as excinfo:
        transcribe()
    assert excinfo.value.status == status and not isinstance(excinfo.value, ElevenLabsTransientError)


def test_a_vendor_message_echoing_the_key_is_scrubbed(stub, caplog):
    answer(stub, 401, {"detail": {"status": "invalid_api_key", "message": f"Invalid API key: {KEY}"}})
    with pytest.raises(ElevenLabsPermanentError) as excinfo:
        transcribe()
    assert "***" in str(excinfo.value)
    assert_no_secret(excinfo.value)
    assert_logs_clean(caplog)
