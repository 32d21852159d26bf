"""The CRM gateway simulator: a threaded HTTP server serving the contract of crm-gateway.md.

Data comes from ``fiches.simulator.data``; the knobs of ``SimulatorConfig`` add latency, failures
(503 on chosen dates or at random, 504 on long ranges) and bearer-token auth. Every contract request
is logged with its start and end time so tests can assert how the CRM was called; the log and the
knobs are exposed (without auth) under ``/__sim__/``::

    with CrmSimulator(SimulatorConfig(latency_ms=200)) as sim:
        requests.get(f"{sim.url}/api/fiches/by-id/2225000")
        sim.config.fail_dates = frozenset({date(2026, 2, 2)})  # applies to the next request
        sim.requests()  # [{"method": "GET", "path": "/api/fiches/by-id/2225000", ...}]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from fiches.simulator import data

logger = logging.getLogger(__name__)

ENV_VARS: dict[str, str] = {
    "seed": "CRM_SIM_SEED",
    "fiches_per_day": "CRM_SIM_FICHES_PER_DAY",
    "latency_ms": "CRM_SIM_LATENCY_MS",
    "fail_dates": "CRM_SIM_FAIL_DATES",
    "fail_rate": "CRM_SIM_FAIL_RATE",
    "max_range_days": "CRM_SIM_MAX_RANGE_DAYS",
    "revision": "CRM_SIM_REVISION",
    "api_key": "CRM_SIM_API_KEY",
}
_SALES_PATH = "/api/fiches/sales-with-calls"
_BY_ID_PREFIX = "/api/fiches/by-id/"
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_POLL_INTERVAL_S = 0.05  # how soon stop() takes effect
_Validator = Callable[[str, Any], Any]


@dataclasses.dataclass
class SimulatorConfig:
    """The simulator's knobs. Mutable: a running simulator reads them at each request."""

    seed: int = 42
    fiches_per_day: int = 20
    latency_ms: int = 0
    fail_dates: frozenset[date] = frozenset()
    fail_rate: float = 0.0
    max_range_days: int | None = None  # None: no limit
    revision: int = 0
    api_key: str | None = None  # None: no auth

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SimulatorConfig:
        """Defaults overridden by the ``CRM_SIM_*`` variables of ``environ`` (``os.environ`` by default)."""
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
        """Set knobs from JSON-like values (``fail_dates`` a list of ``YYYY-MM-DD``), all or none."""
        checked = {knob: _check_knob(knob, value) for knob, value in values.items()}
        for knob, value in checked.items():
            setattr(self, knob, value)

    def to_dict(self) -> dict[str, Any]:
        knobs = dataclasses.asdict(self)
        knobs["fail_dates"] = sorted(day.isoformat() for day in self.fail_dates)
        return knobs


def _split_csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _optional_text(text: str) -> str | None:
    return text or None


_TEXT_PARSERS: dict[str, Callable[[str], Any]] = {
    "seed": int,
    "fiches_per_day": int,
    "latency_ms": int,
    "fail_dates": _split_csv,
    "fail_rate": float,
    "max_range_days": int,
    "revision": int,
    "api_key": _optional_text,
}


def _integer(minimum: int | None = None, maximum: int | None = None, *, optional: bool = False) -> _Validator:
    def check(knob: str, value: Any) -> int | None:
        if value is None and optional:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{knob} must be an integer{' or null' if optional else ''}")
        if minimum is not None and value < minimum:
            raise ValueError(f"{knob} must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"{knob} must be <= {maximum}")
        return value

    return check


def _fail_rate(knob: str, value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"{knob} must be a number between 0 and 1")
    return float(value)


def _fail_dates(knob: str, value: Any) -> frozenset[date]:
    """A list of ``YYYY-MM-DD`` strings (or of dates, from Python)."""
    error = ValueError(f"{knob} must be a list of YYYY-MM-DD dates")
    if not isinstance(value, list | tuple | set | frozenset):
        raise error
    days = set()
    for item in value:
        day = item if isinstance(item, date) else _parse_iso_date(item)
        if day is None:
            raise error
        days.add(day)
    return frozenset(days)


def _api_key(knob: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{knob} must be a string or null")
    return value or None


_VALIDATORS: dict[str, _Validator] = {
    "seed": _integer(),
    "fiches_per_day": _integer(0, data.MAX_SALES_PER_DAY),
    "latency_ms": _integer(0),
    "fail_dates": _fail_dates,
    "fail_rate": _fail_rate,
    "max_range_days": _integer(1, optional=True),
    "revision": _integer(0),
    "api_key": _api_key,
}


def _check_knob(knob: str, value: Any) -> Any:
    """The validated value of one knob; ValueError with a readable message otherwise."""
    validator = _VALIDATORS.get(knob)
    if validator is None:
        raise ValueError(f"unknown knob {knob!r}")
    return validator(knob, value)


def _parse_iso_date(value: object) -> date | None:
    """A strict ``YYYY-MM-DD`` date (``date.fromisoformat`` alone also accepts ``20260201``)."""
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


class _ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Server(ThreadingHTTPServer):
    """The HTTP server, with the state its handler threads share: the request log and the failure dice."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: CrmSimulator) -> None:
        self.simulator = simulator
        self._log: list[dict[str, Any]] = []
        self._log_lock = threading.Lock()
        self._fail_rng = random.Random(simulator.config.seed)
        self._fail_lock = threading.Lock()
        super().__init__(address, _Handler)

    def record_request(self, entry: dict[str, Any]) -> None:
        with self._log_lock:
            self._log.append(entry)

    def recorded_requests(self) -> list[dict[str, Any]]:
        with self._log_lock:
            return [dict(entry, params=dict(entry["params"])) for entry in self._log]

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    def random_failure(self, fail_rate: float) -> bool:
        if fail_rate <= 0:
            return False
        with self._fail_lock:
            return self._fail_rng.random() < fail_rate

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("CRM simulator: connection error with %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0: one request per connection, so nothing is served after stop() on a kept-alive socket.
    server_version = "CrmSimulator/1.0"

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("CRM simulator: %s - %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        started = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if url.path.startswith("/__sim__/"):
            self._send(*self._admin(url.path, body))
            return
        try:
            config = dataclasses.replace(self.server.simulator.config)  # this request's knobs, whatever changes
            status, payload = HTTPStatus.OK, self._api(config, url.path, params)
        except _ApiError as exc:
            status, payload = exc.status, {"success": False, "message": exc.message}
        except Exception:
            logger.exception("CRM simulator: error serving %s", self.path)
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            payload = {"success": False, "message": "Internal simulator error"}
        self.server.record_request(
            {
                "method": self.command,
                "path": url.path,
                "params": params,
                "start": started,
                "end": time.time(),
                "status": int(status),
            }
        )
        self._send(status, payload)

    def _api(self, config: SimulatorConfig, path: str, params: dict[str, str]) -> dict[str, Any]:
        """The 200 body of a contract request; raises _ApiError for every other answer."""
        if config.latency_ms:
            time.sleep(config.latency_ms / 1000)
        if config.api_key is not None and self.headers.get("Authorization") != f"Bearer {config.api_key}":
            raise _ApiError(HTTPStatus.UNAUTHORIZED, "Invalid or missing API key")
        if path != _SALES_PATH and not path.startswith(_BY_ID_PREFIX):
            raise _ApiError(HTTPStatus.NOT_FOUND, "Not found")
        if self.command != "GET":
            raise _ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "Method not allowed")
        if self.server.random_failure(config.fail_rate):
            raise _ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "CRM temporarily unavailable")
        if path == _SALES_PATH:
            return _sales_with_calls(config, params)
        return _fiche_by_id(config, path.removeprefix(_BY_ID_PREFIX))

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
                except ValueError as exc:  # json.JSONDecodeError is a ValueError
                    return HTTPStatus.BAD_REQUEST, {"success": False, "message": str(exc)}
                return HTTPStatus.OK, simulator.config.to_dict()
        else:
            return HTTPStatus.NOT_FOUND, {"success": False, "message": "Not found"}
        return HTTPStatus.METHOD_NOT_ALLOWED, {"success": False, "message": "Method not allowed"}

    def _send(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _sales_with_calls(config: SimulatorConfig, params: dict[str, str]) -> dict[str, Any]:
    start, end = _parse_iso_date(params.get("startDate")), _parse_iso_date(params.get("endDate"))
    if start is None or end is None:
        raise _ApiError(HTTPStatus.BAD_REQUEST, "startDate and endDate must be dates in YYYY-MM-DD format")
    if end < start:
        raise _ApiError(HTTPStatus.BAD_REQUEST, "endDate must not be before startDate")
    include = params.get("includeRecordings", "false").lower()
    if include not in ("true", "false"):
        raise _ApiError(HTTPStatus.BAD_REQUEST, "includeRecordings must be true or false")
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    if config.max_range_days is not None and len(days) > config.max_range_days:
        raise _ApiError(HTTPStatus.GATEWAY_TIMEOUT, f"Range too long: more than {config.max_range_days} days")
    if failing := sorted(config.fail_dates.intersection(days)):
        raise _ApiError(HTTPStatus.SERVICE_UNAVAILABLE, f"CRM unavailable for {failing[0].isoformat()}")
    fiches = [
        sale
        for day in days
        for sale in data.sales_for_date(
            day,
            seed=config.seed,
            fiches_per_day=config.fiches_per_day,
            revision=config.revision,
            include_recordings=include == "true",
        )
    ]
    return {
        "success": True,
        "startDate": start.isoformat(),
        "endDate": end.isoformat(),
        "total": len(fiches),
        "fiches": fiches,
    }


def _fiche_by_id(config: SimulatorConfig, fiche_id: str) -> dict[str, Any]:
    parsed = data.parse_fiche_id(fiche_id)
    if parsed is not None and parsed[0] in config.fail_dates:
        raise _ApiError(HTTPStatus.SERVICE_UNAVAILABLE, f"CRM unavailable for {parsed[0].isoformat()}")
    details = data.fiche_details(
        fiche_id, seed=config.seed, fiches_per_day=config.fiches_per_day, revision=config.revision
    )
    if details is None:
        raise _ApiError(HTTPStatus.NOT_FOUND, "Fiche not found")
    return details


class CrmSimulator:
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
                name=f"crm-simulator-{self.port}",
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
        """The contract requests answered so far, in order of response (copies): each has ``method``, ``path``,
        ``params`` (query string dict), ``start`` and ``end`` (epoch seconds) and ``status``."""
        return self._server.recorded_requests()

    def clear_requests(self) -> None:
        self._server.clear_requests()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
