"""Fault injection with real processes: Celery worker subprocesses, a dedicated Redis server, the
CRM simulator over HTTP, a Pusher-API stub and a webhook receiver. Whatever the fault, the
assertion is the same (``assert_job_ended_once``): the job reaches a terminal state, no date is
lost or counted twice, the terminal Pusher event and webhook happen exactly once.

Run alone with ``pytest -m faults``.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from core.tasks import apply_outcome
from fiches.models import FicheCache, ProgressiveFetchJob
from fiches.services.cache import cache_fiche_sales_summaries
from fiches.services.jobs import JOB_INBOX, progressive_fetch_dispatch, progressive_fetch_request
from fiches.simulator import data as sim_data
from fiches.simulator.server import CrmSimulator, SimulatorConfig
from fiches.tasks import reconcile_progressive_jobs
from tests.workflow.conftest import Worker, wait_for, worker_env
from tests.workflow.faults import (
    Recorder,
    RedisServer,
    assert_job_ended_once,
    celery_on,
)

pytestmark = [pytest.mark.workflow, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

SALES = "/api/fiches/sales-with-calls"


@dataclass
class Stack:
    redis: RedisServer
    pusher: Recorder
    receiver: Recorder
    sim: CrmSimulator
    env: dict
    workers: list[Worker] = field(default_factory=list)

    def worker(
        self,
        name: str,
        *,
        concurrency: int = 4,
        queues: str = "default,crm,webhooks",
        pool: str = "prefork",
        **overrides: str,
    ) -> Worker:
        w = Worker(env={**self.env, **overrides}, name=name, concurrency=concurrency, queues=queues, pool=pool).start()
        self.workers.append(w)
        return w

    def sales(self, day: date) -> list[dict]:
        cfg = self.sim.config
        return sim_data.sales_for_date(
            day, seed=cfg.seed, fiches_per_day=cfg.fiches_per_day, revision=cfg.revision, include_recordings=True
        )

    def calls(self) -> list[dict]:
        return [r for r in self.sim.requests() if r["path"] == SALES]


@pytest.fixture
def stack(settings):
    redis_server = RedisServer().start()
    pusher, receiver = Recorder(), Recorder()
    sim = CrmSimulator(SimulatorConfig(seed=42, fiches_per_day=4)).start()
    pusher_port = str(pusher.server_address[1])
    common = {
        "CRM_RATE_LIMIT": "off",
        "PUSHER_APP_ID": "42",
        "PUSHER_KEY": "fault-key",
        "PUSHER_SECRET": "fault-secret",
        "PUSHER_HOST": "127.0.0.1",
        "PUSHER_PORT": pusher_port,
        "PUSHER_USE_TLS": "false",
        "PUSHER_BACKOFF_SECONDS": "0",
        "WEBHOOK_ALLOWED_ORIGINS": receiver.origin,
        "WEBHOOK_RETRY_BASE_SECONDS": "0.1",
        "PROGRESSIVE_FETCH_STALL_SECONDS": "2",
        "PROGRESSIVE_FETCH_JOB_LOCK_SECONDS": "0.5",
        "CRM_FETCH_LEASE_SECONDS": "4",
        "CRM_TIMEOUT_SECONDS": "3",
        "REFRESH_MIN_INTERVAL_SECONDS": "0",
    }
    settings.CRM_BASE_URL = sim.url
    settings.PUSHER_APP_ID, settings.PUSHER_KEY, settings.PUSHER_SECRET = "42", "fault-key", "fault-secret"
    settings.PUSHER_HOST, settings.PUSHER_PORT, settings.PUSHER_USE_TLS = "127.0.0.1", int(pusher_port), False
    settings.WEBHOOK_ALLOWED_ORIGINS = [receiver.origin]
    settings.CRM_RATE_LIMIT = "off"
    settings.REFRESH_MIN_INTERVAL_SECONDS = 0
    settings.PROGRESSIVE_FETCH_STALL_SECONDS = 2
    settings.PROGRESSIVE_FETCH_JOB_LOCK_SECONDS = 0.5
    with celery_on(redis_server.url):
        stack = Stack(redis_server, pusher, receiver, sim, env=worker_env(sim.url, **common))
        try:
            yield stack
        finally:
            for w in stack.workers:
                w.stop()
            sim.stop()
            pusher.stop()
            receiver.stop()
            redis_server.stop()


@pytest.fixture
def requester(make_role, make_user):
    return make_user(make_role("fault-all", fiches=("rw", "ALL")))


def _days(start: date, n: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(n)]


def _request(stack: Stack, user, days: list[date], *, refresh: bool = False) -> str:
    result = progressive_fetch_request(
        user=user,
        start=days[0],
        end=days[-1],
        refresh=refresh,
        webhook_url=f"{stack.receiver.origin}/hook",
        webhook_secret="fault-secret",
    )
    return result.meta["backgroundJobId"]


@contextmanager
def reconciler_beat(every: float = 1.0, tasks: tuple = (reconcile_progressive_jobs,)):
    """What celery beat does in production (every minute; faster here): send the reconcilers."""
    stop = threading.Event()

    def beat():
        while not stop.wait(every):
            for task in tasks:
                task.delay()

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _assert_cache_matches(stack: Stack, days: list[date], job) -> None:
    for day in days:
        if day in job.dates_already_fetched:
            assert FicheCache.objects.filter(sales_date=day).count() == len(stack.sales(day))
    assert job.total_fiches == FicheCache.objects.filter(sales_date__range=(days[0], days[-1])).count()


# 1 ---------------------------------------------------------------------------------------------


def _bare_job(stack: Stack, user, days: list[date]) -> str:
    """A dispatched job whose day tasks never run (the test plays them): created as the service
    would, without the orchestrator message."""
    job = ProgressiveFetchJob.objects.create(
        start_date=days[0],
        end_date=days[-1],
        total_days=len(days),
        dates_remaining=days,
        requested_by=user,
        scope_kind="ALL",
        webhook_url=f"{stack.receiver.origin}/hook",
        webhook_secret="s",
    )
    assert progressive_fetch_dispatch(job_id=str(job.pk)) == days
    for day in days:
        cache_fiche_sales_summaries(stack.sales(day), revalidated_at=timezone.now(), covered_dates=[day])
    return str(job.pk)


def test_1_duplicate_and_out_of_order_outcomes(stack, requester):
    stack.worker("f1")
    days = _days(date(2026, 2, 2), 5)
    job_id = _bare_job(stack, requester, days)
    deliveries = [d for d in days for _ in range(3)]  # every outcome three times, shuffled
    random.Random(7).shuffle(deliveries)
    for day in deliveries:
        apply_outcome.delay(JOB_INBOX.name, job_id, [day.isoformat(), True, None])

    job = assert_job_ended_once(job_id, pusher=stack.pusher, receiver=stack.receiver)
    assert job.status == "complete" and sorted(job.dates_already_fetched) == days
    _assert_cache_matches(stack, days, job)
    progress = stack.pusher.pusher_events("fiches.progressive_fetch.progress", job_id)
    assert len(progress) == len(days)  # one per applied outcome, none for the 10 duplicates


# 2 ---------------------------------------------------------------------------------------------


def test_2_a_day_failing_twice_then_succeeding(stack, requester):
    stack.worker("f2", PROGRESSIVE_FETCH_DAY_MAX_ERRORS="2", PROGRESSIVE_FETCH_RETRY_BASE_SECONDS="0.6")
    days = _days(date(2026, 2, 9), 4)
    flaky = days[1]
    stack.sim.config.fail_dates = frozenset({flaky})
    job_id = _request(stack, requester, days)
    wait_for(
        lambda: sum(c["params"]["startDate"] == flaky.isoformat() for c in stack.calls()) >= 2,
        interval=0.01,
        message="two failed calls for the flaky date",
    )
    stack.sim.config.fail_dates = frozenset()  # the CRM recovers before the last retry

    job = assert_job_ended_once(job_id, pusher=stack.pusher, receiver=stack.receiver)
    assert job.status == "complete"
    calls = Counter(c["params"]["startDate"] for c in stack.calls())
    assert calls[flaky.isoformat()] == 3 and [c["status"] for c in stack.calls()].count(503) == 2
    assert all(calls[d.isoformat()] == 1 for d in days if d != flaky)
    _assert_cache_matches(stack, days, job)


# 3 ---------------------------------------------------------------------------------------------


def test_3_a_day_failing_after_its_last_retry(stack, requester):
    stack.worker("f3", PROGRESSIVE_FETCH_DAY_MAX_ERRORS="1", PROGRESSIVE_FETCH_RETRY_BASE_SECONDS="0.1")
    days = _days(date(2026, 2, 16), 4)
    bad = days[2]
    stack.sim.config.fail_dates = frozenset({bad})
    job_id = _request(stack, requester, days)

    job = assert_job_ended_once(job_id, pusher=stack.pusher, receiver=stack.receiver)
    assert job.status == "failed" and job.dates_failed == [bad]
    assert bad.isoformat() in job.error
    assert Counter(c["params"]["startDate"] for c in stack.calls())[bad.isoformat()] == 2
    assert not FicheCache.objects.filter(sales_date=bad).exists()
    _assert_cache_matches(stack, days, job)


# 4 ---------------------------------------------------------------------------------------------


def test_4_worker_killed_in_the_middle_of_a_day_task(stack, requester):
    first = stack.worker("f4a")
    stack.sim.config.latency_ms = 1500
    days = _days(date(2026, 2, 23), 3)
    job_id = _request(stack, requester, days)
    wait_for(lambda: ProgressiveFetchJob.objects.get(pk=job_id).status == "processing", message="dispatch")
    time.sleep(0.7)  # the day tasks are now waiting on the CRM
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait()
    assert ProgressiveFetchJob.objects.get(pk=job_id).dates_remaining  # work was lost mid-flight

    stack.sim.config.latency_ms = 0
    stack.worker("f4b")
    with reconciler_beat():  # past PROGRESSIVE_FETCH_STALL_SECONDS it re-drives the job
        job = assert_job_ended_once(job_id, pusher=stack.pusher, receiver=stack.receiver, timeout=60)
    assert job.status == "complete" and sorted(job.dates_already_fetched) == days
    _assert_cache_matches(stack, days, job)


# 5 ---------------------------------------------------------------------------------------------


def test_5_updater_lock_expires_while_its_holder_still_runs(stack, requester):
    stack.worker("f5")  # PROGRESSIVE_FETCH_JOB_LOCK_SECONDS=0.5 in this stack
    days = _days(date(2026, 3, 2), 3)
    job_id = _bare_job(stack, requester, days)
    apply_outcome.delay(JOB_INBOX.name, job_id, [days[0].isoformat(), True, None])
    wait_for(lambda: len(ProgressiveFetchJob.objects.get(pk=job_id).dates_remaining) == 2, message="first outcome")

    held = threading.Event()
    release = threading.Event()

    def hold_row_lock():  # a slow holder: keeps the job row locked far beyond the Redis lock TTL
        with transaction.atomic():
            ProgressiveFetchJob.objects.select_for_update().get(pk=job_id)
            held.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold_row_lock)
    holder.start()
    held.wait(5)
    apply_outcome.delay(JOB_INBOX.name, job_id, [days[1].isoformat(), True, None])
    apply_outcome.delay(JOB_INBOX.name, job_id, [days[2].isoformat(), True, None])

    def blocked_on_row_lock() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                # (query texts are truncated at 1 KB: FOR UPDATE is past the cut)
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query ILIKE %s",
                ['SELECT "progressive_fetch_jobs".%'],
            )
            return cursor.fetchone()[0]

    # Both updaters end up inside: the second took the Redis lock after the first one's expired,
    # and only the row lock keeps them apart.
    wait_for(lambda: blocked_on_row_lock() >= 2, timeout=10, interval=0.05, message="two updaters at the row lock")
    release.set()
    holder.join()

    job = assert_job_ended_once(job_id, pusher=stack.pusher, receiver=stack.receiver)
    assert job.status == "complete" and sorted(job.dates_already_fetched) == days
    assert len(stack.pusher.pusher_events("fiches.progressive_fetch.progress", job_id)) == 3


# 6 ---------------------------------------------------------------------------------------------


def test_6_redis_restarted_with_its_data_lost_mid_job(stack, requester):
    stack.worker("f6", concurrency=2, PROGRESSIVE_FETCH_DAY_CONCURRENCY="2")
    stack.sim.config.latency_ms = 400
    days = _days(date(2026, 3, 9), 8)
    job_id = _request(stack, requester, days)
    wait_for(
        lambda: 1 <= len(ProgressiveFetchJob.objects.get(pk=job_id).dates_already_fetched) < len(days),
        interval=0.05,
        message="the job to be half-way",
    )
    stack.redis.restart_losing_data()  # queues, chord counters, locks, pending outcomes: all gone
    stack.sim.config.latency_ms = 0
    with reconciler_beat():
        job = assert_job_ended_once(job_id, pusher=stack.pusher, receiver=stack.receiver, timeout=60)
    assert job.status == "complete" and sorted(job.dates_already_fetched) == days
    _assert_cache_matches(stack, days, job)


# 7 ---------------------------------------------------------------------------------------------


def test_7_overlapping_jobs_never_fetch_one_date_twice_at_once(stack, requester, make_role, make_user):
    other = make_user(make_role("fault-all-2", fiches=("rw", "ALL")))
    stack.worker("f7", concurrency=6, PROGRESSIVE_FETCH_DAY_CONCURRENCY="6")
    stack.sim.config.latency_ms = 300
    first_days, second_days = _days(date(2026, 3, 16), 6), _days(date(2026, 3, 19), 6)
    first = _request(stack, requester, first_days, refresh=True)
    second = _request(stack, other, second_days, refresh=True)

    for job_id, days in ((first, first_days), (second, second_days)):
        job = assert_job_ended_once(job_id, pusher=stack.pusher, receiver=stack.receiver)
        assert job.status == "complete" and sorted(job.dates_already_fetched) == days
    by_date: dict[str, list[tuple[float, float]]] = {}
    for call in stack.calls():
        by_date.setdefault(call["params"]["startDate"], []).append((call["start"], call["end"]))
    shared = {d.isoformat() for d in set(first_days) & set(second_days)}
    assert {d for d, spans in by_date.items() if len(spans) == 2} == shared  # refreshed by both jobs
    for spans in by_date.values():
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False)), spans


# 8 ---------------------------------------------------------------------------------------------


def test_8_global_crm_rate_across_two_workers(stack, requester):
    limited = {"CRM_RATE_LIMIT": "120/m", "PROGRESSIVE_FETCH_DAY_CONCURRENCY": "4"}  # one call per 0.5 s
    stack.worker("f8a", concurrency=2, **limited)
    stack.worker("f8b", concurrency=2, **limited)
    days = _days(date(2026, 3, 30), 8)
    job_id = _request(stack, requester, days)

    job = assert_job_ended_once(job_id, pusher=stack.pusher, receiver=stack.receiver)
    assert job.status == "complete" and sorted(job.dates_already_fetched) == days
    starts = sorted(c["start"] for c in stack.calls())
    assert sorted(c["params"]["startDate"] for c in stack.calls()) == [d.isoformat() for d in days]
    window, share = 2.0, 2.0 / 0.5
    for i, t0 in enumerate(starts):
        in_window = sum(1 for t in starts[i:] if t < t0 + window)
        assert in_window <= share + 1, (in_window, starts)  # +1: a call exactly on the boundary
    assert starts[-1] - starts[0] >= (len(days) - 1) * 0.5 * 0.9


# 9 ---------------------------------------------------------------------------------------------


def test_9_database_connections_killed_mid_job(stack, requester):
    """Transient database errors in day tasks and the updater are retried (bounded, with backoff):
    no outcome waits for the reconciler (none runs here, and the stall timeout is far away)."""
    db_url = stack.env["DATABASE_URL"]
    stack.worker(
        "f9",
        concurrency=4,
        DATABASE_URL=f"{db_url}?application_name=fault-worker",
        PROGRESSIVE_FETCH_STALL_SECONDS="600",
    )
    stack.sim.config.latency_ms = 150
    days = _days(date(2026, 4, 6), 10)
    job_id = _request(stack, requester, days)
    wait_for(lambda: ProgressiveFetchJob.objects.get(pk=job_id).status == "processing", message="dispatch")

    killed = 0
    deadline = time.monotonic() + 2.5
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'fault-worker'"
            )
            killed += cursor.fetchone()[0]
            time.sleep(0.25)
    assert killed >= 3  # the worker's connections were cut several times while the job ran

    job = assert_job_ended_once(job_id, pusher=stack.pusher, receiver=stack.receiver, timeout=60)
    assert job.status == "complete" and sorted(job.dates_already_fetched) == days
    _assert_cache_matches(stack, days, job)
    log = stack.workers[0].log()
    assert "infra_retry" in log or "day_retry" in log  # the errors were met, and retried


# 10 --------------------------------------------------------------------------------------------


def test_10_a_webhook_attempt_cut_by_the_soft_time_limit_is_recorded(stack, requester, monkeypatch):
    """Whatever ends an attempt leaves an attempt row: here the worker's soft time limit fires
    while the receiver is still thinking (our own deadline is longer)."""
    from fiches.notifications import send_job_webhook
    from realtime.models import WebhookDelivery, WebhookDeliveryAttempt
    from realtime.tasks import deliver_webhook
    from tests.workflow.faults import SlowReceiver

    # The limits travel in the task message: the sender's task settings are the ones that count.
    monkeypatch.setattr(deliver_webhook, "soft_time_limit", 1)
    monkeypatch.setattr(deliver_webhook, "time_limit", 3)
    monkeypatch.setattr(deliver_webhook, "_exec_options", None)  # Celery caches them at the first send
    slow = SlowReceiver(delay=4.0)
    try:
        stack.worker(
            "f10",
            CELERY_TASK_SOFT_TIME_LIMIT="1",
            CELERY_TASK_TIME_LIMIT="3",
            WEBHOOK_TIMEOUT_SECONDS="10",
            WEBHOOK_ALLOWED_ORIGINS=slow.origin,
        )
        job = ProgressiveFetchJob.objects.create(
            start_date=date(2026, 4, 20),
            end_date=date(2026, 4, 20),
            total_days=1,
            status="processing",
            dates_remaining=[date(2026, 4, 20)],
            requested_by=requester,
            scope_kind="ALL",
            webhook_url=f"{slow.origin}/hook",
        )
        with transaction.atomic():
            delivery = send_job_webhook(job=job, event="fiches.progressive_fetch.progress")

        attempt = wait_for(
            lambda: WebhookDeliveryAttempt.objects.filter(delivery=delivery).first(),
            timeout=20,
            message="the attempt row",
        )
        assert "SoftTimeLimitExceeded" in attempt.error
        assert attempt.response_status is None and attempt.duration_ms >= 900
        delivery = WebhookDelivery.objects.get(pk=delivery.pk)
        assert delivery.next_retry_at is not None or delivery.attempts > 1  # a retry was scheduled...
        second = wait_for(
            lambda: WebhookDeliveryAttempt.objects.filter(delivery=delivery, number=2).first(),
            timeout=20,
            message="the retried attempt",
        )  # ...and made
        assert second.error and "SoftTimeLimitExceeded" in second.error
    finally:
        slow.stop()


# 11 --------------------------------------------------------------------------------------------


def test_11_slow_webhook_receivers_on_their_own_thread_pool_never_hold_up_the_job(stack, requester):
    """As in production (Procfile): CRM and orchestration work on a prefork worker, webhooks on
    their own worker with a threads pool. Receivers answering in 2 s delay nothing of the job."""
    from realtime.models import WebhookDelivery
    from tests.workflow.faults import SlowReceiver

    slow = SlowReceiver(delay=2.0)
    try:
        stack.worker("f11-work", queues="default,crm", WEBHOOK_ALLOWED_ORIGINS=slow.origin)
        hooks = stack.worker(
            "f11-hooks", queues="webhooks", pool="threads", concurrency=8, WEBHOOK_ALLOWED_ORIGINS=slow.origin
        )
        days = _days(date(2026, 4, 27), 12)
        started = time.monotonic()
        result = progressive_fetch_request(
            user=requester, start=days[0], end=days[-1], webhook_url=f"{slow.origin}/hook", webhook_secret="s"
        )
        job_id = result.meta["backgroundJobId"]
        job = wait_for(
            lambda: (j := ProgressiveFetchJob.objects.get(pk=job_id)).is_terminal and j, timeout=30, message="the job"
        )
        job_seconds = time.monotonic() - started
        assert job.status == "complete"
        deliveries = WebhookDelivery.objects.filter(source_id=job_id)
        assert deliveries.count() == 3  # progress at 5 and 10 days, then complete
        assert job_seconds < 2.0 * deliveries.count()  # the job did not wait for the receivers
        wait_for(
            lambda: set(deliveries.values_list("status", flat=True)) == {"success"},
            timeout=20,
            message="every delivery delivered",
        )
        assert "concurrency: 8 (thread)" in hooks.log()
    finally:
        slow.stop()
