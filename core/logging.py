"""Structured logging: a request id on every line of a request, text or JSON output.

- ``RequestIdMiddleware`` takes a safe ``X-Request-ID`` from the caller or makes one, keeps it in
  a context variable for the request, echoes it in the response, and writes one access line.
- ``RequestIdFilter`` puts that id on every log record (``-`` outside a request).
- ``StructuredFormatter`` renders records as ``key=value`` text or one JSON object per line; any
  ``extra={...}`` fields (job_id, date, fiche_id, delivery_id...) are included.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from datetime import UTC, datetime

import orjson

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "request_id", "taskName", "request", "server_time"}
)
access_logger = logging.getLogger("config.access")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            # django.request logs after our middleware returned: take the id from the request.
            request = getattr(record, "request", None)
            record.request_id = getattr(request, "request_id", None) or request_id_var.get()
        return True


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class StructuredFormatter(logging.Formatter):
    def __init__(self, fmt: str = "text", **kwargs):
        super().__init__()
        self.as_json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        extras = _extras(record)
        request_id = getattr(record, "request_id", "-")
        if self.as_json:
            entry = {
                "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname,
                "logger": record.name,
                "message": message,
                "request_id": request_id,
                **extras,
            }
            if record.exc_info:
                entry["exc_info"] = self.formatException(record.exc_info)
            return orjson.dumps(entry, default=str).decode()
        ts = datetime.fromtimestamp(record.created).isoformat(sep=" ", timespec="milliseconds")
        line = f"{ts} {record.levelname:<7} {record.name} [{request_id}] {message}"
        if extras:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text_value(value) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


class RequestIdMiddleware:
    header = "X-Request-ID"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get(self.header, "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        request.request_id = request_id
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response[self.header] = request_id
            user = getattr(request, "user", None)
            access_logger.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "user_id": getattr(user, "pk", None),
                },
            )
            return response
        finally:
            request_id_var.reset(token)
