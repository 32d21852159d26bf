"""Workflow tests: a real ``celery worker`` subprocess, real Redis and Postgres, and the CRM
simulator over HTTP. Data must be committed for the worker to see it (``transaction=True``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from fiches.simulator.server import CrmSimulator, SimulatorConfig
from tests.support import stop_process_group

ROOT = Path(__file__).resolve().parents[2]
WORKER_LOG_DIR = ROOT / ".pytest_workers"


def _flush_redis() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    client.close()


class Worker:
    """A ``celery worker`` subprocess on the test database and the test Redis database."""

    def __init__(
        self,
        *,
        env: dict[str, str],
        name: str,
        concurrency: int = 4,
        queues: str = "default,crm,webhooks,stt_high,stt,stt_low,llm",
        pool: str = "prefork",
    ):
        WORKER_LOG_DIR.mkdir(exist_ok=True)
        self.log_path = WORKER_LOG_DIR / f"{name}.log"
        self.env, self.name, self.concurrency, self.queues, self.pool = env, name, concurrency, queues, pool
        self.process: subprocess.Popen | None = None

    def start(self) -> Worker:
        with open(self.log_path, "w") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-Q",
                    self.queues,
                    "--pool",
                    self.pool,
                    "-c",
                    str(self.concurrency),
                    "-n",
                    f"{self.name}@%h",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-l",
                    "INFO",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "ready." in self.log_path.read_text(errors="replace"):
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_process_group(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def worker_env(crm_url: str, **overrides: str) -> dict[str, str]:
    db = connection.settings_dict
    # Production settings with explicit values (config.test_settings drops what the shell sets).
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "REALTIME_STRICT_EVENTS": "true",
        "CRM_BASE_URL": crm_url,
        "LOG_LEVEL": "INFO",
        "PROGRESSIVE_FETCH_RETRY_BASE_SECONDS": "0.2",
        "PROGRESSIVE_FETCH_DAY_MAX_ERRORS": "2",
        "CRM_TIMEOUT_SECONDS": "5",
        "CRM_RATE_LIMIT": "off",  # the rate limit has its own fault test
    }
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        env.pop(name, None)
    if settings.CELERY_BROKER_IS_AMQP:  # TEST_BROKER_URL: the workers consume RabbitMQ as this process publishes
        env["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def simulator():
    with CrmSimulator(SimulatorConfig(seed=42, fiches_per_day=6)) as sim:
        yield sim


@pytest.fixture(scope="module")
def worker(simulator, django_db_setup, django_db_blocker):
    """One worker for the module (the test Redis database is flushed before it starts only)."""
    with django_db_blocker.unblock():
        _flush_redis()
        w = Worker(env=worker_env(simulator.url), name="wf").start()
    yield w
    w.stop()


@pytest.fixture
def crm(simulator, settings):
    simulator.config = SimulatorConfig(seed=42, fiches_per_day=6)
    simulator.clear_requests()
    settings.CRM_BASE_URL = simulator.url
    return simulator


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


# --- The three simulators and a Pusher stub, for audit and automation workflows ---------------------------

AUDIT_LLM_KEY = "sk-llm-test-key-do-not-log"


@pytest.fixture(scope="module")
def audit_sims():
    """CRM (seed 42, 6 sales a day), speech-to-text and LLM simulators, and a Pusher-API stub."""
    from audits.simulator.server import LlmSimulator
    from audits.simulator.server import SimulatorConfig as LlmConfig
    from tests.workflow.faults import Recorder
    from transcriptions.simulator.server import SttSimulator, SttSimulatorConfig

    crm = CrmSimulator(SimulatorConfig(seed=42, fiches_per_day=6)).start()
    stt = SttSimulator(SttSimulatorConfig(seed=42, crm_seed=42)).start()
    llm = LlmSimulator(LlmConfig(api_key=AUDIT_LLM_KEY)).start()
    pusher = Recorder()
    yield crm, stt, llm, pusher
    crm.stop()
    stt.stop()
    llm.stop()
    pusher.stop()


def audit_env(crm, stt, llm, pusher, **overrides: str) -> dict[str, str]:
    return worker_env(
        crm.url,
        ELEVENLABS_BASE_URL=stt.url,
        ELEVENLABS_API_KEY="xi-test",
        TRANSCRIPTION_RETRY_BASE_SECONDS="0.2",
        LLM_BASE_URL=f"{llm.url}/v1",
        LLM_API_KEY=AUDIT_LLM_KEY,
        LLM_MODEL="sim-judge-1",
        LLM_MAX_RETRIES="0",
        AUDIT_STEP_RETRY_BASE_SECONDS="0.2",
        PUSHER_APP_ID="42",
        PUSHER_KEY="aud-key",
        PUSHER_SECRET="aud-secret",
        PUSHER_HOST="127.0.0.1",
        PUSHER_PORT=str(pusher.server_address[1]),
        PUSHER_USE_TLS="false",
        PUSHER_BACKOFF_SECONDS="0",
        **overrides,
    )


@pytest.fixture
def audit_stack(audit_sims, settings):
    """The simulators reset to their defaults, this process's settings pointed at them, the default
    audit config seeded, and ``start(name, **env)`` to start workers (stopped at the end)."""
    import dataclasses

    from django.core.management import call_command

    from audits.simulator.server import SimulatorConfig as LlmConfig
    from transcriptions.simulator.server import SttSimulatorConfig

    crm, stt, llm, pusher = audit_sims
    crm.config = SimulatorConfig(seed=42, fiches_per_day=6)
    crm.clear_requests()
    default = LlmConfig(api_key=AUDIT_LLM_KEY)
    llm.config.update({f.name: getattr(default, f.name) for f in dataclasses.fields(default)})
    llm.clear_requests()
    stt_default = SttSimulatorConfig(seed=42, crm_seed=42)
    stt.config.update({f.name: getattr(stt_default, f.name) for f in dataclasses.fields(stt_default)})
    stt.clear_requests()
    with pusher.lock:
        pusher.records.clear()
    settings.CRM_BASE_URL = crm.url
    settings.ELEVENLABS_BASE_URL, settings.ELEVENLABS_API_KEY = stt.url, "xi-test"
    settings.LLM_BASE_URL, settings.LLM_API_KEY, settings.LLM_MODEL = f"{llm.url}/v1", AUDIT_LLM_KEY, "sim-judge-1"
    settings.PUSHER_APP_ID, settings.PUSHER_KEY, settings.PUSHER_SECRET = "42", "aud-key", "aud-secret"
    settings.PUSHER_HOST, settings.PUSHER_PORT, settings.PUSHER_USE_TLS = "127.0.0.1", pusher.server_address[1], False
    call_command("seed_audit_configs", verbosity=0)
    workers: list[Worker] = []

    def start(name: str, **overrides: str) -> Worker:
        w = Worker(env=audit_env(crm, stt, llm, pusher, **overrides), name=name, concurrency=8).start()
        workers.append(w)
        return w

    yield crm, stt, llm, pusher, start
    for w in workers:
        w.stop()
