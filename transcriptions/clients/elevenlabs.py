"""HTTP client of ElevenLabs Speech-to-Text (Scribe), contract: ../shared/speech-and-llm.md section 1.

Plain ``requests`` (not the vendor SDK); never touches the ORM.

``transcribe(recording_url=..., call_id=...)`` sends one ``multipart/form-data`` POST to
``{ELEVENLABS_BASE_URL}/v1/speech-to-text`` with the ``xi-api-key`` header and the fields ``model_id``,
``source_url`` (or, with ``TRANSCRIPTION_UPLOAD_AUDIO``, the recording downloaded here and sent as
``file`` named ``{call_id}.mp3``), ``language_code``, ``diarize=true``, ``num_speakers=2``,
``timestamps_granularity=word`` and ``tag_audio_events=false``, and returns an ``SttResult`` whose
words are validated and normalized (``audio_event`` items dropped). Callers that hold a provider slot
around the POST only use its three steps: ``prepare_request`` (an ``SttRequest``, a context manager:
close it whatever happens), ``send_request``, ``read_response``.

Upload mode: the recording URL comes from the CRM, so its download is treated like an outgoing webhook
(``realtime.url_safety`` and ``realtime.safe_http``): http/https only; the host resolved and every
address checked (loopback, private, link-local, metadata...) unless its origin is in
``RECORDING_ALLOWED_ORIGINS`` (trusted, may be private); the connection pinned to the checked address;
at most ``MAX_DOWNLOAD_REDIRECTS`` redirects followed, each ``Location`` checked by the same guard (a
redirect to a private address fails like a URL to one). The body is streamed to a temporary file
(never held in memory), at most ``TRANSCRIPTION_MAX_AUDIO_BYTES`` (a larger ``Content-Length`` fails
before reading; a body growing past it is cut), within a total deadline of
``TRANSCRIPTION_DOWNLOAD_TIMEOUT_SECONDS`` (connect and every read: a server dripping bytes is cut).
The multipart POST then streams that file; the file is deleted when the ``SttRequest`` is closed.

Errors are typed so callers know whether to retry:

- ``ElevenLabsTransientError``: timeouts, connection errors, 5xx (and a failed recording download
  that may succeed later: timeout or deadline, connection error, 5xx or 429, a host that does not
  resolve now). ``retry_after`` carries the ``Retry-After`` header when present.
- ``ElevenLabsRateLimited`` (a transient error): 429. The vendor limits *concurrent* requests;
  ``reason`` is its ``detail.status`` (``too_many_concurrent_requests`` or ``system_busy``).
- ``ElevenLabsPermanentError``: 401, 422, any other 4xx or 3xx, a body that breaks the contract
  (the message names the field). ``ElevenLabsNotConfigured`` (permanent) when the key is missing.
  A recording download: an unsafe URL or redirect (the message names the reason), too many
  redirects, a recording over the size cap, an empty body, a 4xx.

Secrets: no message, log line, exception ``str``/``repr`` or chained exception carries the key or
the request headers: errors are raised outside ``except`` blocks (no chained exception holds the prepared
request), messages are scrubbed of the key, and the query string of a recording URL, which may carry a
signed token, is never shown.
"""

from __future__ import annotations

import io
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import urlsplit, urlunsplit

import orjson
import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from requests_hardened.ip_filter import InvalidIPAddress
from urllib3.fields import RequestField

from core.metrics import record_outbound
from realtime.http_deadline import deadline
from realtime.safe_http import RedirectRefused, checked_get
from realtime.url_safety import (
    SafeUrl,
    UnsafeWebhookUrl,
    WebhookHostUnresolvable,
    allowed_origins,
    validate_outgoing_url,
)

logger = logging.getLogger("transcriptions.elevenlabs")

CONNECT_TIMEOUT_SECONDS = 10.0
STT_PATH = "/v1/speech-to-text"
API_KEY_SETTING = "ELEVENLABS_API_KEY"
KEPT_WORD_TYPES = frozenset({"word", "spacing"})
_KNOWN_WORD_TYPES = KEPT_WORD_TYPES | {"audio_event"}
_MAX_DETAIL_CHARS = 200
MAX_DOWNLOAD_REDIRECTS = 3
DOWNLOAD_CHUNK_BYTES = 64 * 1024
DOWNLOAD_USER_AGENT = "callcentre-stt/1.0"


# --- Errors -------------------------------------------------------------------------------------


class ElevenLabsError(Exception):
    """Base of the client's errors. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(_scrub(message))
        self.status = status


class ElevenLabsTransientError(ElevenLabsError):
    """Timeouts, connection errors, 5xx and 429: worth retrying (after ``retry_after`` seconds when set)."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ElevenLabsRateLimited(ElevenLabsTransientError):
    """429: too many concurrent requests (``reason`` = the vendor's ``detail.status``)."""

    def __init__(
        self, message: str, *, status: int | None = 429, retry_after: float | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message, status=status, retry_after=retry_after)
        self.reason = reason


class ElevenLabsPermanentError(ElevenLabsError):
    """401, 422, other 4xx, or a response that breaks the contract: retrying will not help."""


class ElevenLabsNotConfigured(ElevenLabsPermanentError):
    """The API key setting is missing, blank or unusable (the message names the setting, never a key)."""


def _scrub(message: str) -> str:
    """``message`` without the configured key (raw and normalized forms)."""
    raw = getattr(settings, API_KEY_SETTING, "") or ""
    for secret in {raw, raw.strip(), normalize_api_key(raw)}:
        if len(secret) >= 4:  # a 1-3 character "key" would blank out ordinary words
            message = message.replace(secret, "***")
    return message


# --- Result ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SttResult:
    """A transcript: words of type ``word`` or ``spacing`` only, each a dict with exactly the keys
    ``text``, ``start``, ``end`` (seconds, floats), ``type``, ``speaker_id`` (or None) and ``logprob`` (or None)."""

    language_code: str | None
    language_probability: float | None
    text: str
    transcription_id: str | None
    audio_duration_secs: float | None
    words: list[dict[str, Any]]


def normalize_api_key(raw: str) -> str:
    """The key as sent: surrounding whitespace trimmed, then surrounding quotes (single or double, nested
    pairs too, with the whitespace inside them) stripped: ``' "abc" '`` -> ``abc``."""
    key = (raw or "").strip()
    while len(key) >= 2 and key[0] == key[-1] and key[0] in ("'", '"'):
        key = key[1:-1].strip()
    return key


# --- Transport ------------------------------------------------------------------------------------

_local = threading.local()


def _session() -> requests.Session:
    """This thread's session (one connection pool per process and thread; a forked worker makes its own)."""
    session = getattr(_local, "session", None)
    if session is None or getattr(_local, "pid", None) != os.getpid():
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session, _local.pid = session, os.getpid()
    return session


def _api_key() -> str:
    key = normalize_api_key(getattr(settings, API_KEY_SETTING, "") or "")
    if not key:
        raise ElevenLabsNotConfigured(f"{API_KEY_SETTING} is not set: cannot call ElevenLabs Speech-to-Text")
    if not key.isascii() or not key.isprintable() or any(ch.isspace() for ch in key):
        raise ElevenLabsNotConfigured(
            f"{API_KEY_SETTING} contains characters that cannot be sent in an HTTP header (whitespace, control or "
            "non-ASCII characters)"
        )
    return key


def _timeout() -> tuple[float, float]:
    return CONNECT_TIMEOUT_SECONDS, float(settings.ELEVENLABS_TIMEOUT_SECONDS)


def _safe_url(url: str) -> str:
    """``url`` without its query string, fragment and credentials (signed URLs carry tokens there)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6
            host = f"[{host}]"
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))[:300]
    except ValueError:
        return "<invalid url>"


def _validate_recording_url(url: str) -> SafeUrl:
    """The webhooks' SSRF guard with the recordings' allowlist (exemptions, not an exclusive list)."""
    return validate_outgoing_url(
        url,
        allowed=allowed_origins(settings.RECORDING_ALLOWED_ORIGINS),
        allowlist_setting="RECORDING_ALLOWED_ORIGINS",
        allowlist_only=False,
    )


def _download(recording_url: str) -> tuple[IO[bytes], int]:
    """The recording (upload mode) in a temporary file positioned at its start, and its size. On any
    failure the file is closed (deleted) and a typed error raised outside any ``except`` block."""
    shown = _safe_url(recording_url)
    audio = tempfile.TemporaryFile(prefix="recording-")  # noqa: SIM115 (handed to the caller, closed by it)
    try:
        failure, size = _download_into(audio, recording_url, shown)
    except BaseException:  # a bug, the worker's soft time limit...: the file goes, the error propagates
        audio.close()
        raise
    if failure is None and size == 0:
        failure = ElevenLabsPermanentError(f"recording download returned no bytes ({shown})", status=200)
    if failure is not None:
        audio.close()
        raise failure
    audio.flush()
    audio.seek(0)
    return audio, size


def _download_into(audio: IO[bytes], url: str, shown: str) -> tuple[ElevenLabsError | None, int]:
    """Stream ``url`` into ``audio``: ``(the failure or None, bytes written)``. The transport's exceptions
    are never passed on (their text may hold the signed URL): only their type is named."""
    cap = int(settings.TRANSCRIPTION_MAX_AUDIO_BYTES)
    limit = float(settings.TRANSCRIPTION_DOWNLOAD_TIMEOUT_SECONDS)
    size = 0
    failure: ElevenLabsError | None = None
    with deadline(limit) as expired:
        try:
            with checked_get(
                url,
                validate=_validate_recording_url,
                max_redirects=MAX_DOWNLOAD_REDIRECTS,
                timeout=(min(CONNECT_TIMEOUT_SECONDS, limit), limit),
                headers={"Accept-Encoding": "identity"},  # the cap counts the bytes we store
                user_agent=DOWNLOAD_USER_AGENT,
            ) as response:
                failure = _download_answer_failure(response, shown, cap)
                if failure is None:
                    for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                        size += len(chunk)
                        if size > cap:
                            failure = ElevenLabsPermanentError(
                                f"recording larger than TRANSCRIPTION_MAX_AUDIO_BYTES ({cap} bytes): download "
                                f"stopped ({shown})",
                                status=response.status_code,
                            )
                            break
                        audio.write(chunk)
        except WebhookHostUnresolvable:  # DNS can fail for a moment
            failure = ElevenLabsTransientError(f"recording host does not resolve ({shown})")
        except UnsafeWebhookUrl as exc:  # the first URL or a redirect's Location
            reason = str(exc.details.get("reason") or "unsafe URL")[:_MAX_DETAIL_CHARS]
            failure = ElevenLabsPermanentError(f"recording URL refused: {reason} ({shown})")
        except InvalidIPAddress:  # the IP filter's own check at connect time (the name now resolves elsewhere)
            failure = ElevenLabsPermanentError(
                f"recording URL refused: its host resolves to a non-public address ({shown})"
            )
        except RedirectRefused as exc:
            failure = ElevenLabsPermanentError(f"recording download refused: {exc} ({shown})")
        except requests.Timeout as exc:
            failure = ElevenLabsTransientError(f"recording download timed out ({shown}): {type(exc).__name__}")
        except (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
            urllib3.exceptions.HTTPError,
            OSError,
        ) as exc:
            failure = ElevenLabsTransientError(f"recording download failed ({shown}): {type(exc).__name__}")
        except (requests.RequestException, ValueError) as exc:  # an invalid URL...
            failure = ElevenLabsPermanentError(f"recording download failed ({shown}): {type(exc).__name__}")
    if expired.is_set() and not isinstance(failure, ElevenLabsPermanentError):
        # The deadline shut the socket: whatever the read saw then (an error, or an end of body that looks
        # normal), the download did not finish in time.
        failure = ElevenLabsTransientError(f"recording download cut at the {limit:g} s deadline ({shown})")
    return failure, size


def _download_answer_failure(response: requests.Response, shown: str, cap: int) -> ElevenLabsError | None:
    """The failure a download's status or declared size already means, before reading its body."""
    status = response.status_code
    if status >= 500 or status == 429:
        return ElevenLabsTransientError(
            f"recording download answered {status} ({shown})", status=status, retry_after=_retry_after(response)
        )
    if status != 200:
        return ElevenLabsPermanentError(f"recording download answered {status} ({shown})", status=status)
    try:
        declared = int(response.headers.get("Content-Length") or -1)
    except ValueError:
        declared = -1
    if declared > cap:
        return ElevenLabsPermanentError(
            f"recording is {declared} bytes, over TRANSCRIPTION_MAX_AUDIO_BYTES ({cap} bytes) ({shown})",
            status=status,
        )
    return None


# --- Request --------------------------------------------------------------------------------------


@dataclass
class SttRequest:
    """One prepared transcription request: its text fields and, in upload mode, the downloaded recording in
    a temporary file. A context manager: whoever prepared it closes it (the file is deleted then), sent or
    not; ``send_request`` may be called on it again (the file is read from its start each time)."""

    call_id: str
    fields: list[tuple[str, str]]
    audio: IO[bytes] | None = None
    audio_size: int = 0

    def close(self) -> None:
        if self.audio is not None:
            self.audio.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class _MultipartBody:
    """The request as a ``multipart/form-data`` body read in blocks (requests' ``files=`` would read the
    whole recording into memory): the text parts and the file part's headers, the file, the closing
    boundary. Its length is known, so it goes with a ``Content-Length`` (not chunked)."""

    request: SttRequest
    boundary: str = field(default_factory=lambda: os.urandom(16).hex())
    _pieces: list[IO[bytes]] = field(init=False)
    _length: int = field(init=False)

    def __post_init__(self) -> None:
        head = io.BytesIO()
        for name, value in self.request.fields:
            head.write(self._part_headers(RequestField(name=name, data=value)))
            head.write(value.encode() + b"\r\n")
        tail = f"--{self.boundary}--\r\n".encode()
        self._pieces = [head]
        self._length = head.tell() + len(tail)
        if self.request.audio is not None:
            upload = RequestField(name="file", data=b"", filename=f"{self.request.call_id}.mp3")
            head.write(self._part_headers(upload, content_type="audio/mpeg"))
            self.request.audio.seek(0)
            self._pieces += [self.request.audio, io.BytesIO(b"\r\n" + tail)]
            self._length = head.tell() + self.request.audio_size + 2 + len(tail)
        else:
            self._pieces.append(io.BytesIO(tail))
        head.seek(0)

    def _part_headers(self, part: RequestField, content_type: str | None = None) -> bytes:
        part.make_multipart(content_type=content_type)
        return f"--{self.boundary}\r\n".encode() + part.render_headers().encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while self._pieces and (size < 0 or len(out) < size):
            chunk = self._pieces[0].read(-1 if size < 0 else size - len(out))
            if chunk:
                out += chunk
            else:
                self._pieces.pop(0)
        return bytes(out)

    def __iter__(self) -> Iterator[bytes]:  # requests sends an object with ``__iter__`` as a stream
        while chunk := self.read(DOWNLOAD_CHUNK_BYTES):
            yield chunk


def _post(request: SttRequest) -> requests.Response:
    """The vendor's answer to the multipart POST. Failures are raised outside any ``except`` block, so no
    exception chained to ours (``__cause__`` or ``__context__``) holds the prepared request and its headers."""
    url = f"{settings.ELEVENLABS_BASE_URL.rstrip('/')}{STT_PATH}"
    body = _MultipartBody(request)
    headers = {"xi-api-key": _api_key(), "Accept": "application/json", "Content-Type": body.content_type}
    failure: ElevenLabsError | None = None
    status: int | None = None
    timed_out = False
    started = time.perf_counter()
    try:
        response = _session().post(url, data=body, headers=headers, timeout=_timeout(), allow_redirects=False)
        status = response.status_code  # (the body is read by now: not streamed)
    except requests.Timeout as exc:
        timed_out = True
        failure = ElevenLabsTransientError(f"ElevenLabs timeout on POST {STT_PATH}: {type(exc).__name__}")
    except requests.ConnectionError as exc:
        failure = ElevenLabsTransientError(f"ElevenLabs unreachable on POST {STT_PATH}: {type(exc).__name__}")
    except requests.RequestException as exc:
        failure = ElevenLabsTransientError(f"ElevenLabs request failed on POST {STT_PATH}: {type(exc).__name__}")
    except (ValueError, UnicodeError) as exc:  # e.g. a header value http.client refuses; its text may echo it
        failure = ElevenLabsPermanentError(f"ElevenLabs request could not be sent: {type(exc).__name__}")
    record_outbound("stt", started, status=status, timeout=timed_out)  # outside the except blocks, like the raise
    if failure is not None:
        raise failure
    return response


def _retry_after(response: requests.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _body(response: requests.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except (ValueError, TypeError):
        return None


def _detail(body: Any, response: requests.Response) -> tuple[str | None, str]:
    """``(detail.status, readable message)`` of an error body (``{"detail": {...}}``, ``{"detail": [...]}``)."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        status = detail.get("status")
        message = detail.get("message") or status or ""
        return (str(status) if status else None), str(message)[:_MAX_DETAIL_CHARS]
    if isinstance(detail, list):  # 422 validation errors: [{"loc": [...], "msg": "...", ...}]
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(part) for part in item.get("loc") or [])
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        return None, "; ".join(parts)[:_MAX_DETAIL_CHARS]
    if isinstance(detail, str):
        return None, detail[:_MAX_DETAIL_CHARS]
    return None, (response.reason or "")[:_MAX_DETAIL_CHARS]


def _raise_for_status(response: requests.Response) -> None:
    status = response.status_code
    if status == 200:
        return
    reason, message = _detail(_body(response), response)
    where = f"ElevenLabs answered {status} on POST {STT_PATH}"
    if status == 429:
        raise ElevenLabsRateLimited(
            f"{where} ({reason or 'rate limited'}): {message}",
            status=status,
            retry_after=_retry_after(response),
            reason=reason,
        )
    if status >= 500:
        raise ElevenLabsTransientError(f"{where}: {message}", status=status, retry_after=_retry_after(response))
    if status == 401:
        raise ElevenLabsPermanentError(
            f"{where}: the API key ({API_KEY_SETTING}) was rejected: {message}", status=status
        )
    raise ElevenLabsPermanentError(f"{where}: {message}", status=status)


# --- Validation -----------------------------------------------------------------------------------


class _ContractError(Exception):
    """A 200 body that breaks the contract (the message names the field)."""


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _ContractError(f"'{field}' is {'not a number' if value is not None else 'missing'}")
    return float(value)


def _optional_number(value: Any, field: str) -> float | None:
    return None if value is None else _number(value, field)


def _text(value: Any, field: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _ContractError(f"'{field}' is {'not a string' if value is not None else 'missing'}")
    return value


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _normalize_words(items: Any) -> list[dict[str, Any]]:
    """The word items we keep, checked (a long call has thousands: the checks are inline, and an
    error's field name is built only when there is an error)."""
    if items is None:
        raise _ContractError("'words' is missing")
    if not isinstance(items, list):
        raise _ContractError("'words' is not a list")
    words: list[dict[str, Any]] = []
    append = words.append
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _ContractError(f"'words[{i}]' is not an object")
        kind = item.get("type", "word")  # the type is documented as always present; a missing one is a word
        if kind not in KEPT_WORD_TYPES:
            if kind not in _KNOWN_WORD_TYPES:
                raise _ContractError(f"'words[{i}].type' is not one of {sorted(_KNOWN_WORD_TYPES)}")
            continue
        start: Any = item.get("start")
        end: Any = item.get("end")
        text: Any = item.get("text")
        logprob: Any = item.get("logprob")
        if not (
            _is_number(start) and _is_number(end) and type(text) is str and (logprob is None or _is_number(logprob))
        ):
            _number(start, f"words[{i}].start")  # raise the error naming the field
            _number(end, f"words[{i}].end")
            _text(text, f"words[{i}].text")
            _optional_number(logprob, f"words[{i}].logprob")
        if end < start:
            raise _ContractError(f"'words[{i}].end' is before its start")
        speaker_id = item.get("speaker_id")
        append(
            {
                "text": text,
                "start": float(start),
                "end": float(end),
                "type": kind,
                "speaker_id": None if speaker_id is None else str(speaker_id),
                "logprob": None if logprob is None else float(logprob),
            }
        )
    return words


def _result(body: Any) -> SttResult:
    if not isinstance(body, dict):
        raise _ContractError("the body is not a JSON object")
    words = _normalize_words(body.get("words"))
    text = _text(body.get("text"), "text", optional=True)
    return SttResult(
        language_code=_text(body.get("language_code"), "language_code", optional=True),
        language_probability=_optional_number(body.get("language_probability"), "language_probability"),
        text=text if text is not None else "".join(word["text"] for word in words),
        transcription_id=_text(body.get("transcription_id"), "transcription_id", optional=True),
        audio_duration_secs=_optional_number(body.get("audio_duration_secs"), "audio_duration_secs"),
        words=words,
    )


def _parse(response: requests.Response) -> SttResult:
    """The validated result of a 200; the error is raised outside the ``except`` block (no chained context)."""
    body = _body(response)
    if body is None:
        problem = "the body is not JSON"
    else:
        try:
            return _result(body)
        except _ContractError as exc:
            problem = str(exc)
    raise ElevenLabsPermanentError(
        f"ElevenLabs response to POST {STT_PATH} breaks the contract: {problem}", status=response.status_code
    )


# --- Public API -----------------------------------------------------------------------------------


def _log_failure(exc: ElevenLabsError, call_id: str, started: float) -> None:
    logger.warning(
        "elevenlabs_transcription_failed",
        extra={
            "call_id": call_id,
            "status": exc.status,
            "error_type": type(exc).__name__,
            "error": str(exc),
            "elapsed_ms": round((time.monotonic() - started) * 1000),
        },
    )


def prepare_request(*, recording_url: str, call_id: str) -> SttRequest:
    """The transcription request (in upload mode the recording is downloaded here: do it before taking a
    provider slot). Close it (``with``) once sent or abandoned: that deletes the downloaded file."""
    _api_key()  # fail fast (before any download) when the key is not configured
    fields: list[tuple[str, str]] = [
        ("model_id", settings.ELEVENLABS_MODEL_ID),
        ("language_code", settings.TRANSCRIPTION_LANGUAGE),
        ("diarize", "true"),
        ("num_speakers", "2"),
        ("timestamps_granularity", "word"),
        ("tag_audio_events", "false"),
    ]
    if not settings.TRANSCRIPTION_UPLOAD_AUDIO:
        return SttRequest(call_id=call_id, fields=[*fields, ("source_url", recording_url)])
    started = time.monotonic()
    try:
        audio, size = _download(recording_url)
    except ElevenLabsError as exc:
        _log_failure(exc, call_id, started)
        raise
    logger.info(
        "elevenlabs_recording_downloaded",
        extra={"call_id": call_id, "bytes": size, "elapsed_ms": round((time.monotonic() - started) * 1000)},
    )
    return SttRequest(call_id=call_id, fields=fields, audio=audio, audio_size=size)


def send_request(request: SttRequest, *, call_id: str) -> requests.Response:
    """POST the request and check its status (the part that counts in the vendor's concurrency:
    hold a provider slot around this only). Raises the typed errors."""
    started = time.monotonic()
    try:
        response = _post(request)
        _raise_for_status(response)
    except ElevenLabsError as exc:
        _log_failure(exc, call_id, started)
        raise
    return response


def read_response(response: requests.Response, *, call_id: str) -> SttResult:
    """The validated transcript of a 200 (CPU work: parse it after giving the provider slot back)."""
    started = time.monotonic()
    try:
        result = _parse(response)
    except ElevenLabsError as exc:
        _log_failure(exc, call_id, started)
        raise
    logger.info(
        "elevenlabs_transcribed",
        extra={
            "call_id": call_id,
            "transcription_id": result.transcription_id,
            "words": len(result.words),
            "audio_duration_secs": result.audio_duration_secs,
            "upload": bool(settings.TRANSCRIPTION_UPLOAD_AUDIO),
            "elapsed_ms": round((time.monotonic() - started) * 1000),
        },
    )
    return result


def transcribe(*, recording_url: str, call_id: str) -> SttResult:
    """The transcript of one recording (diarized, word timestamps), or a typed ``ElevenLabsError``."""
    with prepare_request(recording_url=recording_url, call_id=call_id) as request:
        response = send_request(request, call_id=call_id)
    return read_response(response, call_id=call_id)
