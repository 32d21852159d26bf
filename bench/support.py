"""Processes and load for the benchmarks: a gunicorn server, Celery workers, wrk."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**overrides: str) -> dict[str, str]:
    """The environment of the processes a benchmark starts: the project's defaults (the bench's own
    database and Redis database), workers logging at WARNING, and ``overrides``."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "LOG_LEVEL": "WARNING"}
    env.update(overrides)
    return env


class Proc:
    def __init__(self, name: str, args: list[str], env: dict[str, str]):
        LOGS.mkdir(exist_ok=True)
        self.log_path = LOGS / f"{name}.log"
        with open(self.log_path, "w") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_web(env: dict[str, str], *, workers: int = 4, threads: int = 2) -> tuple[Proc, str]:
    """gunicorn on the bench settings (the project's, plus the plain JSON baseline view)."""
    port = free_port()
    env = {**env, "DJANGO_SETTINGS_MODULE": "bench.settings"}
    proc = Proc(
        "web",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--worker-class",
            "gthread",
            "--threads",
            str(threads),
        ],
        env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/api/health", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.3)
    proc.stop()
    raise RuntimeError(f"web did not start: {proc.log_path.read_text()[-2000:]}")


def start_worker(
    env: dict[str, str],
    *,
    name: str = "worker",
    concurrency: int = 4,
    queues: str = "default,crm,webhooks",
    pool: str = "prefork",
) -> Proc:
    proc = Proc(
        name,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            queues,
            "--pool",
            pool,
            "-c",
            str(concurrency),
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
            "--include",
            "bench.tasks",
        ],
        env,
    )
    from config.celery import app

    node = f"{name}@{socket.gethostname()}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if app.control.ping(destination=[node], timeout=0.5):
            return proc
        if proc.process.poll() is not None:
            break
    proc.stop()
    raise RuntimeError(f"worker did not start: {proc.log_path.read_text()[-2000:]}")


def database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("[bench] installing wrk (Debian package)...", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or "wrk"


def wrk(url: str, *, token: str, connections: int, seconds: int, rate_hint: str = "") -> dict:
    """Run wrk with an Authorization header; returns latency percentiles (ms) and requests/s."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            f'wrk.headers["Authorization"] = "Bearer {token}"\n'
            "done = function(summary, latency, requests)\n"
            '  io.write(string.format("P50 %f\\nP99 %f\\nERRORS %d\\n", latency:percentile(50) / 1000, '
            "latency:percentile(99) / 1000, summary.errors.status + summary.errors.connect + "
            "summary.errors.read + summary.errors.timeout))\nend\n"
        )
    out = subprocess.run(
        [
            ensure_wrk(),
            "-t",
            str(min(connections, 2)),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--timeout",
            "5s",
            "-s",
            script.name,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    os.unlink(script.name)
    return {
        "p50_ms": float(re.search(r"P50 ([\d.]+)", out).group(1)),
        "p99_ms": float(re.search(r"P99 ([\d.]+)", out).group(1)),
        "errors": int(re.search(r"ERRORS (\d+)", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
    }
