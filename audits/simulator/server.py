"""The LLM simulator: a threaded HTTP server speaking OpenAI-compatible Chat Completions (speech-and-llm.md §3).

Serves ``POST /v1/chat/completions`` (answers from the deterministic lexical judge of
``audits.simulator.judge``; ``response_format`` json_schema / json_object, ``tools``, ``stream`` with
``stream_options.include_usage``) and ``GET /v1/models``. ``usage`` is estimated as characters / 4 of the
request's messages (content plus tool calls) and of the answer, with ``prompt_tokens_details.cached_tokens``
as OpenAI's prompt caching reports it: the longest prefix of whole messages (same model, tools and response
format) already sent in an earlier request (a bounded in-process LRU of prefix hashes, ``PROMPT_CACHE_ENTRIES``),
counted only from ``PROMPT_CACHE_MIN_TOKENS`` tokens and rounded down to a multiple of
``PROMPT_CACHE_INCREMENT``. Without auth and not logged:
``GET/POST /__sim__/config`` (the knobs) and ``GET/DELETE /__sim__/requests`` (the log: method, path, headers
without ``Authorization``, ``body`` the request JSON, status, ``start``/``end`` epoch seconds, ``stream``,
``cancelled`` when a stream's client went away before its end, and a ``response`` summary with kind, finish
reason and usage). A request is logged just before its response is sent, so a client that has its answer finds
it in the log; a stream is logged when it starts (``end`` None) and completed when it ends::

    with LlmSimulator(SimulatorConfig(no_json_schema=True)) as sim:
        OpenAI(base_url=f"{sim.url}/v1", api_key="x").chat.completions.create(...)
        sim.config.burst_429 = 2  # the next two requests answer 429 with Retry-After: 1
        sim.requests()

Knobs (``SimulatorConfig``; environment ``LLM_SIM_<KNOB>``; runtime ``POST /__sim__/config``): ``seed``,
``latency_ms``, ``stream_token_delay_ms``, ``fail_rate`` (500), ``burst_429`` and ``bad_json_next`` (counters:
the next N requests / structured answers), ``fabricate_rate``, ``alter_numbers_rate``, ``negate_rate`` (per
quote), ``dodge_rate`` (per point: ``not_applicable`` without evidence, whatever the point), ``wrong_speaker_rate``
(per point: ``pass`` quoting the other party's words — the client's for an agent point — claimed as the point's
speaker), ``bad_json_rate``, ``length_rate``, ``refusal_rate``, ``content_filter_rate``; quirks ``no_json_schema``
(400 on a json_schema response format), ``args_as_object``, ``no_tool_ids``, ``fenced_json``, ``no_usage``;
``api_key`` (a different bearer → 401), ``model``, and ``wrong_point`` (a text: every control point whose question
contains it, case-insensitively, is answered ``fail`` without quotes whatever the call says — a model
systematically wrong on one point, for trust and calibration). The answer's dice are seeded by the seed and
the request's content, so the same request gets the same answer whatever the order of requests; ``fail_rate``
draws from one seeded sequence per server, so a retried request may succeed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import select
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from audits.simulator import judge

logger = logging.getLogger(__name__)

_RATES = (
    "fail_rate",
    "fabricate_rate",
    "alter_numbers_rate",
    "negate_rate",
    "dodge_rate",
    "wrong_speaker_rate",
    "bad_json_rate",
    "length_rate",
    "refusal_rate",
    "content_filter_rate",
)
_COUNTS = ("latency_ms", "stream_token_delay_ms", "burst_429", "bad_json_next")
_QUIRKS = ("no_json_schema", "args_as_object", "no_tool_ids", "fenced_json", "no_usage")
ENV_VARS: dict[str, str] = {
    knob: f"LLM_SIM_{knob.upper()}" for knob in ("seed", *_COUNTS, *_RATES, *_QUIRKS, "api_key", "model", "wrong_point")
}
CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
RETRY_AFTER_SECONDS = 1
CHARS_PER_TOKEN = 4
# OpenAI's prompt caching: prefixes from 1024 tokens, cached in increments of 128 tokens.
PROMPT_CACHE_MIN_TOKENS = 1024
PROMPT_CACHE_INCREMENT = 128
PROMPT_CACHE_ENTRIES = 20_000  # prefix hashes remembered (least recently used forgotten first)
_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "cookie", "proxy-authorization"})
_POLL_INTERVAL_S = 0.05
_Response = tuple[HTTPStatus, Mapping[str, Any], Mapping[str, str]]


@dataclasses.dataclass
class SimulatorConfig:
    """The simulator's knobs. Mutable: a running simulator reads them at each request."""

    seed: int = 42
    latency_ms: int = 0
    stream_token_delay_ms: int = 0
    fail_rate: float = 0.0
    burst_429: int = 0
    bad_json_next: int = 0
    fabricate_rate: float = 0.0
    alter_numbers_rate: float = 0.0
    negate_rate: float = 0.0
    dodge_rate: float = 0.0
    wrong_speaker_rate: float = 0.0
    bad_json_rate: float = 0.0
    length_rate: float = 0.0
    refusal_rate: float = 0.0
    content_filter_rate: float = 0.0
    no_json_schema: bool = False
    args_as_object: bool = False
    no_tool_ids: bool = False
    fenced_json: bool = False
    no_usage: bool = False
    api_key: str | None = None
    model: str = "llm-simulator"
    wrong_point: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SimulatorConfig:
        """Defaults overridden by the ``LLM_SIM_*`` variables of ``environ`` (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        config = cls()
        config.update_from_strings({knob: env[var] for knob, var in ENV_VARS.items() if env.get(var, "").strip()})
        return config

    def update_from_strings(self, values: Mapping[str, str]) -> None:
        """Set knobs from their text form (environment, command line); ValueError names the bad knob."""
        parsed: dict[str, Any] = {}
        for knob, text in values.items():
            if knob not in ENV_VARS:
                raise ValueError(f"unknown knob {knob!r}")
            try:
                parsed[knob] = _parse_text(knob, text.strip())
            except ValueError as exc:
                raise ValueError(f"{knob} ({ENV_VARS[knob]}): invalid value {text!r}") from exc
        self.update(parsed)

    def update(self, values: Mapping[str, Any]) -> None:
        """Set knobs from JSON-like values, all or none."""
        checked = {knob: _check_knob(knob, value) for knob, value in values.items()}
        for knob, value in checked.items():
            setattr(self, knob, value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _parse_text(knob: str, text: str) -> Any:
    if knob in _QUIRKS:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("expected true or false")
    if knob in _RATES:
        return float(text)
    if knob in ("api_key", "model"):
        return text or None
    if knob == "wrong_point":
        return text
    return int(text)


def _check_knob(knob: str, value: Any) -> Any:
    """The validated value of one knob; ValueError with a readable message otherwise."""
    if knob not in ENV_VARS:
        raise ValueError(f"unknown knob {knob!r}")
    if knob in _QUIRKS:
        if not isinstance(value, bool):
            raise ValueError(f"{knob} must be true or false")
        return value
    if knob in _RATES:
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ValueError(f"{knob} must be a number between 0 and 1")
        return float(value)
    if knob == "api_key":
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{knob} must be a string or null")
        return value or None
    if knob == "wrong_point":
        if not isinstance(value, str):
            raise ValueError(f"{knob} must be a string ('' : off)")
        return value.strip()
    if knob == "model":
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{knob} must be a non-empty string")
        return value.strip()
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{knob} must be an integer")
    if knob != "seed" and value < 0:
        raise ValueError(f"{knob} must be >= 0")
    return value


class _ApiError(Exception):
    def __init__(
        self,
        status: HTTPStatus,
        message: str,
        *,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        log_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.log_message = log_message or message
        self.payload = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        self.headers: dict[str, str] = dict(headers or {})


def message_chars(messages: Any) -> int:
    """Characters of the messages' contents and tool calls (the usage estimate's base)."""
    total = 0
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif content is not None:
            total += len(json.dumps(content, ensure_ascii=False))
        if message.get("tool_calls"):
            total += len(json.dumps(message["tool_calls"], ensure_ascii=False))
    return total


def _tokens(characters: int) -> int:
    return math.ceil(characters / CHARS_PER_TOKEN)


def prefix_hashes(body: Mapping[str, Any]) -> list[tuple[str, int]]:
    """``(hash, characters)`` of each prefix of whole messages of the request (the first message, the first two,
    ...), keyed by what else makes the prompt a provider caches: the model, the tools and the response format."""
    seed = json.dumps(
        [body.get("model"), body.get("tools"), body.get("response_format")], sort_keys=True, ensure_ascii=False
    )
    digest = hashlib.sha256(seed.encode())
    prefixes = []
    characters = 0
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        digest.update(json.dumps(message, sort_keys=True, ensure_ascii=False).encode())
        characters += message_chars([message])
        prefixes.append((digest.copy().hexdigest(), characters))
    return prefixes


def cached_tokens_of(cached_characters: int, prompt_tokens: int) -> int:
    """The cached tokens a provider reports for a cached prefix of ``cached_characters``: none below
    ``PROMPT_CACHE_MIN_TOKENS``, else rounded down to a multiple of ``PROMPT_CACHE_INCREMENT`` (at most the
    prompt's tokens)."""
    tokens = min(_tokens(cached_characters), prompt_tokens)
    if tokens < PROMPT_CACHE_MIN_TOKENS:
        return 0
    return tokens - tokens % PROMPT_CACHE_INCREMENT


class _Server(ThreadingHTTPServer):
    """The HTTP server, with the state its handler threads share: the request log and the counters."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], simulator: LlmSimulator) -> None:
        self.simulator = simulator
        self._log: list[dict[str, Any]] = []
        self._log_lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self._fail_rng = random.Random(simulator.config.seed)
        self.in_flight = 0  # chat completion requests between arrival and answer
        self.max_in_flight = 0
        self._prompt_cache: OrderedDict[str, None] = OrderedDict()  # prefix hashes, least recently used first
        self._prompt_cache_lock = threading.Lock()
        super().__init__(address, _Handler)

    def prompt_cache(self, body: Mapping[str, Any]) -> int:
        """Characters of the longest prefix of whole messages of ``body`` seen in an earlier request; this
        request's prefixes are remembered for the next ones."""
        prefixes = prefix_hashes(body)
        cached = 0
        with self._prompt_cache_lock:
            for digest, characters in prefixes:
                if digest in self._prompt_cache:
                    cached = characters
            for digest, _ in prefixes:
                self._prompt_cache[digest] = None
                self._prompt_cache.move_to_end(digest)
            while len(self._prompt_cache) > PROMPT_CACHE_ENTRIES:
                self._prompt_cache.popitem(last=False)
        return cached

    def clear_prompt_cache(self) -> None:
        with self._prompt_cache_lock:
            self._prompt_cache.clear()

    def arrive(self) -> None:
        with self._counter_lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._counter_lock:
            self.in_flight -= 1

    def record_request(self, entry: dict[str, Any]) -> None:
        with self._log_lock:
            self._log.append(entry)

    def update_request(self, entry: dict[str, Any], **fields: Any) -> None:
        with self._log_lock:
            entry.update(fields)

    def recorded_requests(self) -> list[dict[str, Any]]:
        with self._log_lock:
            return json.loads(json.dumps(self._log))

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    def take(self, counter: str) -> bool:
        """Decrement the ``counter`` knob of the live config when positive; whether it was."""
        with self._counter_lock:
            config = self.simulator.config
            remaining = getattr(config, counter)
            if remaining > 0:
                setattr(config, counter, remaining - 1)
                return True
            return False

    def random_failure(self, fail_rate: float) -> bool:
        """A 500 at ``fail_rate`` (a seeded sequence, like the CRM simulator: a retry may succeed)."""
        if fail_rate <= 0:
            return False
        with self._counter_lock:
            return self._fail_rng.random() < fail_rate

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("LLM simulator: connection error with %s", client_address)


def _dice(config: SimulatorConfig, digest: str, *purpose: object) -> random.Random:
    return random.Random(f"{config.seed}|{digest}|{'|'.join(str(part) for part in purpose)}")


def _rolls(config: SimulatorConfig, rate: float, digest: str, *purpose: object) -> bool:
    return rate > 0 and _dice(config, digest, *purpose).random() < rate


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "LlmSimulator/1.0"  # HTTP/1.0: one request per connection; a stream ends when it closes

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("LLM simulator: %s - %s", self.address_string(), format % args)

    # --- dispatch ---------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        started = time.time()
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        if path.startswith("/__sim__/"):
            self._send_json(*self._admin(path, raw))
            return
        entry: dict[str, Any] = {
            "method": self.command,
            "path": path,
            "headers": {name: value for name, value in self.headers.items() if name.lower() not in _SECRET_HEADERS},
            "body": None,
            "start": started,
            "stream": False,
            "cancelled": False,
            "response": None,
        }
        try:
            entry["body"] = json.loads(raw) if raw else None
        except ValueError:
            entry["body"] = raw.decode(errors="replace")
        config = dataclasses.replace(self.server.simulator.config)  # this request's knobs, whatever changes
        self.server.arrive()
        try:
            response = self._api(config, path, entry)
        except _ApiError as exc:
            entry["response"] = {"kind": "error", "message": exc.log_message}
            response = (exc.status, exc.payload, exc.headers)
        except Exception:
            logger.exception("LLM simulator: error serving %s", self.path)
            entry["response"] = {"kind": "error", "message": "internal simulator error"}
            response = (
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": {"message": "Internal simulator error", "type": "server_error", "param": None, "code": None}},
                {},
            )
        finally:
            self.server.leave()
        if response is None:  # streamed: the entry was logged when the stream started and completed at its end
            return
        status, payload, headers = response
        entry.update(status=int(status), end=time.time())
        self.server.record_request(entry)  # before answering: a client that got its answer finds it logged
        self._send_json(status, payload, headers)

    def _api(self, config: SimulatorConfig, path: str, entry: dict[str, Any]) -> _Response | None:
        """The response to one contract request, or None when it was streamed. Raises _ApiError for errors."""
        if config.latency_ms:
            time.sleep(config.latency_ms / 1000)
        if path not in (CHAT_PATH, MODELS_PATH):
            raise _ApiError(HTTPStatus.NOT_FOUND, f"Unknown path {path}", code="not_found")
        if config.api_key is not None and self.headers.get("Authorization") != f"Bearer {config.api_key}":
            provided = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            # Echoes the key it got, as some servers do (clients must scrub it); the log does not keep it.
            raise _ApiError(
                HTTPStatus.UNAUTHORIZED,
                f"Incorrect API key provided: {provided}.",
                code="invalid_api_key",
                log_message="Incorrect API key provided.",
            )
        if path == MODELS_PATH:
            if self.command != "GET":
                raise _ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "Method not allowed")
            entry["response"] = {"kind": "models"}
            return (
                HTTPStatus.OK,
                {
                    "object": "list",
                    "data": [{"id": config.model, "object": "model", "created": 1767225600, "owned_by": "simulator"}],
                },
                {},
            )
        if self.command != "POST":
            raise _ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "Method not allowed")
        if self.server.take("burst_429"):
            raise _ApiError(
                HTTPStatus.TOO_MANY_REQUESTS,
                "Rate limit reached for requests. Please try again in 1s.",
                kind="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        body = entry["body"]
        if not isinstance(body, dict):
            raise _ApiError(HTTPStatus.BAD_REQUEST, "The request body must be a JSON object.")
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        if self.server.random_failure(config.fail_rate):
            raise _ApiError(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request.",
                kind="server_error",
            )
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(message, dict) and isinstance(message.get("role"), str) for message in messages)
        ):
            raise _ApiError(
                HTTPStatus.BAD_REQUEST, "'messages' must be a non-empty array of messages.", param="messages"
            )
        response_format = _as_dict(body.get("response_format"))
        if config.no_json_schema and response_format.get("type") == "json_schema":
            raise _ApiError(
                HTTPStatus.BAD_REQUEST,
                "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.",
                param="response_format",
                code="unsupported_parameter",
            )

        cached_chars = self.server.prompt_cache(body)
        message, finish_reason, kind = self._reply(config, body, response_format, digest)
        completion_chars = len(message.get("content") or message.get("refusal") or "") + (
            len(json.dumps(message["tool_calls"], ensure_ascii=False)) if message.get("tool_calls") else 0
        )
        prompt_tokens, completion_tokens = _tokens(message_chars(messages)), _tokens(completion_chars)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens_of(cached_chars, prompt_tokens)},
        }
        entry["response"] = {"kind": kind, "finish_reason": finish_reason, "usage": usage}
        model = str(body.get("model") or config.model)
        completion_id = f"chatcmpl-sim-{digest[:16]}"
        if body.get("stream"):
            options = _as_dict(body.get("stream_options"))
            include_usage = bool(options.get("include_usage")) and not config.no_usage
            entry.update(stream=True, status=int(HTTPStatus.OK), end=None)
            self.server.record_request(entry)
            completed = self._stream(
                config, completion_id, model, message, finish_reason, usage if include_usage else None
            )
            self.server.update_request(entry, cancelled=not completed, end=time.time())
            return None
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_simulator",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        }
        if not config.no_usage:
            payload["usage"] = usage
        return HTTPStatus.OK, payload, {}

    # --- answers ----------------------------------------------------------------------------------------------

    def _reply(
        self, config: SimulatorConfig, body: dict[str, Any], response_format: Mapping[str, Any], digest: str
    ) -> tuple[dict[str, Any], str, str]:
        """The assistant message, its finish reason and a kind for the log."""
        if _rolls(config, config.refusal_rate, digest, "refusal"):
            return (
                {
                    "role": "assistant",
                    "content": None,
                    "refusal": "Je suis désolé, je ne peux pas répondre à cette demande.",
                },
                "stop",
                "refusal",
            )
        if _rolls(config, config.content_filter_rate, digest, "content_filter"):
            return {"role": "assistant", "content": None}, "content_filter", "content_filter"
        reply = judge.respond(body)
        if reply.kind == "tool_calls":
            calls = []
            for number, (name, arguments) in enumerate(reply.tool_calls):
                call: dict[str, Any] = {
                    "id": f"call_{digest[:12]}_{number}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": arguments if config.args_as_object else json.dumps(arguments, ensure_ascii=False),
                    },
                }
                if config.no_tool_ids:
                    del call["id"]
                calls.append(call)
            return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls", "tool_calls"

        schema: dict[str, Any] = {}
        if response_format.get("type") == "json_schema":
            json_schema = response_format.get("json_schema")
            schema = json_schema.get("schema", {}) if isinstance(json_schema, dict) else {}
        if reply.kind == "answer" and reply.answer is not None:
            answer: Any = self._misbehave(config, reply, digest)
            if schema and "control_points" not in (schema.get("properties") or {}):
                answer = judge.fill_schema(schema)
            structured = True
        elif schema:
            answer, structured = judge.fill_schema(schema), True
        elif response_format.get("type") == "json_object":
            answer, structured = {"answer": reply.text}, True
        else:
            answer, structured = None, False

        if not structured:
            content = reply.text
        else:
            content = json.dumps(answer, ensure_ascii=False)
            if self.server.take("bad_json_next") or _rolls(config, config.bad_json_rate, digest, "bad_json"):
                content = _break_json(answer, _dice(config, digest, "bad_json_kind"))
            if config.fenced_json:
                content = (
                    f"Voici mon évaluation de l'étape :\n```json\n{content}\n```\n"
                    "Je reste disponible pour toute précision."
                )
        if _rolls(config, config.length_rate, digest, "length"):
            return {"role": "assistant", "content": content[: max(len(content) // 2, 1)]}, "length", "length"
        return {"role": "assistant", "content": content}, "stop", "answer" if structured else "chat"

    def _misbehave(self, config: SimulatorConfig, reply: judge.JudgeReply, digest: str) -> dict[str, Any]:
        """The judge's answer with the dodge / wrong-speaker knobs applied to its points and the fabricate /
        alter-numbers / negate knobs to its quotes."""
        answer = json.loads(json.dumps(reply.answer))
        points = {point.index: point for point in reply.points}
        items = answer.get("control_points", [])
        for position, item in enumerate(items):
            point = points.get(item.get("index"))
            if point is not None and config.wrong_point and config.wrong_point.lower() in point.question.lower():
                items[position] = judge.wrong_verdict(point)
                continue
            if point is not None and _rolls(config, config.dodge_rate, digest, "dodge", point.index):
                items[position] = judge.dodge(point)
                continue
            if point is not None and _rolls(config, config.wrong_speaker_rate, digest, "wrong_speaker", point.index):
                lie = judge.wrong_speaker(point, reply.transcript_text)
                if lie is not None:
                    items[position] = lie
                    continue
            for number, quote in enumerate(item.get("quotes", [])):
                where = (item.get("index"), number)
                if point is not None and _rolls(config, config.fabricate_rate, digest, "fabricate", *where):
                    quote["text"] = judge.fabricate_quote(
                        point, reply.transcript_text, _dice(config, digest, "fabricated", *where)
                    )
                    quote["speaker"] = "agent"
                    continue
                if _rolls(config, config.alter_numbers_rate, digest, "alter", *where):
                    altered = judge.alter_numbers(quote["text"], _dice(config, digest, "altered", *where))
                    if altered is not None:
                        quote["text"] = altered
                if _rolls(config, config.negate_rate, digest, "negate", *where):
                    flipped = judge.flip_negation(quote["text"])
                    if flipped is not None:
                        quote["text"] = flipped
        return answer

    # --- responses --------------------------------------------------------------------------------------------

    def _stream(
        self,
        config: SimulatorConfig,
        completion_id: str,
        model: str,
        message: Mapping[str, Any],
        finish_reason: str,
        usage: dict[str, Any] | None,
    ) -> bool:
        """Send the answer as SSE chunks; False when the client went away before the end."""
        self.close_connection = True
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_simulator",
                "choices": choices,
                **extra,
            }

        events: list[tuple[bool, dict[str, Any] | str]] = [
            (False, chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
        ]
        content = message.get("content") or message.get("refusal") or ""
        field = "content" if message.get("content") else "refusal"
        for piece in _pieces(content):
            events.append((True, chunk([{"index": 0, "delta": {field: piece}, "finish_reason": None}])))
        if message.get("tool_calls"):
            calls = [dict(call, index=number) for number, call in enumerate(message["tool_calls"])]
            events.append((False, chunk([{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}])))
        events.append((False, chunk([{"index": 0, "delta": {}, "finish_reason": finish_reason}])))
        if usage is not None:
            events.append((False, chunk([], usage=usage)))
        events.append((False, "[DONE]"))
        for delayed, event in events:
            if delayed and config.stream_token_delay_ms:
                time.sleep(config.stream_token_delay_ms / 1000)
            if self._peer_closed():
                return False
            data = event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)
            try:
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()
            except OSError:  # BrokenPipeError, ConnectionResetError
                return False
        return True

    def _peer_closed(self) -> bool:
        """Whether the client closed its end (readable socket with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _admin(self, path: str, body: bytes) -> tuple[HTTPStatus, dict[str, Any]]:
        """The ``/__sim__/`` endpoints: request log and knobs (no auth, no latency, not logged)."""
        simulator = self.server.simulator
        if path == "/__sim__/requests":
            if self.command == "GET":
                return HTTPStatus.OK, {"requests": simulator.requests()}
            if self.command == "DELETE":
                simulator.clear_requests()
                return HTTPStatus.OK, {"success": True}
        elif path == "/__sim__/config":
            if self.command == "GET":
                return HTTPStatus.OK, simulator.config.to_dict()
            if self.command == "POST":
                try:
                    values = json.loads(body or b"{}")
                    if not isinstance(values, dict):
                        raise ValueError("expected a JSON object of knobs")
                    simulator.config.update(values)
                except ValueError as exc:
                    return HTTPStatus.BAD_REQUEST, {"success": False, "message": str(exc)}
                return HTTPStatus.OK, simulator.config.to_dict()
        else:
            return HTTPStatus.NOT_FOUND, {"success": False, "message": "Not found"}
        return HTTPStatus.METHOD_NOT_ALLOWED, {"success": False, "message": "Method not allowed"}

    def _send_json(
        self, status: HTTPStatus, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _pieces(text: str) -> list[str]:
    """``text`` cut into word-sized deltas (each word with the spaces after it)."""
    pieces: list[str] = []
    current = ""
    for char in text:
        if current and not current[-1].isspace() and char.isspace():
            current += char
        elif current and current[-1].isspace() and not char.isspace():
            pieces.append(current)
            current = char
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def _break_json(answer: Any, rng: random.Random) -> str:
    """An invalid answer: either JSON cut short or JSON that breaks the schema (an unknown status)."""
    if rng.random() < 0.5:
        text = json.dumps(answer, ensure_ascii=False)
        return text[: max(len(text) - 7, 1)]
    broken = json.loads(json.dumps(answer))
    points = broken.get("control_points") if isinstance(broken, dict) else None
    if isinstance(points, list) and points:
        points[0]["status"] = "conforme"
        points[0].pop("rationale", None)
    else:
        broken = {"réponse": "conforme"}
    return json.dumps(broken, ensure_ascii=False)


class LlmSimulator:
    """The simulator in-process: binds on construction (port 0 picks a free port), serves after ``start()``."""

    def __init__(self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config if config is not None else SimulatorConfig()
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

    def start(self) -> Self:
        """Serve in a background daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_S},
                name=f"llm-simulator-{self.port}",
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
        """The contract requests answered so far, in order of response (copies)."""
        return self._server.recorded_requests()

    def clear_requests(self) -> None:
        """Forget the logged requests (and the in-flight peak)."""
        self._server.clear_requests()
        self._server.max_in_flight = self._server.in_flight

    def clear_prompt_cache(self) -> None:
        """Forget the prompt prefixes seen so far (the next requests report no cached tokens)."""
        self._server.clear_prompt_cache()

    def current_in_flight(self) -> int:
        """Requests arrived and not yet answered (an answer's latency included)."""
        return self._server.in_flight

    def max_in_flight(self) -> int:
        """The most requests in flight at once since the start or the last ``clear_requests()``."""
        return self._server.max_in_flight

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
