"""Progressive fetch jobs end to end: API → Celery worker process → CRM simulator → Postgres."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest

from fiches.models import FicheCache, ProgressiveFetchJob
from fiches.services.cache import cache_fiche_sales_summaries
from fiches.simulator import data as sim_data
from tests.workflow.conftest import wait_for

pytestmark = [pytest.mark.workflow, pytest.mark.django_db(transaction=True)]

RANGE_URL = "/api/fiches/status/by-date-range"


def _days(start: date, n: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(n)]


def _sim_sales(sim, day: date) -> list[dict]:
    cfg = sim.config
    return sim_data.sales_for_date(
        day, seed=cfg.seed, fiches_per_day=cfg.fiches_per_day, revision=cfg.revision, include_recordings=True
    )


def _sales_calls_by_date(sim) -> Counter:
    return Counter(r["params"]["startDate"] for r in sim.requests() if r["path"] == "/api/fiches/sales-with-calls")


def _wait_terminal(job_id: str, timeout: float = 45.0) -> ProgressiveFetchJob:
    return wait_for(
        lambda: (job := ProgressiveFetchJob.objects.get(pk=job_id)).is_terminal and job,
        timeout=timeout,
        message=f"job {job_id} to finish",
    )


@pytest.fixture
def reader(make_role, make_user):
    return make_user(make_role("reader", fiches=("r", "ALL")))


@pytest.fixture
def writer(make_role, make_user):
    return make_user(make_role("writer", fiches=("rw", "ALL")))


def test_partly_cached_range_completes_with_exact_counts(worker, crm, reader, auth_client):
    days = _days(date(2026, 2, 2), 5)
    cached = [days[0], days[2]]
    for day in cached:
        cache_fiche_sales_summaries(_sim_sales(crm, day), revalidated_at=datetime.now(UTC), covered_dates=[day])
    crm.clear_requests()

    response = auth_client(reader).get(RANGE_URL, {"startDate": days[0], "endDate": days[-1]})
    assert response.status_code == 200
    meta = response.json()["meta"]
    assert meta["datesAlreadyFetched"] == [d.isoformat() for d in cached]
    assert meta["datesRemaining"] == [d.isoformat() for d in days if d not in cached]
    assert meta["complete"] is False

    job = _wait_terminal(meta["backgroundJobId"])
    expected_total = sum(len(_sim_sales(crm, d)) for d in days)
    assert job.status == "complete"
    assert job.progress == 100 and job.completed_days == 5 and job.total_days == 5
    assert sorted(job.dates_already_fetched) == days
    assert job.dates_remaining == [] and job.dates_failed == [] and job.error is None
    assert (
        job.total_fiches == expected_total == FicheCache.objects.filter(sales_date__range=(days[0], days[-1])).count()
    )
    assert job.completed_at is not None and job.started_at is not None
    # Only the missing dates were fetched, once each.
    assert _sales_calls_by_date(crm) == Counter({d.isoformat(): 1 for d in days if d not in cached})

    again = auth_client(reader).get(RANGE_URL, {"startDate": days[0], "endDate": days[-1]}).json()
    assert again["meta"]["complete"] is True and again["meta"]["backgroundJobId"] is None
    assert len(again["fiches"]) == expected_total


def test_failing_date_ends_failed_and_other_dates_are_cached(worker, crm, reader, auth_client):
    days = _days(date(2026, 3, 2), 4)
    bad = days[2]
    crm.config.fail_dates = frozenset({bad})

    meta = auth_client(reader).get(RANGE_URL, {"startDate": days[0], "endDate": days[-1]}).json()["meta"]
    job = _wait_terminal(meta["backgroundJobId"])

    assert job.status == "failed"
    assert job.dates_failed == [bad]
    assert sorted(job.dates_already_fetched) == [d for d in days if d != bad]
    assert job.dates_remaining == [] and job.progress == 100
    assert bad.isoformat() in job.error and "503" in job.error
    for day in days:
        expected = 0 if day == bad else len(_sim_sales(crm, day))
        assert FicheCache.objects.filter(sales_date=day).count() == expected
    # The failing date was tried 1 + PROGRESSIVE_FETCH_DAY_MAX_ERRORS (2) times; the others once.
    calls = _sales_calls_by_date(crm)
    assert calls[bad.isoformat()] == 3
    assert all(calls[d.isoformat()] == 1 for d in days if d != bad)


def test_refresh_refetches_every_date_and_bumps_revalidation(worker, crm, writer, auth_client):
    days = _days(date(2026, 4, 6), 4)
    old = datetime(2026, 1, 1, tzinfo=UTC)
    for day in days:
        cache_fiche_sales_summaries(_sim_sales(crm, day), revalidated_at=old, covered_dates=[day])
    crm.clear_requests()
    crm.config.revision = 1  # the CRM's data moved on: revalidation must pick it up

    response = auth_client(writer).get(RANGE_URL, {"startDate": days[0], "endDate": days[-1], "refresh": "true"})
    meta = response.json()["meta"]
    assert meta["forceRefresh"] is True and meta["datesRemaining"] == [d.isoformat() for d in days]
    job = _wait_terminal(meta["backgroundJobId"])

    assert job.status == "complete" and job.force_refresh is True
    assert _sales_calls_by_date(crm) == Counter({d.isoformat(): 1 for d in days})
    rows = FicheCache.objects.filter(sales_date__range=(days[0], days[-1]))
    assert rows.exists() and not rows.filter(last_revalidated_at__lte=old).exists()
    revised = {s["fiche_id"]: s["statut"] for d in days for s in _sim_sales(crm, d)}
    assert {r.fiche_id: r.statut for r in rows} == revised
