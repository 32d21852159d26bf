"""Fixtures of the realtime tests: real HTTP servers on 127.0.0.1 for the outside systems.

- ``PusherStub``: a Pusher REST API stand-in that **verifies** the REST auth signature of every
  request (``auth_key``, ``auth_timestamp``, ``auth_version``, ``body_md5``, ``auth_signature``)
  and answers 401 when it is wrong; it records every request.
- ``Receiver``: a webhook receiver scripted per test (status codes, headers, bodies, delays),
  recording every request with its exact body bytes.
- ``ListeningSocket``: a bare TCP listener counting the connections it receives (to prove that no
  connection was made).
- ``fake_dns``: ``socket.getaddrinfo`` answers for chosen names (no DNS runs here); other names
  resolve normally.
- ``in_worker``: run a callable as the body of an eagerly applied Celery task, i.e. the way job code
  runs in a worker (``current_task`` set), so after-commit Pusher batches are sent right away.
- ``queued_tasks``: the task messages waiting in a Redis queue of the test broker (no worker runs).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from celery import shared_task

from fiches.models import ProgressiveFetchJob
from realtime import publisher
from tests.support import queued_tasks, sale  # noqa: F401  (used by the test modules)

APP_ID, APP_KEY, APP_SECRET = "123", "key", "secret"


def free_port() -> int:
    """A port on 127.0.0.1 on which nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


class _HttpServerBase:
    handler: type[BaseHTTPRequestHandler]

    def __init__(self) -> None:
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def start(self):
        owner = self

        class Handler(self.handler):  # type: ignore[misc, valid-type]
            server_owner = owner

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# --- Pusher REST API stub ----------------------------------------------------------------------


def pusher_rest_signature(secret: str, method: str, path: str, params: dict[str, str]) -> str:
    """Pusher REST auth: hex HMAC-SHA256(secret, "METHOD\\npath\\nk=v&... sorted by key")."""
    query = "&".join(f"{k}={v}" for k, v in sorted((k, v) for k, v in params.items() if k != "auth_signature"))
    return hmac.new(secret.encode(), f"{method}\n{path}\n{query}".encode(), hashlib.sha256).hexdigest()


@dataclass
class PusherCall:
    path: str
    params: dict[str, str]
    body: bytes
    signature_ok: bool
    problem: str | None
    status: int

    @property
    def batch(self) -> list[dict]:
        return json.loads(self.body)["batch"]


class _PusherHandler(_QuietHandler):
    server_owner: PusherStub

    def do_POST(self):
        stub = self.server_owner
        body = self._body()
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        problem = stub.check(parts.path, params, body)
        status = 401 if problem else stub.status
        with stub.lock:
            stub.calls.append(PusherCall(parts.path, params, body, problem is None, problem, status))
        if stub.delay:
            time.sleep(stub.delay)
        self._send(
            status,
            b"{}" if status == 200 else f'{{"error": "{problem or status}"}}'.encode(),
            {"Content-Type": "application/json"},
        )


class PusherStub(_HttpServerBase):
    handler = _PusherHandler

    def __init__(self, *, app_id: str = APP_ID, key: str = APP_KEY, secret: str = APP_SECRET) -> None:
        super().__init__()
        self.app_id, self.key, self.secret = app_id, key, secret
        self.calls: list[PusherCall] = []
        self.status = 200  # answer of a correctly signed request
        self.delay = 0.0  # seconds to wait before answering

    def check(self, path: str, params: dict[str, str], body: bytes) -> str | None:
        """Why the request's REST auth is wrong, or None when it is right."""
        for name in ("auth_key", "auth_timestamp", "auth_version", "body_md5", "auth_signature"):
            if name not in params:
                return f"missing {name}"
        if params["auth_key"] != self.key:
            return "wrong auth_key"
        if params["auth_version"] != "1.0":
            return "wrong auth_version"
        if abs(time.time() - int(params["auth_timestamp"])) > 600:
            return "stale auth_timestamp"
        if params["body_md5"] != hashlib.md5(body).hexdigest():
            return "wrong body_md5"
        expected = pusher_rest_signature(self.secret, "POST", path, params)
        if not hmac.compare_digest(expected, params["auth_signature"]):
            return "wrong auth_signature"
        return None

    def messages(self) -> list[dict]:
        """Every batch entry of every correctly signed request, in order."""
        with self.lock:
            return [entry for call in self.calls if call.signature_ok for entry in call.batch]

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()


@pytest.fixture
def pusher_stub(settings) -> Iterator[PusherStub]:
    """A running Pusher API stub; the PUSHER_* settings point at it."""
    stub = PusherStub().start()
    settings.PUSHER_APP_ID = APP_ID
    settings.PUSHER_KEY = APP_KEY
    settings.PUSHER_SECRET = APP_SECRET
    settings.PUSHER_CLUSTER = ""
    settings.PUSHER_HOST = "127.0.0.1"
    settings.PUSHER_PORT = stub.port
    settings.PUSHER_USE_TLS = False
    settings.PUSHER_TIMEOUT_SECONDS = 2.0
    settings.PUSHER_BACKOFF_SECONDS = 30.0
    try:
        yield stub
    finally:
        stub.stop()


@pytest.fixture(autouse=True)
def _realtime_defaults(settings) -> Iterator[None]:
    """Pusher disabled unless a test points it at a stub, strict events, fresh circuit breaker."""
    settings.PUSHER_APP_ID = ""
    settings.PUSHER_KEY = ""
    settings.PUSHER_SECRET = ""
    settings.REALTIME_STRICT_EVENTS = True
    settings.WEBHOOK_ALLOWED_ORIGINS = []
    publisher._circuit["open_until"] = 0
    yield
    publisher._circuit["open_until"] = 0


# --- Webhook receiver -----------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float


class _ReceiverHandler(_QuietHandler):
    server_owner: Receiver

    def do_POST(self):
        receiver = self.server_owner
        body = self._body()
        with receiver.lock:
            receiver.received.append(
                Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
            )
            reply = receiver.script.pop(0) if receiver.script else receiver.default
        if reply.delay:
            time.sleep(reply.delay)
        try:
            self._send(reply.status, reply.body, reply.headers)
        except OSError:  # the client gave up (timeout)
            pass

    do_GET = do_POST


class Receiver(_HttpServerBase):
    handler = _ReceiverHandler

    def __init__(self) -> None:
        super().__init__()
        self.script: list[Reply] = []
        self.default = Reply()
        self.received: list[Received] = []

    def url(self, path: str = "/hook") -> str:
        return f"{self.origin}{path}"

    def respond(self, *replies: Reply | int) -> None:
        """The next answers, in order (an int is a bare status); then the default (200)."""
        with self.lock:
            self.script = [r if isinstance(r, Reply) else Reply(status=r) for r in replies]

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture
def receiver(settings) -> Iterator[Receiver]:
    """A running webhook receiver, allowlisted, with fast retries and a short timeout."""
    server = Receiver().start()
    settings.WEBHOOK_ALLOWED_ORIGINS = [server.origin]
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0.01
    settings.WEBHOOK_RETRY_MAX_SECONDS = 60.0
    settings.WEBHOOK_TIMEOUT_SECONDS = 1.0
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    try:
        yield server
    finally:
        server.stop()


# --- Bare TCP listener -------------------------------------------------------------------------------


class ListeningSocket:
    """A TCP socket listening on 127.0.0.1 that accepts (and counts) every connection."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _accept_all(self) -> None:
        with self._lock:
            while True:
                try:
                    conn, _ = self.sock.accept()
                except (BlockingIOError, OSError):
                    return
                self._count += 1
                conn.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._accept_all()
            time.sleep(0.005)

    @property
    def connections(self) -> int:
        self._accept_all()  # anything still in the backlog counts too
        return self._count

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[ListeningSocket]:
    sock = ListeningSocket()
    try:
        yield sock
    finally:
        sock.close()


# --- Fake DNS --------------------------------------------------------------------------------------


class FakeDns:
    def __init__(self) -> None:
        self.table: dict[str, list[str] | Callable[[], list[str]]] = {}
        self.lookups: list[str] = []  # every name looked up (answered here or not)

    def set(self, host: str, answer: list[str] | Callable[[], list[str]]) -> None:
        self.table[host] = answer


@pytest.fixture
def fake_dns(monkeypatch) -> FakeDns:
    """``socket.getaddrinfo`` answers for the names in ``fake_dns.table``; other names as usual."""
    dns = FakeDns()
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        dns.lookups.append(name)
        if name not in dns.table:
            return real(host, port, family, type, proto, flags)
        answer = dns.table[name]
        addresses = answer() if callable(answer) else answer
        number = int(port) if port not in (None, "") else 0
        infos = []
        for address in addresses:
            af = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family not in (0, socket.AF_UNSPEC, af):
                continue
            sockaddr = (address, number, 0, 0) if af == socket.AF_INET6 else (address, number)
            infos.append((af, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        if not infos:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return infos

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return dns


# --- Celery helpers ------------------------------------------------------------------------------------

_WORK: dict[str, Callable[[], Any]] = {}


@shared_task(name="tests.realtime.run_in_worker")
def _run_in_worker(key: str):
    return _WORK.pop(key)()


def in_worker(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` as the body of a Celery task applied eagerly (as in a worker: ``current_task``
    is set), re-raising its exception."""
    key = uuid.uuid4().hex
    _WORK[key] = fn
    return _run_in_worker.apply(args=[key]).get()


# --- Jobs and users --------------------------------------------------------------------------------------

START = date(2026, 3, 2)


def days(start: date, n: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(n)]


def make_job(user, *, start: date = START, n: int = 2, **fields) -> ProgressiveFetchJob:
    all_days = days(start, n)
    values = {
        "start_date": start,
        "end_date": all_days[-1],
        "total_days": n,
        "dates_remaining": all_days,
        "requested_by": user,
        "status": "processing",
        "scope_kind": "ALL",
    }
    values.update(fields)
    return ProgressiveFetchJob.objects.create(**values)
