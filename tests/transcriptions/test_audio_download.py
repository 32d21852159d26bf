"""Upload mode (``TRANSCRIPTION_UPLOAD_AUDIO``): the recording download of the ElevenLabs client goes
through the webhooks' SSRF guard, streams to a temporary file under a size cap and a total deadline,
and the multipart upload streams that file. Real HTTP servers on 127.0.0.1: a recording server with
scripted behaviours and a vendor stub that keeps what it received. The temporary directory is a
dedicated one (``tempfile.tempdir``), so a file left behind, or still open, is seen."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from transcriptions.clients import elevenlabs as client
from transcriptions.clients.elevenlabs import ElevenLabsPermanentError, ElevenLabsTransientError

KEY = "sk_test_download-distinctive-key-4242"
TOKEN = "SIGNED-TOKEN-d0wnl0ad-s3cret"  # the signed URL's secret: never in an error or a log line
CALL_ID = "c-2226001-1"
AUDIO = hashlib.sha256(b"seed").digest() * 40_000  # 1.28 MB, several download and upload blocks
CHUNK = 64 * 1024


# --- The recording server ---------------------------------------------------------------------------


@dataclass
class Hit:
    path: str
    query: dict[str, list[str]]


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.audio = AUDIO
        self.chunks_sent = 0
        self.answered = threading.Event()  # a handler finished (or gave up on) its answer
        self.cut_after: float | None = None  # seconds until the client dropped a dripped answer

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.origin}{path}{sep}token={TOKEN}"


class _RecordingHandler(BaseHTTPRequestHandler):
    server: _RecordingServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        with self.server.lock:
            self.server.hits.append(Hit(parts.path, query))
        try:
            self._answer(parts.path, query)
        except OSError:  # the client went away: that is what several tests wait for
            pass
        finally:
            self.server.answered.set()

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()

    def _answer(self, path: str, query: dict[str, list[str]]) -> None:
        server = self.server
        if path == "/audio.mp3":
            self._head(200, {"Content-Type": "audio/mpeg", "Content-Length": str(len(server.audio))})
            self.wfile.write(server.audio)
        elif path == "/redirect":
            self._head(int(query.get("status", ["302"])[0]), {"Location": query["to"][0], "Content-Length": "0"})
        elif path == "/loop":
            self._head(302, {"Location": "/loop?token=again", "Content-Length": "0"})
        elif path == "/declared-too-big":  # headers now, the body never (unless the client waits for it)
            self._head(200, {"Content-Type": "audio/mpeg", "Content-Length": "5000"})
            server.stop.wait(10)
        elif path == "/chunked-forever":
            self._head(200, {"Content-Type": "audio/mpeg", "Transfer-Encoding": "chunked"})
            block = b"x" * CHUNK
            for _ in range(1000):  # 64 MB if nobody stops reading
                if server.stop.is_set():
                    return
                self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                server.chunks_sent += 1
            self.wfile.write(b"0\r\n\r\n")
        elif path.startswith("/drip"):
            self._drip(path)
        elif path == "/status":
            code = int(query["code"][0])
            self._head(code, {"Content-Length": "0", "Retry-After": "7"})
        else:
            self._head(404, {"Content-Length": "0"})

    def _drip(self, path: str) -> None:
        """One byte every 0.1 s: of the headers (``/drip-headers``), or of a body with a length
        (``/drip``) or without one, ended by closing the connection (``/drip-close``)."""
        server, started = self.server, time.monotonic()
        if path == "/drip-headers":
            raw = b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nX-Padding: " + b"p" * 300 + b"\r\n\r\nok"
        else:
            length = "" if path == "/drip-close" else "Content-Length: 300\r\n"
            head = f"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\n{length}Connection: close\r\n\r\n"
            self.wfile.write(head.encode())
            self.wfile.flush()
            raw = b"a" * 300
        self.close_connection = True
        try:
            for byte in raw:
                if server.stop.is_set():
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            server.cut_after = time.monotonic() - started
            raise

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(server: ThreadingHTTPServer) -> Callable[[], None]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return stop


@pytest.fixture
def recordings() -> Iterator[_RecordingServer]:
    server = _RecordingServer()
    stop = _serve(server)
    try:
        yield server
    finally:
        server.stop.set()
        stop()


@pytest.fixture
def internal() -> Iterator[_RecordingServer]:
    """Another server on loopback, standing for an internal service nobody allowlisted."""
    server = _RecordingServer()
    stop = _serve(server)
    try:
        yield server
    finally:
        server.stop.set()
        stop()


# --- The vendor stub ----------------------------------------------------------------------------------


@dataclass
class Upload:
    headers: dict[str, str]
    fields: dict[str, str]
    file_name: str | None
    file_type: str | None
    file_sha256: str
    file_size: int
    temp_files_during_upload: list[str]


class _VendorStub(ThreadingHTTPServer):
    """Keeps each request's body in a file of its own (read in blocks: the stub must not skew the
    memory test) and parses them when ``uploads`` is read."""

    daemon_threads = True

    def __init__(self, spool: Path, watched: Path) -> None:
        super().__init__(("127.0.0.1", 0), _VendorHandler)
        self.spool, self.watched = spool, watched
        self.received: list[tuple[dict[str, str], Path, list[str]]] = []
        self.status = 200

    @property
    def uploads(self) -> list[Upload]:
        return [_parse(headers, path, during) for headers, path, during in self.received]


def _parse(headers: dict[str, str], path: Path, during: list[str]) -> Upload:
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + headers["content-type"].encode() + b"\r\n\r\n" + path.read_bytes()
    )
    fields: dict[str, str] = {}
    upload: dict[str, Any] = {"file_name": None, "file_type": None, "file_sha256": "", "file_size": 0}
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        content = payload if isinstance(payload, bytes) else b""
        name = part.get_param("name", header="content-disposition")
        if name == "file":
            upload = {
                "file_name": part.get_filename(),
                "file_type": part.get_content_type(),
                "file_sha256": hashlib.sha256(content).hexdigest(),
                "file_size": len(content),
            }
        else:
            fields[str(name)] = content.decode()
    return Upload(headers=headers, fields=fields, temp_files_during_upload=during, **upload)


class _VendorHandler(BaseHTTPRequestHandler):
    server: _VendorStub

    def do_POST(self) -> None:
        during = temp_files(self.server.watched)  # what the client holds there while it sends (same process)
        path = self.server.spool / f"body-{len(self.server.received)}"
        with path.open("wb") as out:
            left = int(self.headers["Content-Length"])
            while left:
                block = self.rfile.read(min(CHUNK, left))
                if not block:
                    break
                out.write(block)
                left -= len(block)
        self.server.received.append(({k.lower(): v for k, v in self.headers.items()}, path, during))
        body = orjson.dumps({"language_code": "fr", "language_probability": 1, "text": "Bonjour.", "words": []})
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# --- Fixtures -----------------------------------------------------------------------------------------


def temp_files(directory: Path) -> list[str]:
    """Files in ``directory``, and files of this process still open there (an unnamed temporary file
    shows only as an open descriptor)."""
    found = [entry.name for entry in directory.iterdir()]
    proc = Path("/proc/self/fd")
    if proc.is_dir():
        for fd in proc.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(str(directory)):
                found.append(f"open: {target}")
    return found


@pytest.fixture
def audio_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary directory of this test's own for every ``tempfile`` file."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.fixture
def vendor(settings, tmp_path: Path, audio_tmp: Path) -> Iterator[_VendorStub]:
    spool = tmp_path / "vendor"
    spool.mkdir()
    server = _VendorStub(spool, audio_tmp)
    stop = _serve(server)
    settings.ELEVENLABS_BASE_URL = f"http://127.0.0.1:{server.server_address[1]}"
    settings.ELEVENLABS_API_KEY = KEY
    settings.ELEVENLABS_MODEL_ID = "scribe_v2"
    settings.ELEVENLABS_TIMEOUT_SECONDS = 10.0
    settings.TRANSCRIPTION_LANGUAGE = "fr"
    settings.TRANSCRIPTION_UPLOAD_AUDIO = True
    settings.TRANSCRIPTION_MAX_AUDIO_BYTES = 200 * 1024 * 1024
    settings.TRANSCRIPTION_DOWNLOAD_TIMEOUT_SECONDS = 10.0
    settings.RECORDING_ALLOWED_ORIGINS = []
    try:
        yield server
    finally:
        stop()


@pytest.fixture
def allowed(settings, recordings: _RecordingServer, vendor: _VendorStub) -> _RecordingServer:
    """The recording server allowlisted (a trusted loopback host, like the dev simulators)."""
    settings.RECORDING_ALLOWED_ORIGINS = [recordings.origin]
    return recordings


def transcribe(url: str) -> client.SttResult:
    return client.transcribe(recording_url=url, call_id=CALL_ID)


def assert_clean(exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    """No signed token or key in the error, its chain or any log line."""
    for text in (str(exc), repr(exc), caplog.text):
        assert TOKEN not in text and KEY not in text
    assert exc.__cause__ is None and exc.__context__ is None
    for record in caplog.records:
        assert TOKEN not in record.getMessage() and TOKEN not in repr(vars(record))


# --- A normal download ----------------------------------------------------------------------------------


def test_the_recording_is_streamed_to_a_temp_file_and_uploaded_byte_for_byte(allowed, vendor, audio_tmp, caplog):
    caplog.set_level(logging.INFO)
    result = transcribe(allowed.url("/audio.mp3"))

    assert result.text == "Bonjour."
    assert [hit.path for hit in allowed.hits] == ["/audio.mp3"]
    assert allowed.hits[0].query["token"] == [TOKEN]  # the signed URL was used as given
    [upload] = vendor.uploads
    assert upload.file_sha256 == hashlib.sha256(AUDIO).hexdigest() and upload.file_size == len(AUDIO)
    assert (upload.file_name, upload.file_type) == (f"{CALL_ID}.mp3", "audio/mpeg")
    assert upload.fields == {
        "model_id": "scribe_v2",
        "language_code": "fr",
        "diarize": "true",
        "num_speakers": "2",
        "timestamps_granularity": "word",
        "tag_audio_events": "false",
    }
    assert int(upload.headers["content-length"]) > len(AUDIO) and "transfer-encoding" not in upload.headers
    assert upload.headers["xi-api-key"] == KEY
    # The recording was on disk in the temporary directory while it was sent, and is gone now.
    assert len(upload.temp_files_during_upload) == 1 and upload.temp_files_during_upload[0].startswith("open: ")
    assert temp_files(audio_tmp) == []
    assert TOKEN not in caplog.text


def test_a_recording_of_exactly_the_cap_passes(allowed, vendor, audio_tmp, settings):
    settings.TRANSCRIPTION_MAX_AUDIO_BYTES = len(AUDIO)
    transcribe(allowed.url("/audio.mp3"))
    assert vendor.uploads[0].file_size == len(AUDIO)
    assert temp_files(audio_tmp) == []


def test_the_recording_is_never_held_in_memory(allowed, vendor, audio_tmp):
    allowed.audio = os.urandom(1024) * 16 * 1024  # 16 MiB
    tracemalloc.start()
    try:
        transcribe(allowed.url("/audio.mp3"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert vendor.uploads[0].file_sha256 == hashlib.sha256(allowed.audio).hexdigest()
    assert peak < 4 * 1024 * 1024  # the whole file, even once, would be 16 MiB
    assert temp_files(audio_tmp) == []


def test_a_redirect_to_an_allowed_place_is_followed(allowed, vendor, audio_tmp):
    transcribe(allowed.url(f"/redirect?to={allowed.origin}/audio.mp3"))
    assert [hit.path for hit in allowed.hits] == ["/redirect", "/audio.mp3"]
    assert vendor.uploads[0].file_sha256 == hashlib.sha256(AUDIO).hexdigest()


# --- The SSRF guard -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_url,reason",
    [
        (lambda server: server.url("/audio.mp3"), "loopback address"),
        (lambda server: server.url("/audio.mp3").replace("127.0.0.1", "localhost"), "is internal"),
        (lambda server: server.url("/audio.mp3").replace("127.0.0.1", "2130706433"), "loopback address"),
        (lambda server: server.url("/audio.mp3").replace("127.0.0.1", "[::ffff:127.0.0.1]"), "loopback address"),
        (lambda server: f"http://10.1.2.3/a.mp3?token={TOKEN}", "private address"),
        (lambda server: f"http://169.254.169.254/latest/meta-data/?token={TOKEN}", "cloud metadata address"),
        (lambda server: f"file:///etc/passwd?token={TOKEN}", "only http and https"),
        (lambda server: f"ftp://recordings.example/a.mp3?token={TOKEN}", "only http and https"),
        (lambda server: f"http://user:{TOKEN}@recordings.example/a.mp3", "credentials"),
    ],
    ids=["loopback", "localhost", "decimal-ip", "ipv4-mapped", "private", "metadata", "file", "ftp", "userinfo"],
)
def test_an_unsafe_url_is_refused_before_any_request(recordings, vendor, audio_tmp, caplog, make_url, reason):
    """The recording server is on 127.0.0.1 but not allowlisted."""
    with pytest.raises(ElevenLabsPermanentError) as excinfo:
        transcribe(make_url(recordings))
    assert not isinstance(excinfo.value, ElevenLabsTransientError)
    assert "recording URL refused" in str(excinfo.value) and reason in str(excinfo.value)
    assert_clean(excinfo.value, caplog)
    assert recordings.hits == [] and vendor.uploads == []
    assert temp_files(audio_tmp) == []


def test_a_webhook_allowlist_does_not_trust_recording_hosts(recordings, vendor, settings):
    settings.WEBHOOK_ALLOWED_ORIGINS = [recordings.origin]
    with pytest.raises(ElevenLabsPermanentError, match="loopback"):
        transcribe(recordings.url("/audio.mp3"))
    assert recordings.hits == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_the_metadata_address_is_refused(allowed, vendor, audio_tmp, caplog, status):
    target = f"http://169.254.169.254/latest/meta-data/iam?token={TOKEN}"
    with pytest.raises(ElevenLabsPermanentError) as excinfo:
        transcribe(allowed.url(f"/redirect?status={status}&to={target}"))
    assert "recording URL refused: cloud metadata address" in str(excinfo.value)
    assert_clean(excinfo.value, caplog)
    assert [hit.path for hit in allowed.hits] == ["/redirect"] and vendor.uploads == []
    assert temp_files(audio_tmp) == []


def test_a_redirect_to_a_loopback_port_not_allowlisted_is_refused(allowed, internal, vendor, audio_tmp, caplog):
    with pytest.raises(ElevenLabsPermanentError) as excinfo:
        transcribe(allowed.url(f"/redirect?to={internal.origin}/audio.mp3"))
    assert "recording URL refused: loopback address" in str(excinfo.value)
    assert_clean(excinfo.value, caplog)
    assert internal.hits == [] and vendor.uploads == []


def test_redirects_are_followed_a_few_times_only(allowed, vendor, audio_tmp):
    with pytest.raises(ElevenLabsPermanentError) as excinfo:
        transcribe(allowed.url("/loop"))
    assert "more than 3 redirect(s)" in str(excinfo.value)
    assert len(allowed.hits) == 4  # the URL and three redirects
    assert temp_files(audio_tmp) == []


@pytest.fixture
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``recordings.partner.example`` answers a public address once, then 127.0.0.1 (DNS rebinding)."""
    lookups: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "recordings.partner.example":
            return real(host, port, *args, **kwargs)
        address = "93.184.216.34" if not lookups else "127.0.0.1"
        lookups.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_the_connection_goes_only_to_a_checked_address(recordings, vendor, audio_tmp, rebinding_dns, caplog):
    """The guard saw a public address; the connection resolves again and refuses the loopback one
    instead of connecting to whatever the name says now."""
    url = f"http://recordings.partner.example:{recordings.server_address[1]}/audio.mp3?token={TOKEN}"
    with pytest.raises(ElevenLabsPermanentError) as excinfo:
        transcribe(url)
    assert "non-public address" in str(excinfo.value)
    assert_clean(excinfo.value, caplog)
    assert rebinding_dns == ["93.184.216.34", "127.0.0.1"]
    assert recordings.hits == [] and vendor.uploads == []
    assert temp_files(audio_tmp) == []


# --- Size cap and deadline ------------------------------------------------------------------------------


def test_a_declared_length_over_the_cap_fails_before_reading(allowed, vendor, audio_tmp, settings, caplog):
    settings.TRANSCRIPTION_MAX_AUDIO_BYTES = 1000
    started = time.monotonic()
    with pytest.raises(ElevenLabsPermanentError) as excinfo:
        transcribe(allowed.url("/declared-too-big"))
    assert time.monotonic() - started < 3  # the server sends no body for 10 s: nothing was waited for
    assert "recording is 5000 bytes, over TRANSCRIPTION_MAX_AUDIO_BYTES (1000 bytes)" in str(excinfo.value)
    assert_clean(excinfo.value, caplog)
    assert vendor.uploads == [] and temp_files(audio_tmp) == []


def test_a_chunked_body_growing_past_the_cap_is_cut(allowed, vendor, audio_tmp, settings, caplog):
    settings.TRANSCRIPTION_MAX_AUDIO_BYTES = 300_000
    with pytest.raises(ElevenLabsPermanentError) as excinfo:
        transcribe(allowed.url("/chunked-forever"))
    assert "recording larger than TRANSCRIPTION_MAX_AUDIO_BYTES (300000 bytes): download stopped" in str(excinfo.value)
    assert_clean(excinfo.value, caplog)
    assert allowed.answered.wait(10)  # the server notices the closed connection once its socket buffers fill
    assert allowed.chunks_sent < 1000  # the client stopped reading long before the 64 MB end
    assert vendor.uploads == [] and temp_files(audio_tmp) == []


@pytest.mark.parametrize("path", ["/drip", "/drip-close", "/drip-headers"])
def test_a_dripping_server_is_cut_at_the_total_deadline(allowed, vendor, audio_tmp, settings, caplog, path):
    """300 bytes at 10 per second would take 30 s and no single read ever waits 0.2 s."""
    settings.TRANSCRIPTION_DOWNLOAD_TIMEOUT_SECONDS = 1.0
    started = time.monotonic()
    with pytest.raises(ElevenLabsTransientError) as excinfo:
        transcribe(allowed.url(path))
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5
    assert "cut at the 1 s deadline" in str(excinfo.value)
    assert allowed.answered.wait(3) and allowed.cut_after is not None  # the server saw the connection close
    assert_clean(excinfo.value, caplog)
    assert vendor.uploads == [] and temp_files(audio_tmp) == []


# --- Statuses and the vendor's failures ------------------------------------------------------------------


@pytest.mark.parametrize("code,transient", [(403, False), (410, False), (500, True), (503, True), (429, True)])
def test_download_statuses_are_typed(allowed, vendor, audio_tmp, caplog, code, transient):
    with pytest.raises((ElevenLabsTransientError, ElevenLabsPermanentError)) as excinfo:
        transcribe(allowed.url(f"/status?code={code}"))
    assert isinstance(excinfo.value, ElevenLabsTransientError) is transient
    assert excinfo.value.status == code and f"recording download answered {code}" in str(excinfo.value)
    if transient:
        assert excinfo.value.retry_after == 7.0
    assert_clean(excinfo.value, caplog)
    assert vendor.uploads == [] and temp_files(audio_tmp) == []


def test_the_temp_file_is_deleted_when_the_vendor_fails(allowed, vendor, audio_tmp):
    vendor.status = 503
    with pytest.raises(ElevenLabsTransientError):
        transcribe(allowed.url("/audio.mp3"))
    assert len(vendor.uploads) == 1 and vendor.uploads[0].file_size == len(AUDIO)
    assert temp_files(audio_tmp) == []


def test_a_prepared_request_abandoned_by_an_exception_deletes_its_file(allowed, vendor, audio_tmp):
    """The task takes a provider slot between prepare and send: when that fails, leaving its ``with``
    block closes the request."""

    class SlotBusy(Exception):
        pass

    with pytest.raises(SlotBusy):
        with client.prepare_request(recording_url=allowed.url("/audio.mp3"), call_id=CALL_ID) as request:
            assert request.audio_size == len(AUDIO)
            assert len(temp_files(audio_tmp)) == 1
            raise SlotBusy
    assert temp_files(audio_tmp) == [] and vendor.uploads == []


def test_a_prepared_request_can_be_sent_twice(allowed, vendor, audio_tmp):
    with client.prepare_request(recording_url=allowed.url("/audio.mp3"), call_id=CALL_ID) as request:
        client.send_request(request, call_id=CALL_ID)
        client.send_request(request, call_id=CALL_ID)
    assert [u.file_sha256 for u in vendor.uploads] == [hashlib.sha256(AUDIO).hexdigest()] * 2
    assert len(allowed.hits) == 1 and temp_files(audio_tmp) == []
