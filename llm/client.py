"""Client of any OpenAI-compatible Chat Completions server (contract: ../shared/speech-and-llm.md §2).

Never touches the ORM and never uses Redis: the caller holds the global concurrency slot
(``LLM_MAX_CONCURRENCY``) around each call. Uses the ``openai`` SDK (sync client per process and settings,
``base_url=LLM_BASE_URL``, ``timeout=LLM_TIMEOUT_SECONDS``, bounded retries ``LLM_MAX_RETRIES``: the SDK
itself retries 408/409/429/5xx/timeouts/connection errors with backoff and honours ``Retry-After``), model
``LLM_MODEL``, ``temperature: 0`` and ``seed: LLM_SEED``.

- ``complete_structured(...)`` asks for an answer matching a Pydantic model through
  ``response_format: json_schema`` (strict schema from ``strict_json_schema``) and returns a
  ``StructuredResult``. It tolerates servers without ``json_schema`` (a 400 naming the response format: falls
  back to ``json_object`` plus our own validation, remembered per (base_url, model) for the process),
  answers in a Markdown fence or with text around the JSON, tool-call ``arguments`` given as an object,
  tool calls without ``id``. An invalid answer is re-asked exactly once with the validation error, then
  ``LlmInvalidAnswer``; ``finish_reason: "length"`` raises ``LlmTruncated`` (a cut answer is never parsed).
  With ``tools`` it runs a tool loop: each call of the model goes to ``tool_handler(name, args) -> str``
  while ``max_tool_calls`` (counting each call) allows; then it asks once more with ``tool_choice: "none"``.
  ``usage`` is summed over every round (estimated as characters / 4 when the server omits it).
- ``stream_chat(messages=...)`` yields ``ChatEvent("delta", text=...)`` then one ``ChatEvent("done", usage=...,
  finish_reason=...)``; closing the generator closes the HTTP stream at once.

Errors: ``LlmTransientError`` (429 with ``retry_after``, 408/409, 5xx, timeouts, connection errors: retry
later), ``LlmPermanentError`` (other 4xx, refusals, ``content_filter``, a body breaking the contract) and its
subclasses ``LlmNotConfigured``, ``LlmInvalidAnswer``, ``LlmTruncated``. No message contains the API key.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict

import openai
import pydantic
from django.conf import settings

from core.metrics import record_outbound

logger = logging.getLogger("audits.llm")

CHARS_PER_TOKEN = 4
_MIN_SCRUBBED_KEY = 4
_ERROR_DETAIL_CHARS = 300
_VALIDATION_ERROR_CHARS = 1500

REASK_TEMPLATE = (
    "Votre réponse précédente n'est pas valide : {error}\n"
    "Répondez de nouveau avec uniquement l'objet JSON conforme au schéma demandé."
)
ANSWER_NOW_MESSAGE = (
    "Le nombre d'appels d'outils autorisé est atteint : n'appelez plus d'outil et répondez maintenant avec "
    "l'objet JSON demandé, à partir des passages déjà lus."
)
JSON_OBJECT_INSTRUCTION = (
    "Répondez uniquement avec un objet JSON (sans texte autour) conforme à ce schéma JSON :\n{schema}"
)


# --- Errors ---------------------------------------------------------------------------------------------------


class LlmError(Exception):
    """Base of LLM client errors. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(_scrub(message))
        self.status = status


class LlmTransientError(LlmError):
    """429, 408/409, 5xx, timeouts, connection errors (after the SDK's bounded retries): retry later."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class LlmPermanentError(LlmError):
    """400/401/403/404/422, refusals, ``content_filter``, a broken body: retrying will not help."""


class LlmNotConfigured(LlmPermanentError):
    """``LLM_BASE_URL`` or ``LLM_API_KEY`` is empty (the message names the setting)."""


class LlmInvalidAnswer(LlmPermanentError):
    """The answer is still invalid after one re-ask; ``validation_error`` says why."""

    def __init__(self, message: str, *, validation_error: str, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.validation_error = _scrub(validation_error)


class LlmTruncated(LlmPermanentError):
    """``finish_reason: "length"``: the answer was cut; it is never parsed."""


def _api_key() -> str:
    """``LLM_API_KEY`` with whitespace and surrounding quotes stripped."""
    key = str(getattr(settings, "LLM_API_KEY", "") or "").strip()
    if len(key) >= 2 and key[0] == key[-1] and key[0] in "'\"":
        key = key[1:-1].strip()
    return key


def _scrub(message: str) -> str:
    key = _api_key()
    if len(key) >= _MIN_SCRUBBED_KEY:
        message = message.replace(key, "***")
    return message


# --- Public types ---------------------------------------------------------------------------------------------


class FunctionSpec(TypedDict):
    name: str
    description: str
    parameters: dict[str, Any]
    strict: NotRequired[bool]


class ToolSpec(TypedDict):
    """One entry of the ``tools`` request parameter."""

    type: Literal["function"]
    function: FunctionSpec


ToolHandler = Callable[[str, dict[str, Any]], str]
ResponseFormatUsed = Literal["json_schema", "json_object"]


@dataclasses.dataclass(frozen=True)
class Usage:
    """Tokens of one or more requests; ``estimated`` when any part was estimated (characters / 4).

    ``cached_tokens``: the part of ``prompt_tokens`` the server read from its prompt cache
    (``usage.prompt_tokens_details.cached_tokens``, OpenAI's shape; 0 when the server does not say), which
    providers bill at a lower price (``costs.pricing``)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: bool = False
    cached_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            estimated=self.estimated or other.estimated,
            cached_tokens=self.cached_tokens + other.cached_tokens,
        )

    @classmethod
    def zero(cls) -> Usage:
        return cls(0, 0, 0, False)


@dataclasses.dataclass(frozen=True)
class StructuredResult:
    value: pydantic.BaseModel
    usage: Usage
    model: str
    tool_calls: list[dict[str, Any]]  # {"name", "arguments" (dict), "result_size" (characters)}
    rounds: int  # chat completion requests answered (tool rounds, re-ask, the forced answer)
    latency_ms: int
    response_format_used: ResponseFormatUsed


@dataclasses.dataclass(frozen=True)
class ChatEvent:
    kind: Literal["delta", "done"]
    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None


# --- Strict JSON schema ---------------------------------------------------------------------------------------

_DROPPED_KEYWORDS = frozenset({"title", "default"})


def strict_json_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``model`` in the form strict structured outputs require.

    ``$ref`` are inlined (recursive models are refused), every object lists all its properties as required
    with ``additionalProperties: false``, an optional scalar becomes a type union (``["string", "null"]``,
    ``null`` added to its ``enum``), ``title`` and ``default`` are dropped.
    """
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    return _strict(schema, definitions, ())


def _strict(node: Mapping[str, Any], definitions: Mapping[str, Any], stack: tuple[str, ...]) -> dict[str, Any]:
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        if name in stack:
            raise ValueError(f"recursive model {name!r} is not supported by strict_json_schema")
        merged = {**definitions[name], **{key: value for key, value in node.items() if key != "$ref"}}
        return _strict(merged, definitions, (*stack, name))
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1:
        merged = {**all_of[0], **{key: value for key, value in node.items() if key != "allOf"}}
        return _strict(merged, definitions, stack)

    out: dict[str, Any] = {key: value for key, value in node.items() if key not in _DROPPED_KEYWORDS}
    if isinstance(out.get("anyOf"), list):
        variants = [_strict(variant, definitions, stack) for variant in out.pop("anyOf")]
        collapsed = _nullable(variants)
        if collapsed is not None:
            out.update(collapsed)
        else:
            out["anyOf"] = variants
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: _strict(prop, definitions, stack) for name, prop in out["properties"].items()}
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    elif out.get("type") == "object":
        out["additionalProperties"] = False
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"], definitions, stack)
    return out


def _nullable(variants: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``X | None`` with X a scalar or array type as ``{"type": [X, "null"], ...}``; None when it does not apply."""
    non_null = [variant for variant in variants if variant != {"type": "null"}]
    if len(non_null) != 1 or len(variants) != 2 or "anyOf" in non_null[0]:
        return None
    variant = dict(non_null[0])
    kind = variant.get("type")
    if not isinstance(kind, str) or kind == "object":  # an optional object stays an anyOf with null
        return None
    variant["type"] = [kind, "null"]
    if "const" in variant:
        variant["enum"] = [variant.pop("const")]
    if isinstance(variant.get("enum"), list):
        variant["enum"] = [*variant["enum"], None]
    return variant


# --- Transport ------------------------------------------------------------------------------------------------

_clients: dict[tuple[str, str, float, int], openai.OpenAI] = {}
_clients_pid = os.getpid()
_clients_lock = threading.Lock()
_no_json_schema: set[tuple[str, str]] = set()
_capabilities_lock = threading.Lock()


def _configuration() -> tuple[str, str]:
    base_url = str(getattr(settings, "LLM_BASE_URL", "") or "").strip().rstrip("/")
    if not base_url:
        raise LlmNotConfigured("LLM_BASE_URL is not set: the LLM client cannot be used")
    key = _api_key()
    if not key:
        raise LlmNotConfigured("LLM_API_KEY is not set: the LLM client cannot be used")
    return base_url, key


def _client() -> openai.OpenAI:
    """The process's SDK client for the current settings (one connection pool each; new after a fork)."""
    global _clients_pid
    base_url, key = _configuration()
    identity = (base_url, key, float(settings.LLM_TIMEOUT_SECONDS), int(settings.LLM_MAX_RETRIES))
    with _clients_lock:
        if _clients_pid != os.getpid():
            _clients.clear()
            _clients_pid = os.getpid()
        client = _clients.get(identity)
        if client is None:
            client = openai.OpenAI(base_url=base_url, api_key=key, timeout=identity[2], max_retries=identity[3])
            _clients[identity] = client
    return client


def _json_schema_supported(base_url: str, model: str) -> bool:
    with _capabilities_lock:
        return (base_url, model) not in _no_json_schema


def _remember_no_json_schema(base_url: str, model: str) -> None:
    with _capabilities_lock:
        _no_json_schema.add((base_url, model))
    logger.warning("llm_json_schema_unsupported base_url=%s model=%s fallback=json_object", base_url, model)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms``; None when absent."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(float(milliseconds) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return max(float(email.utils.mktime_tz(parsed) - time.time()), 0.0)
    except (TypeError, ValueError, OverflowError):
        return None


def _error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:_ERROR_DETAIL_CHARS]
        if isinstance(error, str):
            return error[:_ERROR_DETAIL_CHARS]
        return json.dumps(body, ensure_ascii=False)[:_ERROR_DETAIL_CHARS]
    if body is not None:
        return str(body)[:_ERROR_DETAIL_CHARS]
    return ""


def _map_error(exc: openai.OpenAIError) -> LlmError:
    """Our typed error for an SDK error (raised once the SDK's own retries are spent)."""
    where = "POST /chat/completions"
    if isinstance(exc, openai.APITimeoutError):
        return LlmTransientError(f"LLM timeout on {where}")
    if isinstance(exc, openai.APIConnectionError):
        cause = type(exc.__cause__).__name__ if exc.__cause__ else "connection error"
        return LlmTransientError(f"LLM unreachable on {where}: {cause}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = f"LLM answered {status} on {where}: {_error_detail(exc)}"
        if status == 429:
            return LlmTransientError(message, status=status, retry_after=_retry_after(exc.response.headers))
        if status >= 500 or status in (408, 409):
            return LlmTransientError(message, status=status, retry_after=_retry_after(exc.response.headers))
        return LlmPermanentError(message, status=status)
    return LlmPermanentError(f"LLM client error on {where}: {type(exc).__name__}")


def _record_call(started: float, *, status: int | None = None, error: BaseException | None = None) -> None:
    """One SDK call in the outbound metrics (``llm``): its time and outcome (``error``: what it raised).

    Per SDK call, not per HTTP attempt: the SDK's own retries (``LLM_MAX_RETRIES``: 408/409/429/5xx, timeouts,
    connection errors) happen inside one call, so a call that succeeded on its second attempt counts once, as
    ``ok``, with the time of both attempts and the backoff between them."""
    if error is not None:
        status = error.status_code if isinstance(error, openai.APIStatusError) else None
    record_outbound("llm", started, status=status, timeout=isinstance(error, openai.APITimeoutError))


def _rejects_json_schema(exc: openai.APIStatusError) -> bool:
    """A 400 that names the response format: the server does not do ``json_schema``."""
    if exc.status_code != 400:
        return False
    text = f"{exc.param or ''} {_error_detail(exc)} {json.dumps(exc.body, default=str)}".lower()
    return "response_format" in text or "json_schema" in text or "response format" in text


def _create(
    client: openai.OpenAI,
    *,
    messages: list[dict[str, Any]],
    response_format: dict[str, Any] | None,
    tools: Sequence[ToolSpec] | None,
    tool_choice: str | None,
) -> dict[str, Any]:
    """One non-streaming request; the response body as a dict (checked to hold ``choices[0].message``)."""
    params: dict[str, Any] = {
        "model": settings.LLM_MODEL,
        "messages": messages,
        "temperature": 0,
        "seed": settings.LLM_SEED,
    }
    if response_format is not None:
        params["response_format"] = response_format
    if tools:
        params["tools"] = list(tools)
        if tool_choice is not None:
            params["tool_choice"] = tool_choice
    started = time.perf_counter()
    try:
        raw = client.chat.completions.with_raw_response.create(**params)
    except Exception as exc:
        _record_call(started, error=exc)
        raise
    _record_call(started, status=raw.status_code)
    try:
        data = json.loads(raw.text)
    except ValueError:
        raise LlmPermanentError("LLM returned a body that is not JSON", status=raw.status_code) from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise LlmPermanentError("LLM response has no choices", status=raw.status_code)
    if not isinstance(choices[0].get("message"), dict):
        raise LlmPermanentError("LLM response choice has no message", status=raw.status_code)
    return data


# --- Answers --------------------------------------------------------------------------------------------------


def _estimate_tokens(characters: int) -> int:
    return math.ceil(characters / CHARS_PER_TOKEN)


def _message_chars(messages: Sequence[Mapping[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif content is not None:
            total += len(json.dumps(content, ensure_ascii=False))
        if message.get("tool_calls"):
            total += len(json.dumps(message["tool_calls"], ensure_ascii=False))
    return total


def _cached_tokens(details: Any, prompt: int) -> int:
    """``prompt_tokens_details.cached_tokens`` (a dict, or the SDK's object in a stream), within
    ``[0, prompt]``; 0 when absent or not an integer."""
    cached = details.get("cached_tokens") if isinstance(details, dict) else getattr(details, "cached_tokens", None)
    if not isinstance(cached, int) or isinstance(cached, bool):
        return 0
    return min(max(cached, 0), prompt)


def _usage_of(data: Mapping[str, Any], sent: Sequence[Mapping[str, Any]], answer_chars: int) -> Usage:
    usage = data.get("usage")
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            total = usage.get("total_tokens")
            cached = _cached_tokens(usage.get("prompt_tokens_details"), prompt)
            return Usage(prompt, completion, total if isinstance(total, int) else prompt + completion, False, cached)
    prompt_tokens = _estimate_tokens(_message_chars(sent))
    completion_tokens = _estimate_tokens(answer_chars)
    return Usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens, True)


_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)


def _extract_json(content: str) -> Any:
    """The JSON value of an answer: the whole content, a fenced block, or the first JSON object in the text."""
    text = content.strip()
    try:
        return json.loads(text)
    except ValueError as exc:
        first_error = exc
    for match in _FENCE.finditer(text):
        try:
            return json.loads(match.group(1).strip())
        except ValueError:
            continue
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError(f"the answer is not valid JSON ({first_error})")


def _validation_summary(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error.get("loc", ())) or "(racine)"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)[:_VALIDATION_ERROR_CHARS]


def _parse_answer(content: Any, answer_model: type[pydantic.BaseModel]) -> pydantic.BaseModel:
    """The validated answer; ValueError with a readable reason otherwise."""
    if not isinstance(content, str) or not content.strip():
        raise ValueError("the answer is empty: a JSON object was expected")
    value = _extract_json(content)
    try:
        return answer_model.model_validate(value)
    except pydantic.ValidationError as exc:
        raise ValueError(f"the JSON does not match the schema: {_validation_summary(exc)}") from None


def _normalize_tool_calls(raw_calls: Any) -> list[dict[str, Any]]:
    """Tool calls as ``{id, type, function: {name, arguments (JSON string)}}``: ids generated when missing and
    object arguments serialized. Calls without a function name are dropped."""
    if not isinstance(raw_calls, list):
        return []
    calls = []
    for raw in raw_calls:
        if not isinstance(raw, dict):
            continue
        raw_function = raw.get("function")
        function: dict[str, Any] = raw_function if isinstance(raw_function, dict) else {}
        name = function.get("name")
        if not isinstance(name, str) or not name:
            continue
        arguments = function.get("arguments")
        if arguments is None:
            arguments = "{}"
        elif not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        call_id = raw.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = f"call_{uuid.uuid4().hex[:24]}"
        calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
    return calls


def _insert_after_system(messages: list[dict[str, Any]], message: dict[str, Any]) -> None:
    position = 0
    while position < len(messages) and messages[position].get("role") == "system":
        position += 1
    messages.insert(position, message)


def complete_structured(
    *,
    messages: list[dict[str, Any]],
    answer_model: type[pydantic.BaseModel],
    schema_name: str,
    tools: list[ToolSpec] | None = None,
    tool_handler: ToolHandler | None = None,
    max_tool_calls: int = 8,
) -> StructuredResult:
    """Ask for an answer matching ``answer_model``; run the tool loop when ``tools`` are given.

    ``tool_handler(name, arguments)`` returns the tool's result as a string (errors included: it should not
    raise). Raises ``LlmTransientError``, ``LlmPermanentError``, ``LlmNotConfigured``, ``LlmInvalidAnswer``,
    ``LlmTruncated``.
    """
    if tools and tool_handler is None:
        raise ValueError("tools need a tool_handler")
    base_url, _ = _configuration()
    client = _client()
    model = str(settings.LLM_MODEL)
    schema = strict_json_schema(answer_model)
    started = time.monotonic()
    conversation: list[dict[str, Any]] = [dict(message) for message in messages]
    use_json_schema = _json_schema_supported(base_url, model)
    if not use_json_schema:
        _insert_after_system(conversation, _schema_instruction(schema))
    tool_choice: str | None = "auto" if tools else None
    usage = Usage.zero()
    tool_log: list[dict[str, Any]] = []
    calls_made = 0
    rounds = 0
    reasked = False
    answered_model = model

    while rounds <= max_tool_calls + 3:
        response_format = (
            {"type": "json_schema", "json_schema": {"name": schema_name, "strict": True, "schema": schema}}
            if use_json_schema
            else {"type": "json_object"}
        )
        try:
            data = _create(
                client, messages=conversation, response_format=response_format, tools=tools, tool_choice=tool_choice
            )
        except openai.APIStatusError as exc:
            if use_json_schema and _rejects_json_schema(exc):
                _remember_no_json_schema(base_url, model)
                use_json_schema = False
                _insert_after_system(conversation, _schema_instruction(schema))
                continue
            raise _map_error(exc) from None
        except openai.OpenAIError as exc:
            raise _map_error(exc) from None
        rounds += 1
        answered_model = str(data.get("model") or model)
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content")
        raw_calls = message.get("tool_calls")
        answer_chars = (len(content) if isinstance(content, str) else 0) + (
            len(json.dumps(raw_calls, ensure_ascii=False)) if raw_calls else 0
        )
        usage += _usage_of(data, conversation, answer_chars)
        _check_finish(choice, message)

        calls = _normalize_tool_calls(raw_calls)
        if calls:
            if not tools or tool_handler is None:
                raise LlmPermanentError("LLM called a tool although none was offered")
            if tool_choice == "none":
                raise LlmInvalidAnswer(
                    "LLM called a tool after being told to answer", validation_error="tool calls after tool_choice none"
                )
            conversation.append(
                {
                    "role": "assistant",
                    "content": content if isinstance(content, str) and content else None,
                    "tool_calls": calls,
                }
            )
            for call in calls:
                function = call["function"]
                if calls_made >= max_tool_calls:
                    result = json.dumps({"error": "nombre maximal d'appels d'outils atteint"}, ensure_ascii=False)
                else:
                    calls_made += 1
                    result = _run_tool(tool_handler, function["name"], function["arguments"], tool_log)
                conversation.append({"role": "tool", "tool_call_id": call["id"], "content": result})
            if calls_made >= max_tool_calls:
                tool_choice = "none"
                conversation.append({"role": "user", "content": ANSWER_NOW_MESSAGE})
            continue

        try:
            value = _parse_answer(content, answer_model)
        except ValueError as exc:
            error = str(exc)
            if reasked:
                raise LlmInvalidAnswer(
                    f"LLM answer still invalid after one re-ask: {error}", validation_error=error
                ) from None
            reasked = True
            logger.info("llm_answer_invalid schema=%s reask=1 error=%s", schema_name, error[:200])
            conversation.append({"role": "assistant", "content": content if isinstance(content, str) else ""})
            conversation.append({"role": "user", "content": REASK_TEMPLATE.format(error=error)})
            continue

        latency_ms = int((time.monotonic() - started) * 1000)
        used: ResponseFormatUsed = "json_schema" if use_json_schema else "json_object"
        logger.info(
            "llm_structured_done schema=%s model=%s rounds=%s tool_calls=%s prompt_tokens=%s completion_tokens=%s "
            "cached_tokens=%s estimated=%s latency_ms=%s response_format=%s",
            schema_name,
            answered_model,
            rounds,
            len(tool_log),
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
            usage.estimated,
            latency_ms,
            used,
        )
        return StructuredResult(
            value=value,
            usage=usage,
            model=answered_model,
            tool_calls=tool_log,
            rounds=rounds,
            latency_ms=latency_ms,
            response_format_used=used,
        )
    raise LlmInvalidAnswer(
        "LLM gave no final answer within the round limit", validation_error="too many rounds without an answer"
    )


def _schema_instruction(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": "system",
        "content": JSON_OBJECT_INSTRUCTION.format(schema=json.dumps(schema, ensure_ascii=False, separators=(",", ":"))),
    }


def _check_finish(choice: Mapping[str, Any], message: Mapping[str, Any]) -> None:
    finish_reason = choice.get("finish_reason")
    if finish_reason == "length":
        raise LlmTruncated("LLM answer was cut (finish_reason length): not parsed")
    if finish_reason == "content_filter":
        raise LlmPermanentError("LLM answer was blocked by the content filter (finish_reason content_filter)")
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal.strip():
        raise LlmPermanentError(f"LLM refused to answer: {refusal.strip()[:_ERROR_DETAIL_CHARS]}")


def _run_tool(handler: ToolHandler, name: str, arguments: str, tool_log: list[dict[str, Any]]) -> str:
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        result = json.dumps({"error": "arguments invalides : un objet JSON est attendu"}, ensure_ascii=False)
        tool_log.append({"name": name, "arguments": {"_raw": arguments[:200]}, "result_size": len(result)})
        return result
    result = handler(name, parsed)
    if not isinstance(result, str):
        result = json.dumps(result, ensure_ascii=False)
    tool_log.append({"name": name, "arguments": parsed, "result_size": len(result)})
    return result


# --- Streaming chat -------------------------------------------------------------------------------------------


def stream_chat(*, messages: list[dict[str, Any]]) -> Iterator[ChatEvent]:
    """Stream a chat answer: ``delta`` events, then one ``done`` event with the usage and finish reason.

    Closing the generator (``.close()``, e.g. when our own HTTP client went away) closes the HTTP stream to
    the server at once. Errors raise the client's exceptions.
    """
    client = _client()
    started = time.perf_counter()
    try:
        request: dict[str, Any] = {
            "model": settings.LLM_MODEL,
            "messages": messages,
            "temperature": 0,
            "seed": settings.LLM_SEED,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        stream = client.chat.completions.create(**request)
    except openai.OpenAIError as exc:
        _record_call(started, error=exc)
        raise _map_error(exc) from None
    parts: list[str] = []
    finish_reason: str | None = None
    usage: Usage | None = None
    failure: BaseException | None = None
    try:
        for chunk in stream:
            usage = _stream_usage(getattr(chunk, "usage", None)) or usage
            for choice in getattr(chunk, "choices", None) or []:
                if getattr(choice, "finish_reason", None):
                    finish_reason = choice.finish_reason
                delta = getattr(choice, "delta", None)
                text = getattr(delta, "content", None) if delta is not None else None
                if not text and delta is not None:
                    text = getattr(delta, "refusal", None)
                if text:
                    parts.append(text)
                    yield ChatEvent(kind="delta", text=text)
    except openai.OpenAIError as exc:
        failure = exc
        raise _map_error(exc) from None
    except Exception as exc:
        failure = exc
        raise
    finally:
        stream.close()
        # Its time to the end of the stream, or to our consumer closing it (GeneratorExit: not a failure).
        _record_call(started, status=getattr(getattr(stream, "response", None), "status_code", 200), error=failure)
    if usage is None:
        prompt = _estimate_tokens(_message_chars(messages))
        completion = _estimate_tokens(sum(len(part) for part in parts))
        usage = Usage(prompt, completion, prompt + completion, True)
    logger.info(
        "llm_chat_done finish_reason=%s prompt_tokens=%s completion_tokens=%s cached_tokens=%s estimated=%s",
        finish_reason,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cached_tokens,
        usage.estimated,
    )
    yield ChatEvent(kind="done", usage=usage, finish_reason=finish_reason)


def _stream_usage(raw: Any) -> Usage | None:
    """The usage of a stream chunk (the last one, with ``include_usage``), None when it has none."""
    prompt = getattr(raw, "prompt_tokens", None)
    if not isinstance(prompt, int):
        return None
    completion = getattr(raw, "completion_tokens", None)
    completion = completion if isinstance(completion, int) else 0
    total = getattr(raw, "total_tokens", None)
    cached = _cached_tokens(getattr(raw, "prompt_tokens_details", None), prompt)
    return Usage(prompt, completion, total if isinstance(total, int) else prompt + completion, False, cached)
