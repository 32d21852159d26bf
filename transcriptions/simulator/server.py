"""The speech-to-text simulator: a threaded HTTP server serving ElevenLabs Scribe's contract
(../shared/speech-and-llm.md sections 1 and 3). Transcripts come from ``transcriptions.simulator.script``.

Endpoints:

- ``POST /v1/speech-to-text`` (``multipart/form-data``, parsed with the stdlib ``email`` parser): the
  recording is identified by ``source_url`` or by the uploaded ``file``'s name (``<call_id>.mp3``).
- ``GET /recordings/<call_id>.mp3``: a few hundred fake bytes, so upload mode can download recordings here.
- ``GET/POST /__sim__/config``: the knobs; ``GET/DELETE /__sim__/requests``: the request log;
  ``GET /__sim__/truth/<call_id>``: what the call holds (``script.truth_for``).

Knobs (``SttSimulatorConfig``, from ``STT_SIM_*`` variables, command-line flags or ``POST /__sim__/config``):
latency (fixed per request, plus per audio minute), ``fail_rate`` (503), ``fail_call_ids`` (always 500),
``burst_429`` (the next N requests answer 429 ``system_busy`` with ``Retry-After: 1``), ``concurrency_limit``
(a request arriving while that many are being processed answers 429 ``too_many_concurrent_requests``),
``api_key`` (a wrong or missing ``xi-api-key`` answers 401), ``missing_words_call_ids`` (200 without
``words``) and ``pii_call_ids`` (the client says an e-mail, a phone number, a NIR, an IBAN and a card number aloud: see
``script.personal_data``). Order of checks: auth, burst, concurrency, form validation (422), latency, failures,
transcript.

The request log records, for each non-admin request: ``method``, ``path``, ``call_id``, ``fields`` (form
fields; an uploaded file as ``{"filename", "size", "content_type"}``; never the key), ``status``, ``detail_status``
(the 429/5xx ``detail.status``), ``start``/``end`` (``time.time()``) and, for speech-to-text requests,
``in_flight``: the speech-to-text requests in flight when it arrived, itself included (rejected ones too).
``max_in_flight()``, ``rejected()``, ``in_flight_timeline()`` and ``average_in_flight()`` summarize it::

    with SttSimulator(SttSimulatorConfig(latency_ms=200, concurrency_limit=4)) as sim:
        settings.ELEVENLABS_BASE_URL = sim.url
        ...
        sim.max_in_flight(), sim.rejected()  # 4, {"too_many_concurrent_requests": 0, "system_busy": 0}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from email import policy
from email.parser import BytesParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import orjson

from transcriptions.simulator import script

logger = logging.getLogger(__name__)

ENV_VARS: dict[str, str] = {
    "seed": "STT_SIM_SEED",
    "crm_seed": "STT_SIM_CRM_SEED",
    "latency_ms": "STT_SIM_LATENCY_MS",
    "latency_ms_per_audio_minute": "STT_SIM_LATENCY_MS_PER_AUDIO_MINUTE",
    "fail_rate": "STT_SIM_FAIL_RATE",
    "fail_call_ids": "STT_SIM_FAIL_CALL_IDS",
    "burst_429": "STT_SIM_BURST_429",
    "concurrency_limit": "STT_SIM_CONCURRENCY_LIMIT",
    "api_key": "STT_SIM_API_KEY",
    "missing_words_call_ids": "STT_SIM_MISSING_WORDS_CALL_IDS",
    "pii_call_ids": "STT_SIM_PII_CALL_IDS",
}
STT_PATH = "/v1/speech-to-text"
RECORDINGS_PREFIX = "/recordings/"
TRUTH_PREFIX = "/__sim__/truth/"
RETRY_AFTER_SECONDS = 1
TOO_MANY_CONCURRENT = "too_many_concurrent_requests"
SYSTEM_BUSY = "system_busy"
FAKE_AUDIO_BYTES = 512
_POLL_INTERVAL_S = 0.05  # how soon stop() takes effect
_TIMESTAMPS_GRANULARITIES = frozenset({"none", "word", "character"})
_Validator = Callable[[str, Any], Any]


@dataclasses.dataclass
class SttSimulatorConfig:
    """The simulator's knobs. Mutable: a running simulator reads them at each request (``burst_429`` counts
    down as 429s are served)."""

    seed: int = script.DEFAULT_SEED
    crm_seed: int = script.DEFAULT_CRM_SEED
    latency_ms: int = 0
    latency_ms_per_audio_minute: float = 0.0
    fail_rate: float = 0.0
    fail_call_ids: frozenset[str] = frozenset()
    burst_429: int = 0
    concurrency_limit: int | None = None  # None: no limit
    api_key: str | None = None  # None: no auth
    missing_words_call_ids: frozenset[str] = frozenset()
    pii_call_ids: frozenset[str] = frozenset()  # calls whose client says personal data aloud

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SttSimulatorConfig:
        """Defaults overridden by the ``STT_SIM_*`` variables of ``environ`` (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        config = cls()
        config.update_from_strings({knob: env[var] for knob, var in ENV_VARS.items() if env.get(var, "").strip()})
        return config

    def update_from_strings(self, values: Mapping[str, str]) -> None:
        """Set knobs from their text form (environment, command line); ValueError names the bad knob."""
        parsed: dict[str, Any] = {}
        for knob, text in values.items():
            parser = _TEXT_PARSERS.get(knob)
            if parser is None:
                raise ValueError(f"unknown knob {knob!r}")
            try:
                parsed[knob] = parser(text.strip())
            except ValueError as exc:
                raise ValueError(f"{knob} ({ENV_VARS[knob]}): invalid value {text!r}") from exc
        self.update(parsed)

    def update(self, values: Mapping[str, Any]) -> None:
        """Set knobs from JSON-like values (id sets as lists of strings), all or none."""
        checked = {knob: _check_knob(knob, value) for knob, value in values.items()}
        for knob, value in checked.items():
            setattr(self, knob, value)

    def to_dict(self) -> dict[str, Any]:
        """The knobs as JSON values (id sets sorted; the API key shown only as set or not)."""
        knobs = dataclasses.asdict(self)
        knobs["fail_call_ids"] = sorted(self.fail_call_ids)
        knobs["missing_words_call_ids"] = sorted(self.missing_words_call_ids)
        knobs["pii_call_ids"] = sorted(self.pii_call_ids)
        knobs["api_key"] = "(set)" if self.api_key else None
        return knobs


def _split_csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("", "none", "0") else int(text)


_TEXT_PARSERS: dict[str, Callable[[str], Any]] = {
    "seed": int,
    "crm_seed": int,
    "latency_ms": int,
    "latency_ms_per_audio_minute": float,
    "fail_rate": float,
    "fail_call_ids": _split_csv,
    "burst_429": int,
    "concurrency_limit": _optional_int,
    "api_key": lambda text: text or None,
    "missing_words_call_ids": _split_csv,
    "pii_call_ids": _split_csv,
}


def _integer(minimum: int | None = None, *, optional: bool = False) -> _Validator:
    def check(knob: str, value: Any) -> int | None:
        if value is None and optional:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{knob} must be an integer{' or null' if optional else ''}")
        if minimum is not None and value < minimum:
            raise ValueError(f"{knob} must be >= {minimum}")
        return value

    return check


def _non_negative(knob: str, value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{knob} must be a number >= 0")
    return float(value)


def _rate(knob: str, value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"{knob} must be a number between 0 and 1")
    return float(value)


def _ids(knob: str, value: Any) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise ValueError(f"{knob} must be a list of call ids")
    if not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"{knob} must be a list of non-empty strings")
    return frozenset(value)


def _api_key(knob: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{knob} must be a string or null")
    return value or None


_VALIDATORS: dict[str, _Validator] = {
    "seed": _integer(),
    "crm_seed": _integer(),
    "latency_ms": _integer(0),
    "latency_ms_per_audio_minute": _non_negative,
    "fail_rate": _rate,
    "fail_call_ids": _ids,
    "burst_429": _integer(0),
    "concurrency_limit": _integer(1, optional=True),
    "api_key": _api_key,
    "missing_words_call_ids": _ids,
    "pii_call_ids": _ids,
}


def _check_knob(knob: str, value: Any) -> Any:
    validator = _VALIDATORS.get(knob)
    if validator is None:
        raise ValueError(f"unknown knob {knob!r}")
    return validator(knob, value)


def fake_audio(call_id: str) -> bytes:
    """A few hundred deterministic bytes standing for the recording ``call_id`` (an ID3 header, then noise)."""
    header = b"ID3\x04\x00\x00\x00\x00\x00\x00"
    body = b"".join(hashlib.sha256(f"{call_id}|{n}".encode()).digest() for n in range(FAKE_AUDIO_BYTES // 32))
    return (header + body)[:FAKE_AUDIO_BYTES]


class _ApiError(Exception):
    """An answer other than 200: ``status`` with body ``{"detail": detail}``."""

    def __init__(self, status: HTTPStatus, detail: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


def _detail(status: str, message: str) -> dict[str, str]:
    return {"status": status, "message": message}


class _Server(ThreadingHTTPServer):
    """The HTTP server, with the state its handler threads share: log, in-flight counters, dice."""

    daemon_threads = True
    request_queue_size = 128  # bursts of parallel clients must queue, not be refused

    def __init__(self, address: tuple[str, int], simulator: SttSimulator) -> None:
        self.simulator = simulator
        self._lock = threading.Lock()
        self._log: list[dict[str, Any]] = []
        self._in_flight = 0  # speech-to-text requests from arrival to answer, rejected ones included
        self._admitted = 0  # those admitted past the concurrency limit
        self._rejected = {TOO_MANY_CONCURRENT: 0, SYSTEM_BUSY: 0}
        self._fail_rng = random.Random(simulator.config.seed)
        super().__init__(address, _Handler)

    # Concurrency accounting -------------------------------------------------------------------------

    def arrive(self) -> int:
        with self._lock:
            self._in_flight += 1
            return self._in_flight

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def take_burst(self) -> bool:
        """Whether this request is one of the ``burst_429`` ones (and count it down)."""
        config = self.simulator.config
        with self._lock:
            if config.burst_429 > 0:
                config.burst_429 -= 1
                self._rejected[SYSTEM_BUSY] += 1
                return True
        return False

    def admit(self, limit: int | None) -> bool:
        with self._lock:
            if limit is not None and self._admitted >= limit:
                self._rejected[TOO_MANY_CONCURRENT] += 1
                return False
            self._admitted += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._admitted -= 1

    def random_failure(self, fail_rate: float) -> bool:
        if fail_rate <= 0:
            return False
        with self._lock:
            return self._fail_rng.random() < fail_rate

    # Request log --------------------------------------------------------------------------------------

    def record_request(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._log.append(entry)

    def recorded_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry, fields=dict(entry["fields"])) for entry in self._log]

    def rejected(self) -> dict[str, int]:
        with self._lock:
            return dict(self._rejected)

    def current_in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()
            self._rejected = dict.fromkeys(self._rejected, 0)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("STT simulator: connection error with %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0: one request per connection, so nothing is served after stop() on a kept-alive socket.
    server_version = "SttSimulator/1.0"

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("STT simulator: %s - %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        is_stt = path == STT_PATH
        in_flight = self.server.arrive() if is_stt else None
        started = time.time()
        try:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if path.startswith("/__sim__/"):
                status, payload, headers = self._admin(path, body)
            else:
                entry: dict[str, Any] = {
                    "method": self.command,
                    "path": path,
                    "call_id": None,
                    "fields": {},
                    "status": 0,
                    "detail_status": None,
                    "start": started,
                    "end": 0.0,
                    "in_flight": in_flight,
                }
                if path.startswith(RECORDINGS_PREFIX) and self.command == "GET":
                    status, headers, payload = self._recording(path, entry)
                elif is_stt:
                    status, headers, payload = self._speech_to_text(body, entry)
                else:
                    status, headers, payload = HTTPStatus.NOT_FOUND, {}, {"detail": "Not Found"}
                entry["status"], entry["end"] = int(status), time.time()
                self.server.record_request(entry)
        finally:
            if is_stt:
                self.server.leave()  # before answering: a client may send its next request at once
        self._send(status, payload, headers)

    def _recording(self, path: str, entry: dict[str, Any]) -> tuple[HTTPStatus, dict[str, str], Any]:
        name = unquote(path.removeprefix(RECORDINGS_PREFIX))
        if not name.endswith(".mp3") or "/" in name or len(name) <= len(".mp3"):
            return HTTPStatus.NOT_FOUND, {}, {"detail": "Not Found"}
        entry["call_id"] = name.removesuffix(".mp3")
        return HTTPStatus.OK, {"Content-Type": "audio/mpeg"}, fake_audio(entry["call_id"])

    def _speech_to_text(self, body: bytes, entry: dict[str, Any]) -> tuple[HTTPStatus, dict[str, str], Any]:
        config = dataclasses.replace(self.server.simulator.config)  # this request's knobs, whatever changes
        admitted = False
        try:
            if self.command != "POST":
                raise _ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "Method Not Allowed")
            if config.api_key is not None and self.headers.get("xi-api-key") != config.api_key:
                raise _ApiError(HTTPStatus.UNAUTHORIZED, _detail("invalid_api_key", "Invalid API key"))
            if self.server.take_burst():
                raise _ApiError(
                    HTTPStatus.TOO_MANY_REQUESTS,
                    _detail(SYSTEM_BUSY, "The system is experiencing heavy traffic, please retry later."),
                    {"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            admitted = self.server.admit(config.concurrency_limit)
            if not admitted:
                raise _ApiError(
                    HTTPStatus.TOO_MANY_REQUESTS,
                    _detail(
                        TOO_MANY_CONCURRENT,
                        f"Too many concurrent requests: the limit of this account is {config.concurrency_limit}.",
                    ),
                )
            fields, upload = _parse_multipart(self.headers.get("Content-Type", ""), body)
            entry["fields"] = {**fields, **({"file": upload} if upload else {})}
            call_id = _validate(fields, upload)
            entry["call_id"] = call_id
            duration = script.recording_duration(call_id, crm_seed=config.crm_seed)
            delay_ms = config.latency_ms + config.latency_ms_per_audio_minute * duration / 60
            if delay_ms > 0:
                time.sleep(delay_ms / 1000)
            if call_id in config.fail_call_ids:
                raise _ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, _detail("internal_error", "Internal server error"))
            if self.server.random_failure(config.fail_rate):
                raise _ApiError(
                    HTTPStatus.SERVICE_UNAVAILABLE, _detail("service_unavailable", "Service temporarily unavailable")
                )
            transcript = script.transcript_for(
                call_id, seed=config.seed, crm_seed=config.crm_seed, pii=call_id in config.pii_call_ids
            )
            if call_id in config.missing_words_call_ids:
                del transcript["words"]
            return HTTPStatus.OK, {}, transcript
        except _ApiError as exc:
            if isinstance(exc.detail, dict):
                entry["detail_status"] = exc.detail.get("status")
            return exc.status, exc.headers, {"detail": exc.detail}
        except Exception:
            logger.exception("STT simulator: error serving %s", self.path)
            return HTTPStatus.INTERNAL_SERVER_ERROR, {}, {"detail": _detail("internal_error", "Simulator error")}
        finally:
            if admitted:
                self.server.release()

    def _admin(self, path: str, body: bytes) -> tuple[HTTPStatus, Any, dict[str, str]]:
        """The ``/__sim__/`` endpoints: knobs, request log, truth (no auth, no latency, not logged)."""
        simulator = self.server.simulator
        if path == "/__sim__/requests":
            if self.command == "GET":
                return (
                    HTTPStatus.OK,
                    {
                        "requests": simulator.requests(),
                        "rejected": simulator.rejected(),
                        "max_in_flight": simulator.max_in_flight(),
                    },
                    {},
                )
            if self.command == "DELETE":
                simulator.clear_requests()
                return HTTPStatus.OK, {"success": True}, {}
        elif path == "/__sim__/config":
            if self.command == "GET":
                return HTTPStatus.OK, simulator.config.to_dict(), {}
            if self.command == "POST":
                try:
                    values = json.loads(body or b"{}")
                    if not isinstance(values, dict):
                        raise ValueError("expected a JSON object of knobs")
                    simulator.config.update(values)
                except ValueError as exc:  # json.JSONDecodeError is a ValueError
                    return HTTPStatus.BAD_REQUEST, {"detail": str(exc)}, {}
                return HTTPStatus.OK, simulator.config.to_dict(), {}
        elif path.startswith(TRUTH_PREFIX):
            call_id = unquote(path.removeprefix(TRUTH_PREFIX))
            if not call_id or "/" in call_id:
                return HTTPStatus.NOT_FOUND, {"detail": "Not Found"}, {}
            if self.command == "GET":
                config = simulator.config
                truth = script.truth_for(
                    call_id, seed=config.seed, crm_seed=config.crm_seed, pii=call_id in config.pii_call_ids
                )
                return HTTPStatus.OK, truth, {}
        else:
            return HTTPStatus.NOT_FOUND, {"detail": "Not Found"}, {}
        return HTTPStatus.METHOD_NOT_ALLOWED, {"detail": "Method Not Allowed"}, {}

    def _send(self, status: HTTPStatus, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        headers = dict(headers or {})
        if isinstance(payload, bytes):
            body = payload
        else:
            body = orjson.dumps(payload)  # a long call's transcript is big: the fast encoder
            headers.setdefault("Content-Type", "application/json")
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. its read timeout)
            logger.debug("STT simulator: client went away before the answer to %s", self.path)


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, Any] | None]:
    """``(text fields, uploaded file summary)`` of a ``multipart/form-data`` body; 422 when it is not one."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise _ApiError(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            [{"loc": ["body"], "msg": "Expected a multipart/form-data body", "type": "value_error"}],
        )
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise _ApiError(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            [{"loc": ["body"], "msg": "Unreadable multipart body", "type": "value_error"}],
        )
    fields: dict[str, str] = {}
    upload: dict[str, Any] | None = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        content = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None or name == "file":
            upload = {"name": name, "filename": filename, "size": len(content), "content_type": part.get_content_type()}
        else:
            fields[name] = content.decode("utf-8", errors="replace")
    return fields, upload


def _unprocessable(field: str, message: str, kind: str = "value_error") -> _ApiError:
    return _ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, [{"loc": ["body", field], "msg": message, "type": kind}])


def _validate(fields: Mapping[str, str], upload: Mapping[str, Any] | None) -> str:
    """The call id the request is about, after the checks the vendor does (422 otherwise)."""
    if not fields.get("model_id", "").strip():
        raise _unprocessable("model_id", "Field required", "missing")
    source_url = fields.get("source_url", "").strip()
    if upload is not None and source_url:
        raise _unprocessable("file", "Provide either file or source_url, not both")
    if upload is None and not source_url:
        raise _unprocessable("file", "Either file or source_url must be provided", "missing")
    for flag in ("diarize", "tag_audio_events"):
        if fields.get(flag, "false").lower() not in ("true", "false"):
            raise _unprocessable(flag, "Input should be a valid boolean", "bool_parsing")
    if "num_speakers" in fields:
        try:
            speakers = int(fields["num_speakers"])
        except ValueError:
            raise _unprocessable("num_speakers", "Input should be a valid integer", "int_parsing") from None
        if not 1 <= speakers <= 32:
            raise _unprocessable("num_speakers", "Input should be between 1 and 32")
    if fields.get("timestamps_granularity", "word") not in _TIMESTAMPS_GRANULARITIES:
        raise _unprocessable("timestamps_granularity", "Input should be 'none', 'word' or 'character'", "enum")
    if upload is not None:
        if not upload["size"]:
            raise _unprocessable("file", "The uploaded file is empty")
        reference = upload["filename"] or ""
    else:
        if not source_url.startswith(("http://", "https://")):
            raise _unprocessable("source_url", "Input should be a valid URL", "url_parsing")
        reference = source_url
    call_id = script.call_id_from_recording(reference)
    if not call_id:
        raise _unprocessable("file" if upload is not None else "source_url", "Cannot identify the recording")
    return call_id


class SttSimulator:
    """The simulator in-process: binds on construction (port 0 picks a free port), serves after ``start()``."""

    def __init__(self, config: SttSimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config if config is not None else SttSimulatorConfig()
        self._server = _Server((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def recording_url(self, call_id: str) -> str:
        """Where this simulator serves the fake audio of ``call_id`` (for upload mode)."""
        return f"{self.url}{RECORDINGS_PREFIX}{call_id}.mp3"

    def start(self) -> Self:
        """Serve in a background daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_S},
                name=f"stt-simulator-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; idempotent."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def requests(self) -> list[dict[str, Any]]:
        """The requests answered so far (copies, admin endpoints excluded), in order of answer."""
        return self._server.recorded_requests()

    def clear_requests(self) -> None:
        """Empty the request log and the rejection counters."""
        self._server.clear_requests()

    def rejected(self) -> dict[str, int]:
        """429s served since the last clear, by ``detail.status``."""
        return self._server.rejected()

    def current_in_flight(self) -> int:
        """Speech-to-text requests being served right now (arrived, not yet answered)."""
        return self._server.current_in_flight()

    def max_in_flight(self) -> int:
        """The most speech-to-text requests in flight at once (rejected ones included) in the log."""
        return max((entry["in_flight"] for entry in self.requests() if entry["in_flight"] is not None), default=0)

    def in_flight_timeline(self, *, admitted_only: bool = False) -> list[tuple[float, int]]:
        """``(time, requests in flight just after it)`` at each start and end of a logged speech-to-text request;
        ``admitted_only`` leaves out the concurrency-limit rejections."""
        events: list[tuple[float, int]] = []
        for entry in self.requests():
            if entry["in_flight"] is None:
                continue
            if admitted_only and entry["detail_status"] == TOO_MANY_CONCURRENT:
                continue
            events += [(entry["start"], 1), (entry["end"], -1)]
        events.sort(key=lambda event: (event[0], event[1]))  # an end before a start at the same instant
        timeline: list[tuple[float, int]] = []
        current = 0
        for moment, delta in events:
            current += delta
            timeline.append((moment, current))
        return timeline

    def average_in_flight(self, *, admitted_only: bool = True) -> float:
        """Time-weighted mean of requests in flight between the first logged start and the last end."""
        timeline = self.in_flight_timeline(admitted_only=admitted_only)
        if len(timeline) < 2 or timeline[-1][0] <= timeline[0][0]:
            return 0.0
        area = sum(count * (timeline[i + 1][0] - moment) for i, (moment, count) in enumerate(timeline[:-1]))
        return area / (timeline[-1][0] - timeline[0][0])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
