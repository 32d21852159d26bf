"""Progressive-fetch benchmarks: range read over HTTP, orchestration overhead, polling.

- range_read: 10,000 fiches cached over 31 days; ``by-date-range`` for that range over HTTP
  (gunicorn, wrk with 4 connections) → p50/p99; floor: the same rows read with one raw SQL query
  and dumped with orjson, in process. Targets: p50 <= 100 ms, p99 <= 250 ms, p50 <= 1.5 x floor.
- orchestration: a 365-day job against the simulator with zero latency, with 0 and with 50
  fiches a day (targets <= 5 s and <= 15 s end to end), and a 60-day job with 300 ms CRM latency
  and day concurrency 4 (target: wall <= 1.05 x the ideal 60 x 0.3 / 4 s).
- polling: ``/api/fiches/webhooks/fiches?jobId=`` for a one-day job of 50 fiches, wrk with
  enough connections for >= 500 requests/s → p99 (target <= 20 ms at >= 500 requests/s).
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import UTC, date, datetime, timedelta

import orjson
from django.db import connection

from accounts.models import Role, RolePermission, User
from accounts.tokens import issue_tokens
from bench import support
from bench.cache_write import make_sales
from core.redis import get_redis
from fiches.models import ProgressiveFetchJob
from fiches.selectors import RANGE_FIELDS
from fiches.services.cache import cache_fiche_sales_summaries
from fiches.services.jobs import progressive_fetch_request
from fiches.simulator.server import CrmSimulator, SimulatorConfig

RANGE_START, RANGE_END = date(2026, 1, 1), date(2026, 1, 31)


def _truncate() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE recordings, fiche_cache_details, fiche_cache_mail_devis, fiche_cache, fiche_sales_dates, "
            "progressive_fetch_jobs CASCADE"
        )
    get_redis().flushdb()  # the bench's own Redis database: rendered ranges and their versions


def _bench_user() -> User:
    role, _ = Role.objects.get_or_create(key="bench-all", defaults={"name": "Bench"})
    RolePermission.objects.update_or_create(
        role=role, permission_key="fiches", defaults={"can_read": True, "can_write": True, "scope": "ALL"}
    )
    user = User.objects.filter(email="bench@example.com").first() or User.objects.create_user(
        email="bench@example.com", password="bench-password-2026"
    )
    user.roles.add(role)
    return user


def _verdict(ok: bool) -> str:
    return "OK" if ok else "BELOW TARGET"


def range_read(args) -> None:
    _truncate()
    sales = make_sales(10_000, statut="Vente validée")
    days = [RANGE_START + timedelta(days=i) for i in range(31)]
    cache_fiche_sales_summaries(sales, revalidated_at=datetime.now(UTC), covered_dates=days)
    token = issue_tokens(_bench_user()).access

    sql = (
        f"SELECT {', '.join(RANGE_FIELDS)} FROM fiche_cache WHERE sales_date BETWEEN %s AND %s "
        "ORDER BY sales_date, fiche_id"
    )
    floors = []
    for _ in range(15):
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(sql, [RANGE_START, RANGE_END])
            columns = [c.name for c in cursor.description]
            body = orjson.dumps({"fiches": [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]})
        floors.append((time.perf_counter() - started) * 1000)
    floor = statistics.median(floors)

    print(f"\n== range_read: 10,000 fiches over 31 days, {len(body) / 1e6:.1f} MB per response ==")
    print(f"floor (one raw SQL query + orjson, in process): {floor:.1f} ms")
    for label, cache_seconds in (
        ("rendered-response cache off (every read hits Postgres)", "0"),
        ("rendered-response cache on (default)", "120"),
    ):
        env = support.child_env(DATABASE_URL=support.database_url(), RANGE_RESPONSE_CACHE_SECONDS=cache_seconds)
        web, url = support.start_web(env)
        try:
            endpoint = f"{url}/api/fiches/status/by-date-range?startDate={RANGE_START}&endDate={RANGE_END}"
            support.wrk(endpoint, token=token, connections=4, seconds=3)  # warm-up
            result = support.wrk(endpoint, token=token, connections=4, seconds=args.seconds)
        finally:
            web.stop()
        ok = result["p50_ms"] <= 100 and result["p99_ms"] <= 250 and result["p50_ms"] <= 1.5 * floor
        print(
            f"{label:<58} p50 {result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:6.1f} ms  "
            f"{result['rps']:6.1f} req/s  errors {result['errors']}  p50/floor {result['p50_ms'] / floor:.2f}  "
            f"[{_verdict(ok)}]"
        )


def _run_job(sim: CrmSimulator, days: int, *, start: date) -> tuple[float, ProgressiveFetchJob]:
    user = _bench_user()
    started = time.perf_counter()
    result = progressive_fetch_request(user=user, start=start, end=start + timedelta(days=days - 1))
    job_id = result.meta["backgroundJobId"]
    while True:
        job = ProgressiveFetchJob.objects.get(pk=job_id)
        if job.is_terminal:
            return time.perf_counter() - started, job
        if time.perf_counter() - started > 300:
            raise RuntimeError(f"job {job_id} did not finish: {job.progress}%")
        time.sleep(0.02)


def _chord_floor(env: dict[str, str], n: int) -> float:
    """Celery's own floor on this box: a chord of ``n`` no-op tasks and its body, on workers laid
    out as in the Procfile."""
    from celery import chord

    from bench.tasks import noop, noop_body

    worker = support.start_worker(env, name="floor", concurrency=4, queues="default,crm")
    try:
        started = time.perf_counter()
        result = chord(noop.s(i).set(queue="crm") for i in range(n))(noop_body.s().set(queue="default"))
        result.get(timeout=300)
        return time.perf_counter() - started
    finally:
        worker.stop()


def _workers(env: dict[str, str], layout: str, day_concurrency: int) -> list[support.Proc]:
    if layout == "defaults":  # the Procfile: one prefork worker for default+crm, webhooks on threads
        return [
            support.start_worker(env, name="worker", concurrency=4, queues="default,crm"),
            support.start_worker(env, name="webhooks", concurrency=16, queues="webhooks", pool="threads"),
        ]
    # tuned: more worker slots than CRM slots, so a day's database write overlaps the next fetch
    return [
        support.start_worker(env, name="crm", concurrency=day_concurrency + 2, queues="crm"),
        support.start_worker(env, name="default", concurrency=1, queues="default,webhooks"),
    ]


def orchestration(args) -> None:
    """Job wall time from the API request to the terminal state, at **default settings** (the
    Procfile's worker layout, every setting at its default: no global CRM rate, 4 day fetches at
    once) and with a tuned worker layout, beside Celery's floor (a chord of as many no-op tasks)."""
    from django.conf import settings

    print("\n== orchestration: job wall time, API request to terminal state ==")
    floor_env = support.child_env(DATABASE_URL=support.database_url())
    floor = _chord_floor(floor_env, 365)
    print(f"{'baseline: chord of 365 no-op tasks + body':<58} {floor:6.2f} s  (Celery's floor on this box)")
    cases = [
        ("365 days, 0 fiches/day, 0 ms CRM", 365, 0, 0, 5.0),
        ("365 days, 50 fiches/day, 0 ms CRM", 365, 50, 0, 15.0),
        ("60 days, 300 ms CRM", 60, 20, 300, 1.05 * 60 * 0.3 / 4),
    ]
    selected = [int(i) for i in os.environ.get("BENCH_ORCHESTRATION_CASES", "0,1,2").split(",")]
    layouts = os.environ.get("BENCH_ORCHESTRATION_LAYOUTS", "defaults,tuned").split(",")
    day_concurrency = settings.PROGRESSIVE_FETCH_DAY_CONCURRENCY
    for layout in layouts:
        for label, days, per_day, latency, target in (cases[i] for i in selected):
            _truncate()
            with CrmSimulator(SimulatorConfig(seed=42, fiches_per_day=per_day, latency_ms=latency)) as sim:
                env = support.child_env(DATABASE_URL=support.database_url(), CRM_BASE_URL=sim.url)
                workers = _workers(env, layout, day_concurrency)
                try:
                    settings.CRM_BASE_URL = sim.url
                    wall, job = _run_job(sim, days, start=date(2025, 1, 1))
                finally:
                    for worker in workers:
                        worker.stop()
                crm = [r for r in sim.requests() if r["path"] == "/api/fiches/sales-with-calls"]
                lead = min(r["start"] for r in crm) - job.created_at.timestamp()
                tail = job.completed_at.timestamp() - max(r["end"] for r in crm)
            ideal_s = days * latency / 1000 / day_concurrency
            ideal = (
                f"  ideal {ideal_s:.2f} s, ratio {wall / ideal_s:.3f}" if latency else f"  vs floor x{wall / floor:.2f}"
            )
            print(
                f"{layout + ': ' + label:<58} {wall:6.2f} s  target <= {target:.2f} s  status={job.status} "
                f"fiches={job.total_fiches} crm_calls={len(crm)}{ideal}  first CRM call after {lead:.2f} s, "
                f"last ended {tail:.2f} s before the end  [{_verdict(wall <= target and job.status == 'complete')}]"
            )


def polling(args) -> None:
    """P4: job polling at >= 500 req/s with p99 <= 20 ms, beside a plain Django JSON view served by
    the same gunicorn in the same run (the floor of a request on this box)."""
    _truncate()
    day = date(2026, 1, 15)
    sales = make_sales(50, statut="Vente validée")
    for sale in sales:
        sale["sales_date"] = day.isoformat()
    cache_fiche_sales_summaries(sales, revalidated_at=datetime.now(UTC), covered_dates=[day])
    user = _bench_user()
    job = ProgressiveFetchJob.objects.create(
        start_date=day,
        end_date=day,
        total_days=1,
        completed_days=1,
        progress=100,
        status="complete",
        dates_already_fetched=[day],
        total_fiches=50,
        requested_by=user,
        scope_kind="ALL",
    )
    token = issue_tokens(user).access
    web, url = support.start_web(support.child_env(DATABASE_URL=support.database_url()))
    results = {}
    try:
        for label, endpoint in (
            ("plain Django JSON view (baseline)", f"{url}/bench/plain"),
            ("job poll /api/fiches/webhooks/fiches", f"{url}/api/fiches/webhooks/fiches?jobId={job.pk}"),
            ("job detail /api/fiches/jobs/{id}", f"{url}/api/fiches/jobs/{job.pk}"),
        ):
            support.wrk(endpoint, token=token, connections=8, seconds=3)
            results[label] = support.wrk(endpoint, token=token, connections=8, seconds=args.seconds)
    finally:
        web.stop()
    print("\n== polling (P4): one-day job with 50 fiches, wrk 8 connections, gunicorn 4 x 2 threads ==")
    base = results["plain Django JSON view (baseline)"]
    for label, result in results.items():
        ok = result["p99_ms"] <= 20 and result["rps"] >= 500
        verdict = "" if "baseline" in label else f"  [{_verdict(ok)}]"
        print(
            f"{label:<40} {result['rps']:6.0f} req/s  p50 {result['p50_ms']:5.1f} ms  p99 {result['p99_ms']:6.1f} ms  "
            f"errors {result['errors']}  rps/baseline {result['rps'] / base['rps']:.2f}{verdict}"
        )
    print("(target: p99 <= 20 ms at >= 500 req/s)")
