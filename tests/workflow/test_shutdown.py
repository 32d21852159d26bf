"""Graceful stops of the worker processes. A Celery worker told to stop (SIGTERM, with ``REMAP_SIGTERM=SIGQUIT``
as the Procfile and deploy/ start it) stops taking work, lets the tasks in flight finish within
``CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT`` and hands back to the broker those that cannot: another worker then does
them, with no reconciler's help, and nothing is counted twice (prefork: the fetch job's day tasks). A threads
worker (an audit's LLM steps) stops warm instead: its tasks in flight finish, the queued rest waits for the next
worker. On Redis and, with ``make test-rabbitmq``, on RabbitMQ.

The web side (gunicorn draining a streamed chat answer) is in ``tests/chat/test_shutdown.py``."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import date, timedelta
from typing import Any

import pytest

from audits.models import Audit
from fiches.models import ProgressiveFetchJob
from tests.workflow.conftest import Worker, audit_env, wait_for
from tests.workflow.faults import assert_job_ended_once
from tests.workflow.test_audits import COMPLIANT, audit_ended, run_audit, step_requests
from tests.workflow.test_faults import SALES, _request, requester, stack  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.workflow, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

STOPPING = {"REMAP_SIGTERM": "SIGQUIT"}  # as the Procfile and deploy/ start every worker
NOT_LLM = "default,crm,webhooks,stt_high,stt,stt_low"


def stop(worker: Worker, timeout: float = 60) -> float:
    """SIGTERM to the worker's main process (what honcho, docker or kubernetes send); seconds until it exited."""
    started = time.monotonic()
    os.kill(worker.process.pid, signal.SIGTERM)
    worker.process.wait(timeout=timeout)
    return time.monotonic() - started


def crm_days(stack_: Any) -> Counter:
    return Counter(c["params"]["startDate"] for c in stack_.sim.requests() if c["path"] == SALES)


@pytest.mark.parametrize(
    ("soft_timeout", "crm_latency_ms", "outcome"),
    [(10, 2000, "finished"), (1, 6000, "handed back")],
    ids=["finishes-in-time", "hands-back-past-the-soft-timeout"],
)
def test_a_stopped_prefork_worker_finishes_or_hands_back_its_day_tasks(
    stack,  # noqa: F811
    requester,  # noqa: F811
    soft_timeout,
    crm_latency_ms,
    outcome,
):
    first = stack.worker(
        f"stop-{soft_timeout}", concurrency=2, CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT=str(soft_timeout), **STOPPING
    )
    stack.sim.config.latency_ms = crm_latency_ms
    first_day = date(2026, 4, 6) if outcome == "finished" else date(2026, 4, 13)
    days = [first_day + timedelta(days=i) for i in range(4)]
    job_id = _request(stack, requester, days)
    wait_for(lambda: ProgressiveFetchJob.objects.get(pk=job_id).status == "processing", message="dispatch")
    time.sleep(0.7)  # two day tasks wait on the CRM

    elapsed = stop(first)
    assert "Cold shutdown" in first.log() and "Warm shutdown" not in first.log()
    if outcome == "finished":
        assert elapsed < soft_timeout + 8, f"the worker took {elapsed:.1f}s to stop"
        assert len(crm_days(stack)) == 2  # the two it had started, answered before it left; nothing new taken
    else:
        assert elapsed < crm_latency_ms / 1000 - 1, f"the worker took {elapsed:.1f}s to stop"  # before the CRM
        assert ProgressiveFetchJob.objects.get(pk=job_id).dates_already_fetched == []

    stack.sim.config.latency_ms = 0
    stack.worker(f"stop-{soft_timeout}-next")  # no reconciler: what the first worker left is in the queue
    job = assert_job_ended_once(job_id, pusher=stack.pusher, receiver=stack.receiver, timeout=60)
    assert job.status == "complete" and sorted(job.dates_already_fetched) == days
    calls = crm_days(stack)
    if outcome == "finished":
        assert set(calls.values()) == {1}, calls  # the two in flight were finished, not handed back and redone
    else:
        assert sorted(calls.values()) == [1, 1, 2, 2], calls  # the two in flight were handed back and redone


def test_a_stopped_threads_worker_finishes_its_llm_steps_in_flight_and_leaves_the_rest_queued(
    audit_stack, make_role, make_user
):
    """A threads pool cannot cancel a running task (Celery's cold shutdown fails on it): its workers stop warm,
    as they are started without REMAP_SIGTERM. The steps in flight end (each bounded by the LLM call's own
    timeout), the queued ones stay for the next worker: every step is asked of the LLM once."""
    crm, stt, llm, pusher, _ = audit_stack
    user = make_user(make_role("stop-aud", fiches=("rw", "ALL"), audits=("rw", "ALL"), transcriptions=("rw", "ALL")))
    env = audit_env(crm, stt, llm, pusher)
    workers = [Worker(env=env, name="stop-rest", queues=NOT_LLM).start()]
    try:
        llm.config.latency_ms = 3000
        first = Worker(env=env, name="stop-llm", queues="llm", pool="threads", concurrency=2).start()
        workers.append(first)
        audit_id = run_audit(user, COMPLIANT)
        wait_for(lambda: llm.current_in_flight() >= 2, timeout=60, interval=0.05, message="two steps at the LLM")
        elapsed = stop(first)
        assert elapsed < 3 + 6, f"the worker took {elapsed:.1f}s to stop"
        assert "Warm shutdown" in first.log()
        done_by_first = sum(step_requests(llm).values())
        assert done_by_first == 2  # the two in flight, answered; nothing new was taken
        assert not Audit.objects.get(pk=audit_id).is_terminal

        llm.config.latency_ms = 0
        workers.append(Worker(env=env, name="stop-llm-next", queues="llm", pool="threads", concurrency=16).start())
        audit = audit_ended(audit_id, timeout=90)  # no reconciler: the other steps were still queued
    finally:
        for w in workers:
            w.stop()
    assert audit.status == "completed", audit.error
    calls = step_requests(llm)
    assert len(calls) > 2 and set(calls.values()) == {1}, calls  # no step asked twice
