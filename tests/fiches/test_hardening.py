"""Phase-1 hardening of the fiche cache and jobs: waits that never restart finished work, day tasks
that do not refetch applied dates, per-user throttles of CRM-bound requests and the global CRM rate
on details fetches, job reuse, derived status filters, the Postgres fence of a date's writes,
Redis-down reads, and bounded polling with a render cache that only its own dates invalidate."""

from __future__ import annotations

import socket
import time
from datetime import UTC, date, datetime, timedelta

import pytest
from celery.exceptions import Retry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from fiches.models import FicheCache, JobStatus, ProgressiveFetchJob, SalesDateState
from fiches.services import jobs
from fiches.services.cache import cache_fiche_sales_summaries
from fiches.services.revalidation import WarmPaused, cache_sales_list
from fiches.tasks import cache_sales_list as cache_sales_list_task
from fiches.tasks import progressive_fetch_day
from tests.fiches.conftest import crm_calls
from tests.support import make_job, queued_tasks, sale

pytestmark = pytest.mark.django_db

RANGE_URL = "/api/fiches/status/by-date-range"
POLL_URL = "/api/fiches/webhooks/fiches"
JOBS_URL = "/api/fiches/jobs"
WARM_URL = "/api/fiches/cache/warm"
D = date(2026, 2, 2)
T1 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
T2 = T1 + timedelta(minutes=5)


def day(n: int) -> date:
    return D + timedelta(days=n)


def sales_calls(simulator) -> list[tuple[str, str]]:
    return [(c["params"]["startDate"], c["params"]["endDate"]) for c in crm_calls(simulator, sales=True)]


@pytest.fixture
def all_writer(make_role, make_user):
    return make_user(make_role("h-writer", fiches=("rw", "ALL"), recordings=("r", "ALL")), email="h-w@example.com")


@pytest.fixture
def all_reader(make_role, make_user):
    return make_user(make_role("h-reader", fiches=("r", "ALL")), email="h-r@example.com")


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- 1. Waiting never restarts finished chunks ------------------------------------------------------


def test_the_chunk_fallback_pauses_for_the_crm_rate_and_resumes_without_refetching(crm, settings):
    """Under a global CRM rate the range call fails (the gateway refuses long ranges), the 2-day
    chunk fallback runs, and each wait for the rate pauses and resumes where it stopped: the range
    is asked once and each chunk once."""
    settings.CRM_RATE_LIMIT = "240/m"  # one call every 0.25 s
    settings.SALES_LIST_CHUNK_DAYS = 2
    crm.config.max_range_days = 2
    pauses, state, summary = 0, None, None
    for _ in range(50):
        try:
            summary = cache_sales_list(start=day(0), end=day(5), max_wait=0, resume=state)
            break
        except WarmPaused as paused:
            pauses += 1
            state = paused.state
            time.sleep(paused.retry_after)
    assert summary is not None, "never finished"
    assert pauses >= 2
    assert summary.mode == "chunks" and summary.chunks_ok == 3 and summary.chunks_failed == 0
    assert len(summary.dates_covered) == 6
    assert sales_calls(crm) == [
        (day(0).isoformat(), day(5).isoformat()),
        (day(0).isoformat(), day(1).isoformat()),
        (day(2).isoformat(), day(3).isoformat()),
        (day(4).isoformat(), day(5).isoformat()),
    ]


def _run_as_worker(task, *args, **kwargs):
    task.push_request(
        id="test-task-id",
        args=list(args),
        kwargs=kwargs,
        called_directly=False,
        retries=0,
        delivery_info={"exchange": "", "routing_key": "crm"},
    )
    try:
        return task.run(*args, **kwargs)
    finally:
        task.pop_request()


def test_the_warm_task_re_enqueues_itself_with_the_chunks_left(crm, settings):
    settings.CRM_RATE_LIMIT = "40/m"  # 1.5 s between calls: longer than a task waits in place
    settings.CRM_REVALIDATION_RATE_LIMIT = "off"
    settings.SALES_LIST_CHUNK_DAYS = 2
    crm.config.max_range_days = 2
    with pytest.raises(Retry):
        _run_as_worker(cache_sales_list_task, day(0).isoformat(), day(3).isoformat())
    (message,) = queued_tasks("crm")
    assert message.name == "fiches.tasks.crm.cache_sales_list"
    resume = message.kwargs["resume"]
    assert resume["mode"] == "chunks" and resume["pending"][0] == [day(0).isoformat(), day(1).isoformat()]

    while True:  # what the worker does with each re-enqueued message
        time.sleep(1.5)
        try:
            result = _run_as_worker(cache_sales_list_task, day(0).isoformat(), day(3).isoformat(), resume=resume)
            break
        except Retry:
            resume = queued_tasks("crm")[-1].kwargs["resume"]
    assert result["mode"] == "chunks" and result["chunks_ok"] == 2
    assert len(result["dates_covered"]) == 4
    assert sales_calls(crm).count((day(0).isoformat(), day(1).isoformat())) == 1


def test_a_warm_task_run_waits_for_the_revalidation_rate_before_it_starts(crm, settings):
    settings.CRM_REVALIDATION_RATE_LIMIT = "1/m"
    assert _run_as_worker(cache_sales_list_task, day(0).isoformat(), day(0).isoformat())["chunks_ok"] == 1
    with pytest.raises(Retry):
        _run_as_worker(cache_sales_list_task, day(1).isoformat(), day(1).isoformat())
    assert sales_calls(crm) == [(day(0).isoformat(), day(0).isoformat())]  # the second did not start


# --- 1. A re-driven day task does not refetch an applied date -------------------------------------------


def test_a_redriven_day_task_of_a_refresh_job_skips_a_date_already_applied(crm, all_writer):
    job = make_job(
        all_writer,
        day(0),
        2,
        status=JobStatus.PROCESSING,
        force_refresh=True,
        dates_already_fetched=[day(0)],
        dates_remaining=[day(1)],
        completed_days=1,
        progress=50,
    )

    first = progressive_fetch_day.apply(args=[str(job.pk), day(0).isoformat(), True]).get()
    assert first == {"date": day(0).isoformat(), "skipped": "outcome already applied"}
    assert crm_calls(crm) == []

    second = progressive_fetch_day.apply(args=[str(job.pk), day(1).isoformat(), True]).get()
    assert second["ok"] is True and second["fetched"] is True
    assert sales_calls(crm) == [(day(1).isoformat(), day(1).isoformat())]
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETE


# --- 3. Per-user throttles and the global CRM rate on details ----------------------------------------------


@pytest.fixture
def throttled(settings):
    settings.CRM_USER_THROTTLE_RATE = "6/m"
    settings.CRM_USER_THROTTLE_BURST = 2
    settings.REFRESH_MIN_INTERVAL_SECONDS = 0


def _uncached_ids(sim_data, n: int) -> list[str]:
    return [s["fiche_id"] for s in sim_data.sales(day(0))][:n]


@pytest.mark.usefixtures("throttled")
def test_details_cache_misses_are_throttled_per_user(crm, sim_data, all_writer, all_reader, auth_client):
    first, second, third = _uncached_ids(sim_data, 3)
    client = auth_client(all_writer)
    assert client.get(f"/api/fiches/{first}").status_code == 200
    assert client.get(f"/api/fiches/{second}").status_code == 200
    response = client.get(f"/api/fiches/{third}")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "crm_requests_throttled"
    assert 1 <= int(response["Retry-After"]) <= 10
    assert len(crm_calls(crm)) == 2  # the throttled one never reached the CRM
    # Cached details cost nothing and are not throttled; another user has their own budget.
    assert client.get(f"/api/fiches/{first}").status_code == 200
    assert auth_client(all_reader).get(f"/api/fiches/{third}").status_code == 200


@pytest.mark.usefixtures("throttled")
def test_refresh_and_cache_warm_count_in_the_same_per_user_budget(all_writer, auth_client):
    client = auth_client(all_writer)
    refresh = client.get(RANGE_URL, {"startDate": day(0).isoformat(), "endDate": day(1).isoformat(), "refresh": "true"})
    assert refresh.status_code == 200
    warm = client.post(WARM_URL, {"startDate": day(2).isoformat(), "endDate": day(3).isoformat()}, format="json")
    assert warm.status_code == 202
    again = client.post(WARM_URL, {"startDate": day(4).isoformat(), "endDate": day(5).isoformat()}, format="json")
    assert again.status_code == 429 and again.json()["error"]["code"] == "crm_requests_throttled"
    refresh = client.get(RANGE_URL, {"startDate": day(6).isoformat(), "endDate": day(6).isoformat(), "refresh": "true"})
    assert refresh.status_code == 429
    # Plain reads are never throttled.
    assert client.get(RANGE_URL, {"startDate": day(0).isoformat(), "endDate": day(1).isoformat()}).status_code == 200


def test_details_fetches_go_through_the_global_crm_rate(crm, sim_data, all_writer, auth_client, settings):
    settings.CRM_RATE_LIMIT = "1/m"
    first, second = _uncached_ids(sim_data, 2)
    client = auth_client(all_writer)
    assert client.get(f"/api/fiches/{first}").status_code == 200
    response = client.get(f"/api/fiches/{second}")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "crm_busy"
    assert len(crm_calls(crm)) == 1


# --- 3. Job reuse --------------------------------------------------------------------------------------------


def _request(user, **kwargs) -> str:
    return jobs.progressive_fetch_request(user=user, start=day(0), end=day(1), **kwargs).meta["backgroundJobId"]


def test_a_failed_job_is_never_reused(all_reader):
    first = _request(all_reader)
    ProgressiveFetchJob.objects.filter(pk=first).update(status=JobStatus.FAILED)
    second = _request(all_reader)
    assert second != first
    assert _request(all_reader) == second  # a job that did not fail is reused as before


def test_a_different_webhook_secret_gets_its_own_job(all_reader, settings):
    settings.WEBHOOK_ALLOWED_ORIGINS = ["https://hooks.partner.example"]
    url = "https://hooks.partner.example/hook"
    first = _request(all_reader, webhook_url=url, webhook_secret="secret-one")
    assert _request(all_reader, webhook_url=url, webhook_secret="secret-one") == first
    second = _request(all_reader, webhook_url=url, webhook_secret="secret-two")
    assert second != first
    assert ProgressiveFetchJob.objects.get(pk=second).webhook_secret == "secret-two"
    assert _request(all_reader, webhook_url=url) not in (first, second)  # no secret is a different secret


def test_an_empty_whsec_secret_is_a_400(all_reader, auth_client, settings):
    settings.WEBHOOK_ALLOWED_ORIGINS = ["http://127.0.0.1:9"]
    response = auth_client(all_reader).get(
        RANGE_URL,
        {
            "startDate": day(0).isoformat(),
            "endDate": day(1).isoformat(),
            "webhookUrl": "http://127.0.0.1:9/hook",
            "webhookSecret": "whsec_",
        },
    )
    assert response.status_code == 400 and "empty key" in response.json()["error"]["message"]
    assert not ProgressiveFetchJob.objects.exists()


# --- 3. The status filter follows the shown status ----------------------------------------------------------


def test_the_jobs_status_filter_uses_the_derived_status(all_reader, auth_client):
    done = make_job(
        all_reader, day(0), 1, status="processing", progress=100, dates_remaining=[], dates_already_fetched=[day(0)]
    )
    done_failed = make_job(
        all_reader, day(0), 1, status="processing", progress=100, dates_remaining=[], dates_failed=[day(0)]
    )
    running = make_job(
        all_reader,
        day(0),
        2,
        status="processing",
        progress=50,
        dates_remaining=[day(1)],
        dates_already_fetched=[day(0)],
    )
    client = auth_client(all_reader)

    def listed(status: str) -> set[str]:
        return {j["jobId"] for j in client.get(JOBS_URL, {"status": status}).json()["results"]}

    assert listed("complete") == {str(done.pk)}
    assert listed("failed") == {str(done_failed.pk)}
    assert listed("processing") == {str(running.pk)}
    for status in ("complete", "failed", "processing"):
        assert all(j["status"] == status for j in client.get(JOBS_URL, {"status": status}).json()["results"])


# --- 3. The Postgres fence of one date's writes -------------------------------------------------------------


def test_an_older_fetch_never_overwrites_a_newer_one_of_the_same_date():
    newer = [sale("F1", day(0), nom="Newer"), sale("F2", day(0))]
    older = [sale("F1", day(0), nom="Older"), sale("F3", day(0))]  # F3 was removed since
    cache_fiche_sales_summaries(newer, revalidated_at=T2, covered_dates=[day(0)])

    result = cache_fiche_sales_summaries(
        older + [sale("F9", day(1))], revalidated_at=T1, covered_dates=[day(0), day(1)]
    )

    assert result.dates == [day(1)]  # the other date of the same list is written
    assert FicheCache.objects.get(fiche_id="F1").prospect_nom == "Newer"
    assert not FicheCache.objects.filter(fiche_id="F3").exists()
    assert FicheCache.objects.filter(fiche_id="F9").exists()
    assert SalesDateState.objects.get(sales_date=day(0)).last_fetched_at == T2
    # The same fetch again, or a newer one, still applies.
    cache_fiche_sales_summaries(
        [sale("F1", day(0), nom="Newest")], revalidated_at=T2 + timedelta(seconds=1), covered_dates=[day(0)]
    )
    assert FicheCache.objects.get(fiche_id="F1").prospect_nom == "Newest"


# --- 4. Redis down -------------------------------------------------------------------------------------------


def test_with_redis_down_range_reads_answer_from_postgres_and_jobs_are_still_created(
    all_writer, auth_client, settings, django_capture_on_commit_callbacks
):
    cache_fiche_sales_summaries([sale("F1", day(0)), sale("F2", day(0))], revalidated_at=T1, covered_dates=[day(0)])
    client = auth_client(all_writer)
    client.get(JOBS_URL)  # authenticated once while Redis is up
    from tests.workflow.faults import celery_on

    url = f"redis://127.0.0.1:{dead_port()}/0"
    with celery_on(url):  # REDIS_URL and the Celery broker both point at a dead port
        covered = client.get(RANGE_URL, {"startDate": day(0).isoformat(), "endDate": day(0).isoformat()})
        assert covered.status_code == 200
        assert [f["fiche_id"] for f in covered.json()["fiches"]] == ["F1", "F2"]

        with django_capture_on_commit_callbacks(execute=True):
            missing = client.get(RANGE_URL, {"startDate": day(0).isoformat(), "endDate": day(2).isoformat()})
        assert missing.status_code == 200
        job_id = missing.json()["meta"]["backgroundJobId"]
        assert job_id and len(missing.json()["fiches"]) == 2

        refresh = client.get(
            RANGE_URL, {"startDate": day(0).isoformat(), "endDate": day(0).isoformat(), "refresh": "true"}
        )
        assert refresh.status_code == 503
        assert refresh.json()["error"]["code"] in ("refresh_unavailable", "rate_limiter_unavailable")

        health = client.get("/api/health")
        assert health.status_code == 503 and health.json()["checks"]["redis"] == "unavailable"

    job = ProgressiveFetchJob.objects.get(pk=job_id)
    assert job.dispatched_at is None  # the orchestrator message was never sent...
    later = timezone.now() + timedelta(seconds=settings.PROGRESSIVE_FETCH_STALL_SECONDS + 1)
    assert jobs.progressive_fetch_reconcile(now=later)["redrive"] == [job_id]  # ...so the reconciler drives it


# --- 4. Polling: bounded partial data, a render cache only its own dates invalidate -----------------------------


def _poll_job(user, n_fiches: int) -> ProgressiveFetchJob:
    cache_fiche_sales_summaries(
        [sale(f"F{i}", day(i % 2)) for i in range(n_fiches)], revalidated_at=T1, covered_dates=[day(0), day(1)]
    )
    return make_job(user, day(0), 2, status="processing", dates_remaining=[day(1)], dates_already_fetched=[day(0)])


def test_poll_partial_data_is_bounded_and_paged_by_cursor(all_reader, auth_client, settings):
    settings.POLL_PARTIAL_DATA_LIMIT = 3
    job = _poll_job(all_reader, 7)
    client = auth_client(all_reader)

    first = client.get(POLL_URL, {"jobId": str(job.pk)}).json()
    assert len(first["partialData"]) == 3 and first["partialDataTruncated"] is True
    seen = [f["fiche_id"] for f in first["partialData"]]
    cursor = first["partialDataNextCursor"]
    while cursor:
        page = client.get(POLL_URL, {"jobId": str(job.pk), "cursor": cursor, "limit": 2}).json()
        assert len(page["partialData"]) <= 2
        seen += [f["fiche_id"] for f in page["partialData"]]
        cursor = page["partialDataNextCursor"]
        assert page["partialDataTruncated"] is (cursor is not None)
    expected = [f.fiche_id for f in FicheCache.objects.order_by("sales_date", "fiche_id")]
    assert seen == expected and len(seen) == 7

    everything = client.get(POLL_URL, {"jobId": str(job.pk), "limit": 5000}).json()
    assert everything["partialDataTruncated"] is False and everything["partialDataNextCursor"] is None
    assert client.get(POLL_URL, {"jobId": str(job.pk), "cursor": "@@not-a-cursor"}).status_code == 400
    assert client.get(POLL_URL, {"jobId": str(job.pk), "limit": 5001}).status_code == 400


def test_writes_to_other_dates_keep_the_polling_render_cache(all_reader, auth_client):
    job = _poll_job(all_reader, 4)
    client = auth_client(all_reader)
    client.get(POLL_URL, {"jobId": str(job.pk)})

    def renders() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(POLL_URL, {"jobId": str(job.pk)}).status_code == 200
        return sum("json_agg" in q["sql"] for q in ctx.captured_queries)

    from fiches.selectors import bump_cache_version

    cache_fiche_sales_summaries([sale("OUT", day(10))], revalidated_at=T1, covered_dates=[day(10)])
    bump_cache_version([day(10)])  # what the on_commit hook does after a write elsewhere
    assert renders() == 0
    cache_fiche_sales_summaries([sale("IN", day(1))], revalidated_at=T2, covered_dates=[day(1)])
    bump_cache_version([day(1)])
    assert renders() == 1
    assert "IN" in {f["fiche_id"] for f in client.get(POLL_URL, {"jobId": str(job.pk)}).json()["partialData"]}


# --- 5. Status endpoints from a job snapshot: never older than the database -----------------------------------


def test_the_status_endpoints_answer_from_the_snapshot_and_every_write_invalidates_it(all_reader, auth_client):
    job = _poll_job(all_reader, 2)
    client = auth_client(all_reader)

    def poll() -> dict:
        return client.get(POLL_URL, {"jobId": str(job.pk)}).json()

    assert poll()["progress"] == 0
    with CaptureQueriesContext(connection) as ctx:
        assert poll()["status"] == "processing"
        assert client.get(f"{JOBS_URL}/{job.pk}").status_code == 200
    assert not [q for q in ctx.captured_queries if "progressive_fetch_jobs" in q["sql"]]  # from the snapshot

    jobs.progressive_fetch_apply_outcome(job_id=str(job.pk), day=day(1), ok=True)  # the updater (raw SQL)
    assert (poll()["status"], poll()["progress"]) == ("complete", 100)
    ProgressiveFetchJob.objects.filter(pk=job.pk).update(error="set by a bulk update")  # no model signal
    assert poll()["error"] == "set by a bulk update"
    job.refresh_from_db()
    job.error = "set by a save"
    job.save()
    assert client.get(f"{JOBS_URL}/{job.pk}").json()["error"] == "set by a save"
