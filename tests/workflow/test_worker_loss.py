"""A worker SIGKILLed in the middle of a batch, at default settings and in the Procfile's layout (an
orchestration worker for ``default,crm`` and an I/O worker with a threads pool for the provider's queue):
its claims and provider slots are short leases renewed by a heartbeat (``core.leases``), so they come
back within ``CLAIM_LEASE_SECONDS``; the reconcilers (run every minute, as beat does) send again the
units it took with it. Every item ends within two minutes of the restart, each exactly once.

Beat itself is not started: the test database is flushed between workflow tests, so django-celery-beat's
schedule rows (made by data migrations) are not there; a thread sends the reconcile tasks every minute
instead, the interval beat uses."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter

import pytest
from rest_framework.test import APIClient

from accounts.tokens import issue_tokens
from audits.defaults import DEFAULT_CONFIG_NAME
from audits.models import Audit, AuditConfig, StepStatus
from batches.models import Batch
from config.celery import app
from fiches.models import FicheCache
from fiches.services.details import fiche_ensure_details
from fiches.simulator.data import sales_for_date
from tests.workflow.conftest import WORKER_LOG_DIR, Worker, audit_env, wait_for
from transcriptions.models import Transcription

pytestmark = [pytest.mark.workflow, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

BEAT_SECONDS = 60.0  # django-celery-beat's interval for every reconcile task
RECOVERY_SECONDS = 120.0  # every item ends within two minutes of the restart


class Beat:
    """Sends the reconcile tasks every ``BEAT_SECONDS``, as beat does."""

    def __init__(self, *tasks: str) -> None:
        self.tasks = tasks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            for name in self.tasks:
                app.send_task(name)

    def __enter__(self) -> Beat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def record(what: str, after_restart: float, after_kill: float) -> None:
    """The recovery times, for the record (``.pytest_workers/worker_loss.log``; timings are not asserted
    beyond the two-minute bound)."""
    WORKER_LOG_DIR.mkdir(exist_ok=True)
    with open(WORKER_LOG_DIR / "worker_loss.log", "a") as log:
        log.write(f"{what}: ended {after_restart:.1f} s after the restart, {after_kill:.1f} s after the kill\n")


def batch_after_restart(batch_id: str, what: str, killed_at: float, reconcile: str) -> Batch:
    """Wait (beat running ``reconcile`` and the batch reconciler) for the batch to end; it must end
    within ``RECOVERY_SECONDS`` of the restart that just happened. The times go to the record."""
    restarted = time.monotonic()
    with Beat(reconcile, "batches.tasks.reconcile_batches"):
        batch = wait_for(
            lambda: (b := Batch.objects.get(pk=batch_id)).status == "completed" and b,
            timeout=RECOVERY_SECONDS + 30,
            interval=0.5,
            message="the batch to end",
        )
    took = time.monotonic() - restarted
    assert took <= RECOVERY_SECONDS, f"the batch ended {took:.0f} s after the restart"
    record(what, took, time.monotonic() - killed_at)
    return batch


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_tokens(user).access}")
    return client


def fiches_of(day, count: int) -> list[str]:
    """``count`` fiches of the CRM simulator's ``day`` that have recordings, cached with their details."""
    sales = sales_for_date(day, seed=42, fiches_per_day=6, revision=0, include_recordings=True)
    ids = [s["fiche_id"] for s in sales if s.get("recordings")][:count]
    for fiche_id in ids:
        fiche_ensure_details(fiche_id=fiche_id)
    return ids


def layout(crm, stt, llm, pusher, io_name: str, io_queues: str) -> tuple[Worker, dict[str, str]]:
    """The orchestration worker (prefork ``default,crm,webhooks`` and the other I/O queues) and the env of
    the I/O worker under test (threads, 16, as in the Procfile)."""
    env = audit_env(crm, stt, llm, pusher)
    others = [q for q in ("default", "crm", "webhooks", "stt_high", "stt", "stt_low", "llm") if q not in io_queues]
    orchestration = Worker(env=env, name="loss-orch", concurrency=4, queues=",".join(others)).start()
    return orchestration, env


def io_worker(env: dict[str, str], name: str, queues: str) -> Worker:
    return Worker(env=env, name=name, concurrency=16, queues=queues, pool="threads").start()


def kill(worker: Worker) -> None:
    assert worker.process is not None
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait()


@pytest.fixture
def auditor(make_role, make_user):
    role = make_role("loss-all", audits=("rw", "ALL"), fiches=("r", "ALL"), transcriptions=("rw", "ALL"))
    return make_user(role, email="loss@example.com")


def test_the_llm_worker_killed_mid_audit_batch(audit_stack, auditor):
    from datetime import date

    crm, stt, llm, pusher, _ = audit_stack
    orchestration, env = layout(crm, stt, llm, pusher, "llm", "llm")
    first = io_worker(env, "loss-llm-a", "llm")
    workers = [orchestration, first]
    try:
        fiche_ids = fiches_of(date(2026, 2, 4), 6) + fiches_of(date(2026, 2, 5), 2)
        assert len(fiche_ids) == 8
        config_id = AuditConfig.objects.get(name=DEFAULT_CONFIG_NAME).pk
        llm.config.latency_ms = 4000  # each step's call in flight for seconds: the kill lands mid-call
        response = client_for(auditor).post(
            "/api/audits/batch", {"fiche_ids": fiche_ids, "audit_config_id": config_id}, format="json"
        )
        assert response.status_code == 202, response.content
        batch_id = response.json()["batch_id"]
        wait_for(lambda: llm.current_in_flight() >= 8, timeout=180, interval=0.05, message="every LLM slot busy")
        kill(first)  # mid-call: 8 steps claimed and holding slots, more waiting for one
        killed_at = time.monotonic()
        llm.config.latency_ms = 500
        second = io_worker(env, "loss-llm-b", "llm")
        workers.append(second)
        batch = batch_after_restart(batch_id, "audit batch", killed_at, "audits.tasks.reconcile_audits")
        assert (batch.total, batch.completed, batch.failed) == (8, 8, 0)
        audits = Audit.objects.filter(fiche__fiche_id__in=fiche_ids)
        assert audits.count() == 8 and not audits.exclude(status="completed").exists()  # one audit a fiche
        for audit in audits:
            completed = pusher.channel_events(f"private-audit-{audit.pk}", "audit.completed")
            assert len(completed) == 1, audit.pk  # ended exactly once
            assert not audit.step_results.exclude(status=StepStatus.COMPLETED).exists()
        per_step = Counter()
        for r in llm.requests():
            if r["path"] != "/v1/chat/completions" or r["status"] != 200:
                continue
            user_text = next(m["content"] for m in r["body"]["messages"] if m["role"] == "user")
            step = re.match(r"# Étape (\d+)", user_text)
            fiche = re.search(r"Fiche (\d+) du", user_text)
            if step and fiche:
                per_step[(fiche.group(1), int(step.group(1)))] += 1
        assert len(per_step) == 8 * 9
        assert max(per_step.values()) <= 2, per_step.most_common(3)  # once, or twice when killed mid-call
    finally:
        for worker in workers:
            worker.stop()


def test_the_stt_worker_killed_mid_transcription_batch(audit_stack, auditor):
    from datetime import date

    crm, stt, llm, pusher, _ = audit_stack
    orchestration, env = layout(crm, stt, llm, pusher, "stt", "stt_high,stt,stt_low")
    first = io_worker(env, "loss-stt-a", "stt_high,stt,stt_low")
    workers = [orchestration, first]
    try:
        fiche_ids = (fiches_of(date(2026, 2, 2), 6) + fiches_of(date(2026, 2, 3), 6) + fiches_of(date(2026, 2, 6), 6))[
            :10
        ]
        assert len(fiche_ids) == 10
        recordings = sum(f.recordings_count or 0 for f in FicheCache.objects.filter(fiche_id__in=fiche_ids))
        stt.config.latency_ms = 4000
        response = client_for(auditor).post("/api/transcriptions/batch", {"fiche_ids": fiche_ids}, format="json")
        assert response.status_code == 202, response.content
        batch_id = response.json()["batch_id"]
        wait_for(lambda: stt.current_in_flight() >= 10, timeout=120, interval=0.05, message="every vendor slot busy")
        kill(first)
        killed_at = time.monotonic()
        stt.config.latency_ms = 300
        second = io_worker(env, "loss-stt-b", "stt_high,stt,stt_low")
        workers.append(second)
        batch = batch_after_restart(
            batch_id, "transcription batch", killed_at, "transcriptions.tasks.reconcile_transcription_runs"
        )
        assert (batch.total, batch.completed, batch.failed) == (10, 10, 0)
        rows = Transcription.objects.filter(fiche__fiche_id__in=fiche_ids)
        assert rows.count() == recordings and not rows.exclude(status="completed").exists()
        calls = Counter(
            r["call_id"] for r in stt.requests() if r["path"] == "/v1/speech-to-text" and r["status"] == 200
        )
        assert len(calls) == recordings and max(calls.values()) <= 2, calls.most_common(3)
        for fiche_id in fiche_ids:
            ended = pusher.channel_events(f"private-transcription-{fiche_id}", "transcription.completed")
            assert len(ended) == 1, fiche_id  # each run ended exactly once
    finally:
        for worker in workers:
            worker.stop()
