"""Revalidation of the sales-list cache (fiches.services.revalidation and its tasks):

- the per-range warm-cache: one CRM call for the range, 5-day chunks when it fails, failing chunks
  isolated (their dates keep the error), prefetched data cached without a CRM call, the per-date
  fetch locks;
- the staleness policy (``should_revalidate``, ``last_revalidated_by_date``, ``dates_to_warm``) and
  the scheduled warmup (beat rows, ``warm_recent_sales_cache``, ``revalidate_date``);
- the warm endpoint ``POST /api/fiches/cache/warm``;
- the DB-backed workflow trace (``WORKFLOW_LOG_DB_ENABLED``).

The CRM is the session's simulator over HTTP; no worker runs (queued tasks are read back from the
test broker).
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, date, datetime, timedelta

import pytest
from celery.exceptions import Retry
from django_celery_beat.models import PeriodicTask
from freezegun import freeze_time

from core.limits import RateLimiter
from core.locks import LockNotAcquired, redis_lock
from fiches.clients.crm import CrmPermanentError
from fiches.models import FicheCache, JobStatus, SalesDateState, WorkflowLog
from fiches.selectors import date_range_coverage, dates_between
from fiches.services import jobs
from fiches.services.revalidation import (
    CACHE_FRESH,
    DATE_IS_TODAY,
    NEVER_VALIDATED,
    STALE_CACHE,
    ChunkOutcome,
    cache_sales_list,
    chunks_of,
    dates_to_warm,
    last_revalidated_by_date,
    should_revalidate,
)
from fiches.simulator import data as sim
from fiches.tasks import cache_sales_list as cache_sales_list_task
from fiches.tasks import progressive_fetch_day, revalidate_date, warm_recent_sales_cache
from tests.fiches.conftest import crm_calls
from tests.support import queued_tasks

pytestmark = pytest.mark.django_db

WARM_URL = "/api/fiches/cache/warm"


@pytest.fixture(autouse=True)
def _no_crm_rate_limit(settings):
    settings.CRM_RATE_LIMIT = "off"


def d(iso: str) -> date:
    return date.fromisoformat(iso)


def sales_between(sim_data, start: date, end: date) -> list[dict]:
    return [sale for day in dates_between(start, end) for sale in sim_data.sales(day)]


def sales_calls(simulator) -> list[tuple[str, str]]:
    return [(c["params"]["startDate"], c["params"]["endDate"]) for c in crm_calls(simulator, sales=True)]


def cached_ids(start: date, end: date) -> set[str]:
    return set(FicheCache.objects.filter(sales_date__range=(start, end)).values_list("fiche_id", flat=True))


# --- Per-range warm-cache -------------------------------------------------------------------------


def test_a_range_is_fetched_in_one_crm_call_and_every_date_is_covered(crm, sim_data):
    start, end = d("2026-02-05"), d("2026-02-09")  # 2026-02-08 is a Sunday without sales
    assert sim_data.sales(d("2026-02-08")) == []
    expected = sales_between(sim_data, start, end)
    chunks: list[ChunkOutcome] = []

    summary = cache_sales_list(start=start, end=end, on_chunk=chunks.append)

    assert sales_calls(crm) == [("2026-02-05", "2026-02-09")]
    assert summary.mode == "range"
    assert summary.as_dict() == {
        "start": "2026-02-05",
        "end": "2026-02-09",
        "mode": "range",
        "chunks_ok": 1,
        "chunks_failed": 0,
        "fiches_cached": len(expected),
        "dates_covered": [day.isoformat() for day in dates_between(start, end)],
        "failed_chunks": [],
    }
    assert [(c.start, c.end, c.ok) for c in chunks] == [(start, end, True)]
    assert cached_ids(start, end) == {s["fiche_id"] for s in expected}
    states = {s.sales_date: s for s in SalesDateState.objects.filter(sales_date__range=(start, end))}
    assert sorted(states) == dates_between(start, end)  # the empty Sunday too
    assert all(s.last_fetched_at is not None and s.last_error is None for s in states.values())
    assert states[d("2026-02-08")].fiche_count == 0
    assert states[d("2026-02-05")].fiche_count == len(sim_data.sales(d("2026-02-05")))
    assert date_range_coverage(start, end).complete


def test_chunks_of_splits_a_range_in_fixed_size_chunks():
    assert chunks_of(d("2026-02-02"), d("2026-02-13"), 5) == [
        (d("2026-02-02"), d("2026-02-06")),
        (d("2026-02-07"), d("2026-02-11")),
        (d("2026-02-12"), d("2026-02-13")),
    ]
    assert chunks_of(d("2026-02-02"), d("2026-02-02"), 5) == [(d("2026-02-02"), d("2026-02-02"))]
    assert chunks_of(d("2026-02-02"), d("2026-02-11"), 5) == [
        (d("2026-02-02"), d("2026-02-06")),
        (d("2026-02-07"), d("2026-02-11")),
    ]


def test_a_range_too_long_for_the_crm_falls_back_to_five_day_chunks(crm, sim_data, settings):
    assert settings.SALES_LIST_CHUNK_DAYS == 5
    crm.config.update({"max_range_days": 5})
    start, end = d("2026-02-02"), d("2026-02-13")
    chunks: list[ChunkOutcome] = []

    summary = cache_sales_list(start=start, end=end, on_chunk=chunks.append)

    calls = crm_calls(crm, sales=True)
    assert [(c["params"]["startDate"], c["params"]["endDate"], c["status"]) for c in calls] == [
        ("2026-02-02", "2026-02-13", 504),
        ("2026-02-02", "2026-02-06", 200),
        ("2026-02-07", "2026-02-11", 200),
        ("2026-02-12", "2026-02-13", 200),
    ]
    assert summary.mode == "chunks"
    result = summary.as_dict()
    assert (result["chunks_ok"], result["chunks_failed"], result["failed_chunks"]) == (3, 0, [])
    assert result["dates_covered"] == [day.isoformat() for day in dates_between(start, end)]
    expected = sales_between(sim_data, start, end)
    assert result["fiches_cached"] == len(expected)
    assert cached_ids(start, end) == {s["fiche_id"] for s in expected}
    assert [(c.start, c.end, c.ok) for c in chunks] == [
        (d("2026-02-02"), d("2026-02-06"), True),
        (d("2026-02-07"), d("2026-02-11"), True),
        (d("2026-02-12"), d("2026-02-13"), True),
    ]
    assert [c.fiches for c in chunks] == [len(sales_between(sim_data, c.start, c.end)) for c in chunks]
    assert date_range_coverage(start, end).complete


def test_a_failing_chunk_leaves_the_other_chunks_cached_and_records_its_error(crm, sim_data):
    crm.config.update({"fail_dates": ["2026-02-09"]})  # in the second chunk (02-07..02-11)
    start, end = d("2026-02-02"), d("2026-02-13")
    chunks: list[ChunkOutcome] = []

    summary = cache_sales_list(start=start, end=end, on_chunk=chunks.append)

    assert sales_calls(crm) == [
        ("2026-02-02", "2026-02-13"),
        ("2026-02-02", "2026-02-06"),
        ("2026-02-07", "2026-02-11"),
        ("2026-02-12", "2026-02-13"),
    ]
    result = summary.as_dict()
    assert result["mode"] == "chunks"
    assert result["chunks_ok"] == 2
    assert result["chunks_failed"] == 1
    (failed,) = result["failed_chunks"]
    assert (failed["start"], failed["end"]) == ("2026-02-07", "2026-02-11")
    assert "503" in failed["error"] and "2026-02-09" in failed["error"]
    bad_days = dates_between(d("2026-02-07"), d("2026-02-11"))
    good_days = [day for day in dates_between(start, end) if day not in bad_days]
    assert result["dates_covered"] == [day.isoformat() for day in good_days]
    assert [(c.start, c.end, c.ok) for c in chunks] == [
        (d("2026-02-02"), d("2026-02-06"), True),
        (d("2026-02-07"), d("2026-02-11"), False),
        (d("2026-02-12"), d("2026-02-13"), True),
    ]

    good_sales = [s for day in good_days for s in sim_data.sales(day)]
    assert result["fiches_cached"] == len(good_sales)
    assert cached_ids(start, end) == {s["fiche_id"] for s in good_sales}
    coverage = date_range_coverage(start, end)
    assert coverage.missing == bad_days
    states = {s.sales_date: s for s in SalesDateState.objects.all()}
    for day in bad_days:
        assert states[day].last_fetched_at is None
        assert "2026-02-09" in states[day].last_error
        assert states[day].last_error_at is not None
    for day in good_days:
        assert states[day].last_error is None and states[day].last_fetched_at is not None

    # the CRM recovers: the next warm covers the failed dates and clears their error
    crm.config.update({"fail_dates": []})
    assert cache_sales_list(start=d("2026-02-07"), end=d("2026-02-11")).mode == "range"
    assert date_range_coverage(start, end).complete
    assert not SalesDateState.objects.filter(last_error__isnull=False).exists()


def test_prefetched_sales_are_cached_without_calling_the_crm(crm, sim_data):
    start, end = d("2026-02-02"), d("2026-02-04")
    sales_data = [
        item
        for day in dates_between(start, end)
        for item in sim.sales_for_date(
            day, seed=sim_data.seed, fiches_per_day=sim_data.fiches_per_day, revision=0, include_recordings=True
        )
    ]
    chunks: list[ChunkOutcome] = []

    summary = cache_sales_list(start=start, end=end, sales_data=sales_data, on_chunk=chunks.append)

    assert crm.requests() == []
    result = summary.as_dict()
    assert result["mode"] == "prefetched"
    assert (result["chunks_ok"], result["chunks_failed"]) == (1, 0)
    assert result["fiches_cached"] == len(sales_data)
    assert result["dates_covered"] == ["2026-02-02", "2026-02-03", "2026-02-04"]
    assert len(chunks) == 1
    assert cached_ids(start, end) == {s["fiche_id"] for s in sales_data}
    assert date_range_coverage(start, end).complete


def test_a_malformed_prefetched_item_is_a_permanent_error_naming_the_field(crm, sim_data):
    start = end = d("2026-02-03")
    sales_data = copy.deepcopy(sim_data.sales(start))
    del sales_data[1]["fiche_id"]

    with pytest.raises(CrmPermanentError) as info:
        cache_sales_list(start=start, end=end, sales_data=sales_data)

    assert "fiche_id" in str(info.value)
    assert "sales_data[1]" in str(info.value)
    assert crm.requests() == []
    assert not FicheCache.objects.exists()
    assert not SalesDateState.objects.exists()


def test_revalidation_bumps_last_revalidated_at_and_picks_up_changed_data(crm, sim_data):
    start, end = d("2026-02-02"), d("2026-02-04")
    cache_sales_list(start=start, end=end)
    first = {f.fiche_id: f for f in FicheCache.objects.filter(sales_date__range=(start, end))}
    first_fetch = dict(SalesDateState.objects.values_list("sales_date", "last_fetched_at"))
    assert first and all(f.last_revalidated_at is not None for f in first.values())

    revised = dataclasses.replace(sim_data, revision=1)
    new_statut = {s["fiche_id"]: s["statut"] for s in sales_between(revised, start, end)}
    changed = {fid for fid, statut in new_statut.items() if statut != first[fid].statut}
    assert changed, "revision 1 changes some statuts in this range"
    crm.config.update({"revision": 1})

    summary = cache_sales_list(start=start, end=end)

    assert summary.mode == "range"
    second = {f.fiche_id: f for f in FicheCache.objects.filter(sales_date__range=(start, end))}
    assert set(second) == set(first)
    assert {fid: f.statut for fid, f in second.items()} == new_statut
    for fid, fiche in second.items():  # every fiche of the list, changed or not
        assert fiche.last_revalidated_at > first[fid].last_revalidated_at
    for day, fetched in SalesDateState.objects.values_list("sales_date", "last_fetched_at"):
        assert fetched > first_fetch[day]


def test_a_date_whose_fetch_is_running_makes_the_warm_raise_without_calling_the_crm(crm):
    with redis_lock("date-fetch:2026-02-03", timeout=10):
        with pytest.raises(LockNotAcquired):
            cache_sales_list(start=d("2026-02-02"), end=d("2026-02-04"))
        with pytest.raises(LockNotAcquired):
            cache_sales_list(start=d("2026-02-03"), end=d("2026-02-03"), sales_data=[])
        assert crm.requests() == []
        assert not FicheCache.objects.exists()
        assert not SalesDateState.objects.exists()
        # the other dates' locks were released: another range fetches fine
        assert cache_sales_list(start=d("2026-02-04"), end=d("2026-02-05")).chunks_ok == 1
    assert cache_sales_list(start=d("2026-02-02"), end=d("2026-02-04")).chunks_ok == 1


# --- Staleness policy -----------------------------------------------------------------------------


def test_should_revalidate_policy(settings):
    assert settings.CACHE_STALE_AFTER_HOURS == 24
    now = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)
    day = d("2026-02-08")
    assert should_revalidate(d("2026-02-10"), now - timedelta(minutes=1), now=now) == DATE_IS_TODAY
    assert should_revalidate(d("2026-02-10"), None, now=now) == DATE_IS_TODAY
    assert should_revalidate(day, None, now=now) == NEVER_VALIDATED
    assert should_revalidate(day, now - timedelta(hours=24, seconds=1), now=now) == STALE_CACHE
    assert should_revalidate(day, now - timedelta(days=30), now=now) == STALE_CACHE
    assert should_revalidate(day, now - timedelta(hours=24), now=now) == CACHE_FRESH
    assert should_revalidate(day, now - timedelta(hours=23), now=now) == CACHE_FRESH
    assert should_revalidate(day, now - timedelta(minutes=1), now=now) == CACHE_FRESH


def test_should_revalidate_uses_the_configured_staleness_window(settings):
    settings.CACHE_STALE_AFTER_HOURS = 2
    now = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)
    day = d("2026-02-08")
    assert should_revalidate(day, now - timedelta(hours=3), now=now) == STALE_CACHE
    assert should_revalidate(day, now - timedelta(hours=2, seconds=1), now=now) == STALE_CACHE
    assert should_revalidate(day, now - timedelta(hours=1), now=now) == CACHE_FRESH


def test_today_is_the_local_date_near_midnight_utc(settings):
    assert settings.TIME_ZONE == "Europe/Paris"
    recent = datetime(2026, 2, 3, 23, 0, tzinfo=UTC)
    with freeze_time("2026-02-03 23:30:00"):  # UTC; 00:30 on 2026-02-04 in Paris
        assert should_revalidate(d("2026-02-04"), recent) == DATE_IS_TODAY
        assert should_revalidate(d("2026-02-03"), recent) == CACHE_FRESH
        assert should_revalidate(d("2026-02-03"), None) == NEVER_VALIDATED
    with freeze_time("2026-02-03 22:59:59"):  # 23:59:59 on 2026-02-03 in Paris
        assert should_revalidate(d("2026-02-03"), recent - timedelta(days=5)) == DATE_IS_TODAY
        assert should_revalidate(d("2026-02-04"), None) == NEVER_VALIDATED
    # explicit now, same rule
    now = datetime(2026, 6, 30, 22, 30, tzinfo=UTC)  # summer time: 00:30 on 2026-07-01 in Paris
    assert should_revalidate(d("2026-07-01"), now, now=now) == DATE_IS_TODAY
    assert should_revalidate(d("2026-06-30"), now, now=now) == CACHE_FRESH


def make_fiche(fiche_id: str, day: date, *, revalidated: datetime | None, created: datetime | None = None) -> None:
    fiche = FicheCache.objects.create(fiche_id=fiche_id, sales_date=day, last_revalidated_at=revalidated)
    if created is not None:
        FicheCache.objects.filter(pk=fiche.pk).update(created_at=created)


def test_last_revalidated_by_date_uses_fetch_state_then_oldest_fiche_never_created_at():
    t = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)
    # 02-02: fetch state wins over the fiches' own times
    SalesDateState.objects.create(sales_date=d("2026-02-02"), last_fetched_at=t - timedelta(hours=5))
    make_fiche("A1", d("2026-02-02"), revalidated=t - timedelta(hours=50))
    # 02-03: no fetch state → the oldest revalidation of its fiches
    make_fiche("B1", d("2026-02-03"), revalidated=t - timedelta(hours=3))
    make_fiche("B2", d("2026-02-03"), revalidated=t - timedelta(hours=30))
    # 02-04: created long ago, revalidated recently → the revalidation time, not created_at
    make_fiche("C1", d("2026-02-04"), revalidated=t - timedelta(hours=1), created=t - timedelta(days=90))
    # 02-05: an error-only fetch state (never fetched) → falls back to its fiches
    SalesDateState.objects.create(sales_date=d("2026-02-05"), last_error="CRM answered 503")
    make_fiche("D1", d("2026-02-05"), revalidated=t - timedelta(hours=2))
    # 02-06: a fiche created during the range but sold on another date (outside it) → nothing
    make_fiche("E1", d("2026-01-15"), revalidated=t - timedelta(hours=1), created=datetime(2026, 2, 6, 10, tzinfo=UTC))
    # 02-07: error-only, no fiches → never revalidated
    SalesDateState.objects.create(sales_date=d("2026-02-07"), last_error="CRM answered 503")

    result = last_revalidated_by_date(d("2026-02-02"), d("2026-02-07"))

    assert result == {
        d("2026-02-02"): t - timedelta(hours=5),
        d("2026-02-03"): t - timedelta(hours=30),
        d("2026-02-04"): t - timedelta(hours=1),
        d("2026-02-05"): t - timedelta(hours=2),
        d("2026-02-06"): None,
        d("2026-02-07"): None,
    }


# 2026-02-10 10:00 in Paris; CACHE_WARMUP_DAYS = 7 → window 02-03..02-10 (8 dates)
WARM_NOW = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)
EXPECTED_WARM = {
    d("2026-02-10"): DATE_IS_TODAY,
    d("2026-02-08"): STALE_CACHE,
    d("2026-02-07"): NEVER_VALIDATED,
    d("2026-02-06"): STALE_CACHE,
    d("2026-02-04"): NEVER_VALIDATED,
}


def setup_warm_states(now: datetime) -> None:
    fetched = {  # per-date fetch state
        "2026-02-10": now - timedelta(hours=1),  # today: always, even fresh
        "2026-02-09": now - timedelta(hours=2),  # fresh
        "2026-02-08": now - timedelta(hours=30),  # stale
        "2026-02-03": now - timedelta(hours=20),  # fresh
        "2026-02-01": now - timedelta(days=9),  # stale but outside the window
    }
    for iso, at in fetched.items():
        SalesDateState.objects.create(sales_date=d(iso), last_fetched_at=at)
    # 02-07: nothing at all → never validated
    # 02-06: fiches only, the oldest revalidated 48 h ago → stale
    make_fiche("F6a", d("2026-02-06"), revalidated=now - timedelta(hours=48))
    make_fiche("F6b", d("2026-02-06"), revalidated=now - timedelta(hours=1))
    # 02-05: fiches only, revalidated 3 h ago though created long ago → fresh
    make_fiche("F5a", d("2026-02-05"), revalidated=now - timedelta(hours=3), created=now - timedelta(days=60))
    # 02-04: a failed fetch only → never validated
    SalesDateState.objects.create(sales_date=d("2026-02-04"), last_error="CRM answered 503")


def test_dates_to_warm_selects_today_and_the_stale_or_never_validated_dates(settings):
    assert settings.CACHE_WARMUP_DAYS == 7
    setup_warm_states(WARM_NOW)
    assert dates_to_warm(now=WARM_NOW) == EXPECTED_WARM


def test_dates_to_warm_with_a_shorter_staleness_window(settings):
    settings.CACHE_STALE_AFTER_HOURS = 2
    setup_warm_states(WARM_NOW)
    assert dates_to_warm(now=WARM_NOW) == {
        **EXPECTED_WARM,
        d("2026-02-05"): STALE_CACHE,  # revalidated 3 h ago
        d("2026-02-03"): STALE_CACHE,  # fetched 20 h ago
    }  # 02-09, fetched exactly 2 h ago, is still fresh


def test_warm_recent_sales_cache_enqueues_revalidate_date_for_the_selected_dates():
    setup_warm_states(WARM_NOW)
    with freeze_time(WARM_NOW, tick=True):
        result = warm_recent_sales_cache.run()

    expected = {day.isoformat(): reason for day, reason in EXPECTED_WARM.items()}
    assert result == expected
    queued = queued_tasks("crm")
    assert [(t.name, t.args, t.kwargs) for t in queued] == [
        ("fiches.tasks.crm.revalidate_date", [iso], {}) for iso in sorted(expected)
    ]


def test_beat_schedules_are_registered_as_enabled_periodic_tasks():
    schedules = {
        t.task: (t.interval.every, t.interval.period, t.enabled)
        for t in PeriodicTask.objects.select_related("interval").filter(interval__isnull=False)
    }
    assert schedules["fiches.tasks.warm_recent_sales_cache"] == (15, "minutes", True)
    assert schedules["fiches.tasks.reconcile_progressive_jobs"] == (1, "minutes", True)
    assert schedules["realtime.tasks.purge_webhook_deliveries"] == (1, "days", True)
    from config.celery import app

    app.loader.import_default_modules()
    for task in (
        "fiches.tasks.warm_recent_sales_cache",
        "fiches.tasks.reconcile_progressive_jobs",
        "realtime.tasks.purge_webhook_deliveries",
    ):
        assert task in app.tasks  # the rows name real tasks


# --- Tasks ------------------------------------------------------------------------------------------


def test_revalidate_date_task_warms_one_day(crm, sim_data):
    result = revalidate_date.apply(args=["2026-02-03"]).get()

    assert result["dates_covered"] == ["2026-02-03"]
    assert (result["start"], result["end"], result["mode"]) == ("2026-02-03", "2026-02-03", "range")
    assert result["fiches_cached"] == len(sim_data.sales(d("2026-02-03")))
    assert sales_calls(crm) == [("2026-02-03", "2026-02-03")]
    assert cached_ids(d("2026-02-03"), d("2026-02-03")) == {s["fiche_id"] for s in sim_data.sales(d("2026-02-03"))}


def _run_as_worker(task, *args):
    """Run a task's body with a worker-like request (not called directly), so that ``retry``
    re-enqueues a message the way it does in a worker (to the ``crm`` queue by name: the test
    Redis is flushed between tests, exchange bindings included)."""
    task.push_request(
        id="test-task-id",
        args=list(args),
        kwargs={},
        called_directly=False,
        retries=0,
        delivery_info={"exchange": "", "routing_key": "crm"},
    )
    try:
        return task.run(*args)
    finally:
        task.pop_request()


@pytest.mark.parametrize("busy", ["date_lock", "crm_rate"])
def test_revalidate_date_waits_and_is_never_dropped_when_busy(crm, settings, busy):
    if busy == "crm_rate":
        settings.CRM_RATE_LIMIT = "1/m"
        assert RateLimiter("crm-calls", rate="1/m").try_acquire() == 0  # the budget is spent
        lock = None
    else:
        lock = redis_lock("date-fetch:2026-02-03", timeout=10)
        lock.__enter__()
    try:
        with pytest.raises(Retry):
            _run_as_worker(revalidate_date, "2026-02-03")
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)

    assert crm.requests() == []
    requeued = [(t.name, t.args) for t in queued_tasks("crm")]
    assert requeued in (
        [("fiches.tasks.crm.revalidate_date", ["2026-02-03"])],
        [("fiches.tasks.crm.cache_sales_list", ["2026-02-03", "2026-02-03"])],
    )


def test_cache_sales_list_task_waits_when_a_date_is_busy(crm):
    """The warm task itself re-enqueues (not an error) when a date is being fetched elsewhere."""
    with redis_lock("date-fetch:2026-02-03", timeout=10):
        with pytest.raises(Retry):
            _run_as_worker(cache_sales_list_task, "2026-02-03", "2026-02-03")
    assert crm.requests() == []
    requeued = [(t.name, t.args) for t in queued_tasks("crm")]
    assert requeued == [("fiches.tasks.crm.cache_sales_list", ["2026-02-03", "2026-02-03"])]


# --- POST /api/fiches/cache/warm --------------------------------------------------------------------


def test_warm_endpoint_enqueues_the_warm_task(auth_client, writer):
    response = auth_client(writer).post(WARM_URL, {"startDate": "2026-02-02", "endDate": "2026-02-13"}, format="json")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["startDate"] == "2026-02-02" and body["endDate"] == "2026-02-13"
    assert body["taskId"]
    assert [(t.name, t.args, t.kwargs, t.id) for t in queued_tasks("crm")] == [
        ("fiches.tasks.crm.cache_sales_list", ["2026-02-02", "2026-02-13"], {}, body["taskId"]),
    ]


def test_warm_endpoint_needs_fiches_write(api_client, auth_client, reader):
    payload = {"startDate": "2026-02-02", "endDate": "2026-02-03"}
    response = auth_client(reader).post(WARM_URL, payload, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert api_client.post(WARM_URL, payload, format="json").status_code == 401
    assert queued_tasks("crm") == []


@pytest.mark.parametrize(
    "payload",
    [
        {"startDate": "2026-02-30", "endDate": "2026-03-02"},
        {"startDate": "2026-2-1", "endDate": "2026-02-03"},
        {"startDate": "2026-02-02"},
        {"startDate": "2026-02-05", "endDate": "2026-02-04"},
        {"startDate": "2025-01-01", "endDate": "2026-02-03"},  # 399 days > PROGRESSIVE_FETCH_MAX_RANGE_DAYS
    ],
)
def test_warm_endpoint_rejects_bad_input(auth_client, writer, settings, payload):
    assert settings.PROGRESSIVE_FETCH_MAX_RANGE_DAYS == 366
    response = auth_client(writer).post(WARM_URL, payload, format="json")
    assert response.status_code == 400, response.content
    assert set(response.json()["error"]) >= {"code", "message"}
    assert queued_tasks("crm") == []


def test_warm_endpoint_range_limit_follows_the_setting(auth_client, writer, settings):
    settings.PROGRESSIVE_FETCH_MAX_RANGE_DAYS = 10
    client = auth_client(writer)
    response = client.post(WARM_URL, {"startDate": "2026-02-02", "endDate": "2026-02-12"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "range_too_long"
    ok = client.post(WARM_URL, {"startDate": "2026-02-02", "endDate": "2026-02-11"}, format="json")
    assert ok.status_code == 202


# --- Workflow log (WORKFLOW_LOG_DB_ENABLED) ---------------------------------------------------------


def run_job_flow(user) -> str:
    """A job through the services: created, dispatched, one day ok, one failed, one ok (finalize)."""
    start, end = d("2026-03-02"), d("2026-03-04")
    meta = jobs.progressive_fetch_request(user=user, start=start, end=end).meta
    job_id = meta["backgroundJobId"]
    assert job_id
    assert jobs.progressive_fetch_dispatch(job_id=job_id) == dates_between(start, end)
    jobs.progressive_fetch_apply_outcome(job_id=job_id, day=start, ok=True)
    jobs.progressive_fetch_apply_outcome(job_id=job_id, day=d("2026-03-03"), ok=False, error="CRM answered 503")
    result = jobs.progressive_fetch_apply_outcome(job_id=job_id, day=end, ok=True)
    assert result.finalized and result.status == JobStatus.FAILED
    return job_id


def test_workflow_log_rows_are_written_when_enabled(settings, writer):
    settings.WORKFLOW_LOG_DB_ENABLED = True
    job_id = run_job_flow(writer)

    rows = list(WorkflowLog.objects.order_by("created_at", "id"))
    assert rows
    assert {str(r.job_id) for r in rows} == {job_id}
    assert all(r.workflow == "fiche" for r in rows)
    events = [r.event for r in rows]
    assert events[0] == "background_job_created"
    assert events[-1] == "progressive_fetch_job_finalized"
    assert events.count("progressive_fetch_job_finalized") == 1
    assert events.count("progressive_fetch_job_updated") == 3
    assert "day_failed" in events
    updated = [r for r in rows if r.event == "progressive_fetch_job_updated"]
    assert [r.date for r in updated] == [d("2026-03-02"), d("2026-03-03"), d("2026-03-04")]
    (failed,) = [r for r in rows if r.event == "day_failed"]
    assert failed.level == "WARNING" and failed.date == d("2026-03-03")
    assert "503" in failed.data["error"]
    (finalized,) = [r for r in rows if r.event == "progressive_fetch_job_finalized"]
    assert finalized.data["status"] == "failed" and finalized.data["failed_days"] == 1


def test_workflow_log_day_worker_writes_start_and_end(settings, writer, crm):
    settings.WORKFLOW_LOG_DB_ENABLED = True
    meta = jobs.progressive_fetch_request(user=writer, start=d("2026-03-02"), end=d("2026-03-02")).meta
    job_id = meta["backgroundJobId"]
    jobs.progressive_fetch_dispatch(job_id=job_id)

    outcome = progressive_fetch_day.apply(args=[job_id, "2026-03-02", False]).get()

    assert outcome["ok"] is True and outcome["fetched"] is True
    events = list(WorkflowLog.objects.filter(job_id=job_id).order_by("created_at", "id").values_list("event", "date"))
    assert ("day_started", d("2026-03-02")) in events
    assert ("day_finished", d("2026-03-02")) in events
    assert events[-1] == ("progressive_fetch_job_finalized", None)
    assert WorkflowLog.objects.exclude(job_id=job_id).count() == 0


def test_workflow_log_records_the_dispatch(settings, writer):
    settings.WORKFLOW_LOG_DB_ENABLED = True
    meta = jobs.progressive_fetch_request(user=writer, start=d("2026-03-02"), end=d("2026-03-04")).meta
    job_id = meta["backgroundJobId"]
    before = WorkflowLog.objects.filter(job_id=job_id).count()
    assert jobs.progressive_fetch_dispatch(job_id=job_id)
    assert WorkflowLog.objects.filter(job_id=job_id).count() > before


def test_no_workflow_log_rows_when_disabled(settings, writer):
    settings.WORKFLOW_LOG_DB_ENABLED = False
    run_job_flow(writer)
    assert WorkflowLog.objects.count() == 0
