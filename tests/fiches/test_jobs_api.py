"""The progressive date-range fetch API: cached / uncached scenarios A–E, job reuse (also under a
race), input validation and the SSRF guard, scope filtering, and the job polling / inspection
endpoints (derived status, visibility, pagination).

No worker runs here: a created job only enqueues its orchestrator after commit, which plain
``django_db`` tests never reach (and the race test only sends a message to the test Redis).
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.tokens import issue_tokens
from fiches.models import ProgressiveFetchJob
from fiches.services.cache import cache_fiche_sales_summaries
from tests.support import make_job, sale

RANGE_URL = "/api/fiches/status/by-date-range"
BY_DATE_URL = "/api/fiches/status/by-date"
POLL_URL = "/api/fiches/webhooks/fiches"
JOBS_URL = "/api/fiches/jobs"

REVALIDATED_AT = datetime(2026, 3, 20, 8, 0, tzinfo=UTC)
D = date(2026, 3, 2)  # a Monday; ranges below are built from it

META_KEYS = {
    "startDate",
    "endDate",
    "totalDays",
    "datesAlreadyFetched",
    "datesRemaining",
    "complete",
    "backgroundJobId",
    "forceRefresh",
    "totalFiches",
}
JOB_KEYS = {
    "jobId",
    "status",
    "progress",
    "startDate",
    "endDate",
    "completedDays",
    "totalDays",
    "totalFiches",
    "datesCompleted",
    "datesRemaining",
    "datesFailed",
    "forceRefresh",
    "error",
    "createdAt",
    "completedAt",
}
SECRET = "whsec_c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1sZWFr"


# --- Helpers ---------------------------------------------------------------------------------------


def day(n: int) -> date:
    return D + timedelta(days=n)


def days(start: date, n: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(n)]


def iso(values) -> list[str]:
    return [v.isoformat() for v in values]


def cache(*sales: dict, covered: list[date] | None = None) -> None:
    cache_fiche_sales_summaries(list(sales), revalidated_at=REVALIDATED_AT, covered_dates=covered)


def get_range(client, start: date, end: date, **extra):
    return client.get(RANGE_URL, {"startDate": start.isoformat(), "endDate": end.isoformat(), **extra})


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]


# --- Users -----------------------------------------------------------------------------------------


@pytest.fixture
def all_reader(make_role, make_user):
    return make_user(make_role("pf-all-reader", fiches=("r", "ALL")), email="pf-all@example.com")


@pytest.fixture
def all_writer(make_role, make_user):
    return make_user(make_role("pf-all-writer", fiches=("rw", "ALL")), email="pf-writer@example.com")


@pytest.fixture
def group_reader(make_role, make_user):
    return make_user(make_role("pf-group", fiches=("r", "GROUP")), email="pf-group@example.com", groupes=["Lyon-2"])


@pytest.fixture
def self_reader(make_role, make_user):
    return make_user(
        make_role("pf-self", fiches=("r", "SELF")),
        email="pf-self@example.com",
        crm_user_id="u-417",
        groupes=["Lyon-2"],
    )


@pytest.fixture
def no_fiches_user(make_role, make_user):
    return make_user(make_role("pf-recordings-only", recordings=("r", "ALL")), email="pf-nofiches@example.com")


# --- Scenario A: fully covered --------------------------------------------------------------------


def test_a_fully_covered_range_returns_cached_fiches_and_creates_no_job(all_reader, auth_client):
    start, end = day(0), day(2)
    # day(1) had no sales: only covered_dates marks it fetched.
    cache(sale("FA001", day(0)), sale("FA002", day(0)), sale("FC001", day(2)), covered=days(start, 3))

    response = get_range(auth_client(all_reader), start, end)

    assert response.status_code == 200, response.content
    body = response.json()
    assert ProgressiveFetchJob.objects.count() == 0
    meta = body["meta"]
    assert meta.keys() >= META_KEYS
    assert meta["complete"] is True
    assert meta["backgroundJobId"] is None
    assert meta["jobReused"] is False
    assert meta["forceRefresh"] is False
    assert meta["datesAlreadyFetched"] == iso(days(start, 3))
    assert meta["datesRemaining"] == []
    assert meta["totalDays"] == 3
    assert meta["startDate"] == start.isoformat() and meta["endDate"] == end.isoformat()
    assert meta["totalFiches"] == 3
    assert [f["fiche_id"] for f in body["fiches"]] == ["FA001", "FA002", "FC001"]
    first = body["fiches"][0]
    assert first["sales_date"] == day(0).isoformat()
    assert first["groupe"] == "Lyon-2" and first["crm_user_id"] == "u-417"
    assert first["prospect_nom"] == "Martin" and first["prospect_prenom"] == "Paul"


def test_a_an_empty_day_not_marked_fetched_is_still_missing(all_reader, auth_client):
    """Control for scenario A: without covered_dates, a day with no fiche rows is not covered."""
    cache(sale("FA001", day(0)), sale("FC001", day(2)))  # covered dates default to the sales dates

    meta = get_range(auth_client(all_reader), day(0), day(2)).json()["meta"]

    assert meta["complete"] is False
    assert meta["datesAlreadyFetched"] == iso([day(0), day(2)])
    assert meta["datesRemaining"] == iso([day(1)])
    job = ProgressiveFetchJob.objects.get()
    assert job.dates_remaining == [day(1)]


# --- Scenario B: partly covered -------------------------------------------------------------------


def test_b_partly_covered_range_returns_cached_fiches_and_a_job_for_the_missing_dates(all_reader, auth_client):
    all_days = days(day(0), 6)
    covered = [all_days[0], all_days[1], all_days[3], all_days[4]]
    missing = [all_days[2], all_days[5]]
    cache(
        sale("FB001", all_days[0]),
        sale("FB002", all_days[0]),
        sale("FB003", all_days[3]),
        covered=covered,
    )
    # A fiche outside the range is neither returned nor counted.
    cache(sale("FOUT1", day(-1)), covered=[day(-1)])

    response = get_range(auth_client(all_reader), all_days[0], all_days[-1])

    assert response.status_code == 200, response.content
    body = response.json()
    meta = body["meta"]
    assert meta.keys() >= META_KEYS
    assert meta["complete"] is False
    assert meta["jobReused"] is False
    assert meta["forceRefresh"] is False
    assert meta["totalDays"] == 6
    assert meta["datesAlreadyFetched"] == iso(covered)
    assert meta["datesRemaining"] == iso(missing)
    assert meta["totalFiches"] == 3
    assert [f["fiche_id"] for f in body["fiches"]] == ["FB001", "FB002", "FB003"]

    job = ProgressiveFetchJob.objects.get()
    assert meta["backgroundJobId"] == str(job.id)
    assert job.status == "pending"
    assert job.start_date == all_days[0] and job.end_date == all_days[-1]
    assert job.dates_remaining == missing
    assert sorted(job.dates_already_fetched) == covered
    assert job.dates_failed == []
    assert job.total_days == 6
    assert job.completed_days == 4
    assert job.progress == 67  # round(4 / 6 * 100): rounded, not truncated
    assert job.total_fiches == 3
    assert job.initial_date_counts == {all_days[0].isoformat(): 2, all_days[3].isoformat(): 1}
    assert job.force_refresh is False
    assert job.requested_by == all_reader
    assert job.webhook_url is None and job.webhook_secret is None
    assert job.completed_at is None and job.error is None


@pytest.mark.parametrize(("n_days", "n_covered", "progress"), [(3, 1, 33), (3, 2, 67), (4, 3, 75), (7, 1, 14)])
def test_b_initial_progress_is_the_rounded_covered_share(all_reader, auth_client, n_days, n_covered, progress):
    all_days = days(day(0), n_days)
    cache(covered=all_days[:n_covered])

    meta = get_range(auth_client(all_reader), all_days[0], all_days[-1]).json()["meta"]

    job = ProgressiveFetchJob.objects.get(pk=meta["backgroundJobId"])
    assert job.progress == progress
    assert job.completed_days == n_covered
    assert job.dates_remaining == all_days[n_covered:]


# --- Scenario C: nothing covered ------------------------------------------------------------------


def test_c_uncovered_range_returns_no_fiches_and_a_job_for_every_date(all_reader, auth_client):
    all_days = days(day(10), 3)
    cache(sale("FNEAR", day(9)), covered=[day(9)])  # the day before: covered, but out of range

    response = get_range(auth_client(all_reader), all_days[0], all_days[-1])

    assert response.status_code == 200
    body = response.json()
    assert body["fiches"] == []
    meta = body["meta"]
    assert meta["datesAlreadyFetched"] == []
    assert meta["datesRemaining"] == iso(all_days)
    assert meta["complete"] is False
    assert meta["totalFiches"] == 0
    job = ProgressiveFetchJob.objects.get()
    assert meta["backgroundJobId"] == str(job.id)
    assert job.dates_remaining == all_days
    assert job.dates_already_fetched == []
    assert job.progress == 0 and job.completed_days == 0 and job.total_fiches == 0
    assert job.status == "pending"


# --- Scenario D: reuse within the window -----------------------------------------------------------


def test_d_same_range_within_five_minutes_reuses_the_job_and_later_gets_a_new_one(
    all_reader, group_reader, auth_client
):
    start, end = day(0), day(3)
    cache(sale("FD001", day(1)), covered=[day(1)])
    client = auth_client(all_reader)

    first = get_range(client, start, end).json()["meta"]
    second = get_range(client, start, end).json()
    assert first["jobReused"] is False
    assert second["meta"]["backgroundJobId"] == first["backgroundJobId"]
    assert second["meta"]["jobReused"] is True
    assert second["meta"]["datesRemaining"] == first["datesRemaining"]
    assert [f["fiche_id"] for f in second["fiches"]] == ["FD001"]
    assert ProgressiveFetchJob.objects.count() == 1

    # Four minutes old: still reused.
    ProgressiveFetchJob.objects.update(created_at=timezone.now() - timedelta(minutes=4))
    third = get_range(client, start, end).json()["meta"]
    assert third["backgroundJobId"] == first["backgroundJobId"] and third["jobReused"] is True
    assert ProgressiveFetchJob.objects.count() == 1

    # Six minutes old: a new job.
    ProgressiveFetchJob.objects.update(created_at=timezone.now() - timedelta(minutes=6))
    fourth = get_range(client, start, end).json()["meta"]
    assert fourth["backgroundJobId"] not in (None, first["backgroundJobId"])
    assert fourth["jobReused"] is False
    assert ProgressiveFetchJob.objects.count() == 2

    # ... which is the one reused next.
    fifth = get_range(client, start, end).json()["meta"]
    assert fifth["backgroundJobId"] == fourth["backgroundJobId"] and fifth["jobReused"] is True

    # Another user never gets someone else's job.
    other = get_range(auth_client(group_reader), start, end).json()["meta"]
    assert other["backgroundJobId"] not in (first["backgroundJobId"], fourth["backgroundJobId"])
    assert other["jobReused"] is False
    assert ProgressiveFetchJob.objects.count() == 3
    assert ProgressiveFetchJob.objects.get(pk=other["backgroundJobId"]).requested_by == group_reader


def test_d_reuse_window_follows_the_setting(all_reader, auth_client, settings):
    settings.PROGRESSIVE_FETCH_REUSE_SECONDS = 30
    client = auth_client(all_reader)
    first = get_range(client, day(0), day(1)).json()["meta"]
    ProgressiveFetchJob.objects.update(created_at=timezone.now() - timedelta(seconds=45))

    second = get_range(client, day(0), day(1)).json()["meta"]

    assert second["backgroundJobId"] != first["backgroundJobId"]
    assert ProgressiveFetchJob.objects.count() == 2


def test_d_reuse_with_frozen_clock_moving_forward(all_reader, auth_client):
    freezegun = pytest.importorskip("freezegun")
    client = auth_client(all_reader)
    now = timezone.now()
    with freezegun.freeze_time(now, tick=True) as clock:
        first = get_range(client, day(0), day(2)).json()["meta"]
        clock.move_to(now + timedelta(minutes=2))
        assert get_range(client, day(0), day(2)).json()["meta"]["backgroundJobId"] == first["backgroundJobId"]
        clock.move_to(now + timedelta(minutes=8))
        later = get_range(client, day(0), day(2)).json()["meta"]
    assert later["backgroundJobId"] != first["backgroundJobId"]
    assert later["jobReused"] is False
    assert ProgressiveFetchJob.objects.count() == 2


def test_d_a_different_range_or_webhook_url_is_not_reused(all_reader, auth_client, settings):
    settings.WEBHOOK_ALLOWED_ORIGINS = ["http://127.0.0.1:9999"]
    client = auth_client(all_reader)
    base = get_range(client, day(0), day(2)).json()["meta"]["backgroundJobId"]
    shifted = get_range(client, day(0), day(3)).json()["meta"]["backgroundJobId"]
    hooked = get_range(client, day(0), day(2), webhookUrl="http://127.0.0.1:9999/hook").json()["meta"]
    assert len({base, shifted, hooked["backgroundJobId"]}) == 3
    assert hooked["jobReused"] is False
    assert ProgressiveFetchJob.objects.count() == 3


# --- Concurrency: identical requests at the same time get one job ----------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_requests_get_one_job(make_role, make_user):
    user = make_user(make_role("pf-racer", fiches=("r", "ALL")), email="pf-racer@example.com")
    token = issue_tokens(user).access
    threads_per_race = 3

    for race in range(5):
        start = day(20 + race * 10)
        end = start + timedelta(days=race + 1)
        cache(sale(f"FR{race:03d}", start), covered=[start])
        barrier = threading.Barrier(threads_per_race)
        results: list[dict] = []
        errors: list[BaseException] = []

        def request() -> None:
            try:
                client = APIClient()
                client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
                barrier.wait(timeout=10)
                response = get_range(client, start, end)
                assert response.status_code == 200, response.content
                results.append(response.json()["meta"])
            except BaseException as exc:
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=request) for _ in range(threads_per_race)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        assert not errors, errors
        assert len(results) == threads_per_race
        job_ids = {meta["backgroundJobId"] for meta in results}
        assert len(job_ids) == 1 and None not in job_ids
        assert sorted(meta["jobReused"] for meta in results) == [False] + [True] * (threads_per_race - 1)
        jobs = list(ProgressiveFetchJob.objects.filter(start_date=start, end_date=end))
        assert len(jobs) == 1
        assert str(jobs[0].id) in job_ids
        assert jobs[0].dates_remaining == days(start, race + 2)[1:]


# --- Scenario E: refresh=true -----------------------------------------------------------------------


def test_e_refresh_on_a_covered_range_creates_a_new_job_for_every_date_each_time(all_writer, auth_client, settings):
    settings.REFRESH_MIN_INTERVAL_SECONDS = 0  # the anti-spam guardrail is tested on its own below
    all_days = days(day(0), 3)
    cache(sale("FE001", all_days[0]), sale("FE002", all_days[2]), covered=all_days)
    client = auth_client(all_writer)
    assert get_range(client, all_days[0], all_days[-1]).json()["meta"]["complete"] is True

    first = get_range(client, all_days[0], all_days[-1], refresh="true")
    second = get_range(client, all_days[0], all_days[-1], refresh="true")

    assert first.status_code == second.status_code == 200
    meta = first.json()["meta"]
    assert meta["forceRefresh"] is True
    assert meta["complete"] is False
    assert meta["jobReused"] is False
    assert meta["datesRemaining"] == iso(all_days)
    assert meta["datesAlreadyFetched"] == iso(all_days)  # the coverage, not the job's
    assert [f["fiche_id"] for f in first.json()["fiches"]] == ["FE001", "FE002"]
    assert second.json()["meta"]["jobReused"] is False
    assert second.json()["meta"]["backgroundJobId"] != meta["backgroundJobId"]
    assert ProgressiveFetchJob.objects.count() == 2

    job = ProgressiveFetchJob.objects.get(pk=meta["backgroundJobId"])
    assert job.force_refresh is True
    assert job.dates_remaining == all_days
    assert job.dates_already_fetched == []
    assert job.completed_days == 0 and job.progress == 0
    assert job.total_fiches == 2
    assert job.status == "pending"

    # A refresh job does not stop a plain request on a covered range from being complete.
    after = get_range(client, all_days[0], all_days[-1]).json()["meta"]
    assert after["complete"] is True and after["backgroundJobId"] is None
    assert ProgressiveFetchJob.objects.count() == 2


@pytest.mark.parametrize("url", [RANGE_URL, BY_DATE_URL])
def test_e_refresh_without_fiches_write_is_denied(all_reader, auth_client, url):
    params = (
        {"date": day(0).isoformat()}
        if url == BY_DATE_URL
        else {
            "startDate": day(0).isoformat(),
            "endDate": day(1).isoformat(),
        }
    )
    response = auth_client(all_reader).get(url, {**params, "refresh": "true"})

    error = assert_error(response, 403, "permission_denied")
    assert error["details"]["required"] == "fiches.write"
    assert ProgressiveFetchJob.objects.count() == 0


# --- Validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"endDate": "2026-03-02"}, "validation_error", "startDate"),
        ({"startDate": "2026-03-02"}, "validation_error", "endDate"),
        ({"startDate": "2026-02-01", "endDate": "2026-02-30"}, "validation_error", "endDate"),
        ({"startDate": "2026-02-30", "endDate": "2026-03-03"}, "validation_error", "startDate"),
        ({"startDate": "02/03/2026", "endDate": "2026-03-03"}, "validation_error", "startDate"),
        ({"startDate": "2026-03-05", "endDate": "2026-03-04"}, "invalid_input", None),
        ({"startDate": "2025-01-01", "endDate": "2026-01-02"}, "range_too_long", None),  # 367 days
        ({"startDate": "2026-03-02", "endDate": "2026-03-03", "refresh": "maybe"}, "validation_error", "refresh"),
        (
            {"startDate": "2026-03-02", "endDate": "2026-03-03", "webhookSecret": SECRET},
            "validation_error",
            "webhookSecret",
        ),
    ],
    ids=[
        "no-start",
        "no-end",
        "impossible-end",
        "impossible-start",
        "french-format",
        "end-before-start",
        "367-days",
        "refresh-maybe",
        "secret-without-url",
    ],
)
def test_invalid_range_requests_are_400_with_the_envelope(all_writer, auth_client, params, code, field):
    response = auth_client(all_writer).get(RANGE_URL, params)

    error = assert_error(response, 400, code)
    if field is not None:
        assert field in error["details"]
    if code == "range_too_long":
        assert error["details"] == {"days": 367, "max_days": 366}
    if code == "invalid_input":
        assert error["details"] == {"startDate": "2026-03-05", "endDate": "2026-03-04"}
    assert ProgressiveFetchJob.objects.count() == 0
    assert SECRET not in response.content.decode()


@pytest.mark.parametrize(
    ("url", "params", "field"),
    [
        (RANGE_URL, {"startDate": "2026-2-1", "endDate": "2026-02-03"}, "startDate"),
        (RANGE_URL, {"startDate": "2026-02-01", "endDate": "2026-2-3"}, "endDate"),
        (BY_DATE_URL, {"date": "2026-3-2"}, "date"),
    ],
    ids=["range-start", "range-end", "by-date"],
)
def test_unpadded_dates_are_rejected(all_reader, auth_client, url, params, field):
    response = auth_client(all_reader).get(url, params)

    error = assert_error(response, 400, "validation_error")
    assert field in error["details"]
    assert ProgressiveFetchJob.objects.count() == 0


def test_the_longest_allowed_range_is_accepted(all_reader, auth_client):
    response = get_range(auth_client(all_reader), date(2025, 1, 1), date(2026, 1, 1))  # 366 days
    assert response.status_code == 200, response.content
    assert response.json()["meta"]["totalDays"] == 366
    assert ProgressiveFetchJob.objects.get().total_days == 366


def test_max_range_follows_the_setting(all_reader, auth_client, settings):
    settings.PROGRESSIVE_FETCH_MAX_RANGE_DAYS = 10
    client = auth_client(all_reader)

    error = assert_error(get_range(client, day(0), day(10)), 400, "range_too_long")
    assert error["details"] == {"days": 11, "max_days": 10}
    assert ProgressiveFetchJob.objects.count() == 0

    assert get_range(client, day(0), day(9)).status_code == 200
    assert ProgressiveFetchJob.objects.count() == 1


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://169.254.169.254/", "metadata"),
        ("ftp://x.example/hook", "http and https"),
        ("http://10.1.2.3/hook", "private"),
        ("http://localhost:8000/hook", "internal"),
        ("http://2130706433/hook", "loopback"),
        ("https://user:pw@hooks.example/x", "credentials"),
    ],
)
def test_unsafe_webhook_urls_are_rejected(all_reader, auth_client, url, reason):
    response = get_range(auth_client(all_reader), day(0), day(1), webhookUrl=url, webhookSecret=SECRET)

    error = assert_error(response, 400, "unsafe_webhook_url")
    assert reason in error["details"]["reason"]
    assert ProgressiveFetchJob.objects.count() == 0
    assert SECRET not in response.content.decode()


def test_allowlisted_webhook_origin_is_accepted_and_stored_and_the_secret_never_leaks(
    all_reader, auth_client, settings
):
    settings.WEBHOOK_ALLOWED_ORIGINS = ["http://127.0.0.1:9999"]
    client = auth_client(all_reader)
    hook = "http://127.0.0.1:9999/hooks/pf"

    # Allowlist mode: other origins (even the same host on another port) are refused.
    refused = get_range(client, day(0), day(1), webhookUrl="http://127.0.0.1/hooks/pf")
    assert assert_error(refused, 400, "unsafe_webhook_url")["details"]["reason"]

    response = get_range(client, day(0), day(1), webhookUrl=hook, webhookSecret=SECRET)

    assert response.status_code == 200, response.content
    job = ProgressiveFetchJob.objects.get()
    assert response.json()["meta"]["backgroundJobId"] == str(job.id)
    assert job.webhook_url == hook
    assert job.webhook_secret == SECRET
    detail = client.get(f"{JOBS_URL}/{job.id}")
    poll = client.get(POLL_URL, {"jobId": str(job.id)})
    listing = client.get(JOBS_URL)
    reused = get_range(client, day(0), day(1), webhookUrl=hook, webhookSecret=SECRET)
    for resp in (response, detail, poll, listing, reused):
        assert resp.status_code == 200, resp.content
        text = resp.content.decode()
        assert SECRET not in text
        assert "webhookSecret" not in text and "webhook_secret" not in text
    assert detail.json()["webhookConfigured"] is True
    assert reused.json()["meta"]["backgroundJobId"] == str(job.id)


# --- Authentication and grants ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"{RANGE_URL}?startDate=2026-03-02&endDate=2026-03-03",
        f"{BY_DATE_URL}?date=2026-03-02",
        f"{POLL_URL}?jobId={uuid.UUID(int=1)}",
        JOBS_URL,
        f"{JOBS_URL}/{uuid.UUID(int=1)}",
    ],
)
def test_no_token_is_401_and_no_fiches_grant_is_403(api_client, no_fiches_user, auth_client, path):
    assert_error(api_client.get(path), 401, "not_authenticated")

    error = assert_error(auth_client(no_fiches_user).get(path), 403, "permission_denied")
    assert error["details"]["required"] == "fiches.read"
    assert ProgressiveFetchJob.objects.count() == 0


# --- Scope filtering --------------------------------------------------------------------------------


@pytest.fixture
def scoped_fiches(db):
    """Fiches of two days in two groups and for several CRM users."""
    recording = {
        "call_id": "call-sc-1",
        "recording_url": "https://rec.example/1.mp3",
        "started_at": "2026-03-02T09:00:00Z",
        "duration_seconds": 61,
        "direction": "out",
        "from_number": "0400000000",
        "to_number": "0600000000",
    }
    cache(
        sale("FA001", day(0), groupe="Paris-Est", crm_user_id="u-900"),
        sale("FB002", day(0), groupe="Lyon-2", crm_user_id="u-417", recordings=[recording]),
        sale("FC003", day(0), groupe="Lyon-2", crm_user_id="u-555"),
        sale("FA000", day(1), groupe="Lyon-2", crm_user_id="u-417"),
        sale("FZ009", day(1), groupe="Paris-Est", crm_user_id="u-417"),
        sale("FY008", day(1), groupe="Paris-Est", crm_user_id="u-901"),
        covered=[day(0), day(1)],
    )


@pytest.mark.usefixtures("scoped_fiches")
@pytest.mark.parametrize(
    ("user_fixture", "expected"),
    [
        ("all_reader", ["FA001", "FB002", "FC003", "FA000", "FY008", "FZ009"]),
        ("group_reader", ["FB002", "FC003", "FA000"]),
        ("self_reader", ["FB002", "FA000", "FZ009"]),
    ],
)
def test_range_fiches_are_filtered_by_the_callers_scope_and_ordered(request, auth_client, user_fixture, expected):
    user = request.getfixturevalue(user_fixture)

    body = get_range(auth_client(user), day(0), day(2)).json()

    assert [f["fiche_id"] for f in body["fiches"]] == expected
    assert body["meta"]["totalFiches"] == len(expected)
    keys = [(f["sales_date"], f["fiche_id"]) for f in body["fiches"]]
    assert keys == sorted(keys)
    by_id = {f["fiche_id"]: f for f in body["fiches"]}
    assert by_id["FB002"]["recordings_count"] == 1 and by_id["FB002"]["has_recordings"] is True
    # day(2) is missing: a job was created, and it holds the requester's scope snapshot.
    job = ProgressiveFetchJob.objects.get(pk=body["meta"]["backgroundJobId"])
    assert job.dates_remaining == [day(2)]
    assert job.total_fiches == 6  # the job counts the cache, not the caller's view of it


@pytest.mark.parametrize(
    ("user_fixture", "kind", "groupes", "crm_user_id"),
    [
        ("all_reader", "ALL", [], None),
        ("group_reader", "GROUP", ["Lyon-2"], None),
        ("self_reader", "SELF", ["Lyon-2"], "u-417"),
    ],
)
def test_job_stores_the_requesters_scope_snapshot(request, auth_client, user_fixture, kind, groupes, crm_user_id):
    user = request.getfixturevalue(user_fixture)

    meta = get_range(auth_client(user), day(0), day(1)).json()["meta"]

    job = ProgressiveFetchJob.objects.get(pk=meta["backgroundJobId"])
    assert job.scope_kind == kind
    assert job.scope_groupes == groupes
    assert job.scope_crm_user_id == crm_user_id
    assert job.requested_by == user


# --- by-date -------------------------------------------------------------------------------------------


def test_by_date_behaves_like_a_one_day_range(all_reader, group_reader, auth_client):
    cache(
        sale("FD101", day(0), groupe="Lyon-2"),
        sale("FD102", day(0), groupe="Paris-Est", crm_user_id="u-9"),
        covered=[day(0)],
    )
    client = auth_client(all_reader)

    covered = client.get(BY_DATE_URL, {"date": day(0).isoformat()})
    assert covered.status_code == 200
    body = covered.json()
    assert body["meta"]["startDate"] == body["meta"]["endDate"] == day(0).isoformat()
    assert body["meta"]["totalDays"] == 1
    assert body["meta"]["complete"] is True and body["meta"]["backgroundJobId"] is None
    assert [f["fiche_id"] for f in body["fiches"]] == ["FD101", "FD102"]
    assert body == get_range(client, day(0), day(0)).json()
    assert [f["fiche_id"] for f in auth_client(group_reader).get(BY_DATE_URL, {"date": day(0)}).json()["fiches"]] == [
        "FD101"
    ]
    assert ProgressiveFetchJob.objects.count() == 0

    missing = client.get(BY_DATE_URL, {"date": day(5).isoformat()}).json()
    assert missing["fiches"] == []
    assert missing["meta"]["datesRemaining"] == [day(5).isoformat()]
    job = ProgressiveFetchJob.objects.get()
    assert missing["meta"]["backgroundJobId"] == str(job.id)
    assert job.start_date == job.end_date == day(5) and job.total_days == 1
    # And the 1-day range request reuses it.
    again = get_range(client, day(5), day(5)).json()["meta"]
    assert again["backgroundJobId"] == str(job.id) and again["jobReused"] is True


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "validation_error"),
        ({"date": "2026-02-30"}, "validation_error"),
        ({"date": "2026-03-02", "refresh": "maybe"}, "validation_error"),
        ({"date": "2026-03-02", "webhookUrl": "http://127.0.0.1/hook"}, "unsafe_webhook_url"),
    ],
)
def test_by_date_invalid_input_is_400(all_reader, auth_client, params, code):
    assert_error(auth_client(all_reader).get(BY_DATE_URL, params), 400, code)
    assert ProgressiveFetchJob.objects.count() == 0


def test_by_date_webhook_secret_without_url_is_400(all_reader, auth_client):
    response = auth_client(all_reader).get(BY_DATE_URL, {"date": day(0).isoformat(), "webhookSecret": SECRET})

    error = assert_error(response, 400, "validation_error")
    assert "webhookSecret" in error["details"]
    assert ProgressiveFetchJob.objects.count() == 0


# --- Polling -----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("scoped_fiches")
def test_poll_returns_the_job_and_partial_data_filtered_by_the_callers_scope(
    group_reader, all_reader, self_reader, auth_client
):
    meta = get_range(auth_client(group_reader), day(0), day(2)).json()["meta"]
    job_id = meta["backgroundJobId"]

    response = auth_client(group_reader).get(POLL_URL, {"jobId": job_id})

    assert response.status_code == 200, response.content
    body = response.json()
    assert JOB_KEYS | {"partialData"} <= body.keys()
    job = ProgressiveFetchJob.objects.get(pk=job_id)
    assert body["jobId"] == job_id
    assert body["status"] == "pending"
    assert body["progress"] == 67
    assert body["startDate"] == day(0).isoformat() and body["endDate"] == day(2).isoformat()
    assert body["completedDays"] == 2 and body["totalDays"] == 3
    assert body["totalFiches"] == 6
    assert body["datesCompleted"] == iso([day(0), day(1)])
    assert body["datesRemaining"] == iso([day(2)])
    assert body["datesFailed"] == []
    assert body["forceRefresh"] is False
    assert body["error"] is None
    assert body["completedAt"] is None
    assert datetime.fromisoformat(body["createdAt"]) == job.created_at
    assert [f["fiche_id"] for f in body["partialData"]] == ["FB002", "FC003", "FA000"]

    # An ALL-scope user may poll someone else's job and sees the partial data of *their* scope.
    as_admin = auth_client(all_reader).get(POLL_URL, {"jobId": job_id})
    assert as_admin.status_code == 200
    assert [f["fiche_id"] for f in as_admin.json()["partialData"]] == [
        "FA001",
        "FB002",
        "FC003",
        "FA000",
        "FY008",
        "FZ009",
    ]
    # A non-ALL user may not.
    error = assert_error(auth_client(self_reader).get(POLL_URL, {"jobId": job_id}), 403, "permission_denied")
    assert error["details"]["jobId"] == job_id


def test_poll_unknown_and_malformed_job_ids(all_reader, auth_client):
    client = auth_client(all_reader)
    unknown = str(uuid.uuid4())

    error = assert_error(client.get(POLL_URL, {"jobId": unknown}), 404, "job_not_found")
    assert error["details"] == {"jobId": unknown}
    assert "jobId" in assert_error(client.get(POLL_URL, {"jobId": "not-a-uuid"}), 400, "validation_error")["details"]
    assert "jobId" in assert_error(client.get(POLL_URL), 400, "validation_error")["details"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"status": "processing", "progress": 100, "dates_remaining": []}, "complete"),
        ({"status": "processing", "progress": 100, "dates_remaining": [], "dates_failed": [D]}, "failed"),
        ({"status": "processing", "progress": 50, "dates_remaining": [day(1)]}, "processing"),
        ({"status": "pending", "progress": 0}, "pending"),
        ({"status": "complete", "progress": 100, "dates_remaining": []}, "complete"),
        ({"status": "failed", "progress": 100, "dates_remaining": [], "dates_failed": [D]}, "failed"),
    ],
)
def test_poll_detail_and_list_report_the_derived_status(all_reader, auth_client, fields, expected):
    job = make_job(all_reader, D, 2, dates_already_fetched=[D] if "dates_failed" not in fields else [], **fields)
    client = auth_client(all_reader)

    poll = client.get(POLL_URL, {"jobId": str(job.id)}).json()
    detail = client.get(f"{JOBS_URL}/{job.id}").json()
    [listed] = client.get(JOBS_URL).json()["results"]

    assert poll["status"] == detail["status"] == listed["status"] == expected
    job.refresh_from_db()
    assert job.status == fields["status"]  # derived on read, never written


# --- Job detail ---------------------------------------------------------------------------------------


def test_job_detail_and_its_visibility(group_reader, self_reader, all_reader, auth_client):
    meta = get_range(auth_client(group_reader), day(0), day(1)).json()["meta"]
    job_id = meta["backgroundJobId"]

    response = auth_client(group_reader).get(f"{JOBS_URL}/{job_id}")

    assert response.status_code == 200, response.content
    body = response.json()
    assert JOB_KEYS | {"webhookDeliveries", "webhookConfigured"} <= body.keys()
    assert body["jobId"] == job_id
    assert body["webhookConfigured"] is False
    assert body["webhookDeliveries"] == []
    assert body["datesRemaining"] == iso([day(0), day(1)])
    assert "partialData" not in body

    assert auth_client(all_reader).get(f"{JOBS_URL}/{job_id}").json()["jobId"] == job_id
    error = assert_error(auth_client(self_reader).get(f"{JOBS_URL}/{job_id}"), 403, "permission_denied")
    assert error["details"]["jobId"] == job_id
    unknown = uuid.uuid4()
    assert_error(auth_client(all_reader).get(f"{JOBS_URL}/{unknown}"), 404, "job_not_found")


# --- Job list -------------------------------------------------------------------------------------------


def test_job_list_paginates_filters_and_hides_other_users_jobs(group_reader, self_reader, all_reader, auth_client):
    now = timezone.now()
    mine = [
        make_job(group_reader, day(0), 2, status="complete", progress=100, dates_remaining=[]),
        make_job(group_reader, day(5), 3, status="pending"),
        make_job(group_reader, day(10), 1, status="complete", progress=100, dates_remaining=[]),
    ]
    theirs = make_job(self_reader, day(20), 2, status="complete", progress=100, dates_remaining=[])
    # Creation times: mine[0] oldest, then theirs, mine[1], mine[2] newest.
    for minutes_ago, job in ((40, mine[0]), (30, theirs), (20, mine[1]), (10, mine[2])):
        ProgressiveFetchJob.objects.filter(pk=job.pk).update(created_at=now - timedelta(minutes=minutes_ago))
    client = auth_client(group_reader)

    body = client.get(JOBS_URL).json()
    assert body["count"] == 3
    assert [j["jobId"] for j in body["results"]] == [str(mine[2].id), str(mine[1].id), str(mine[0].id)]
    assert all(j.keys() >= JOB_KEYS for j in body["results"])

    page1 = client.get(JOBS_URL, {"limit": 2, "offset": 0}).json()
    page2 = client.get(JOBS_URL, {"limit": 2, "offset": 2}).json()
    assert page1["count"] == page2["count"] == 3
    assert [j["jobId"] for j in page1["results"]] == [str(mine[2].id), str(mine[1].id)]
    assert [j["jobId"] for j in page2["results"]] == [str(mine[0].id)]
    assert page1["next"] is not None and page2["next"] is None

    complete = client.get(JOBS_URL, {"status": "complete"}).json()
    assert complete["count"] == 2
    assert [j["jobId"] for j in complete["results"]] == [str(mine[2].id), str(mine[0].id)]
    assert client.get(JOBS_URL, {"status": "pending"}).json()["count"] == 1

    everything = auth_client(all_reader).get(JOBS_URL).json()
    assert everything["count"] == 4
    assert [j["jobId"] for j in everything["results"]] == [
        str(mine[2].id),
        str(mine[1].id),
        str(theirs.id),
        str(mine[0].id),
    ]
    assert [j["jobId"] for j in auth_client(self_reader).get(JOBS_URL).json()["results"]] == [str(theirs.id)]

    assert "status" in assert_error(client.get(JOBS_URL, {"status": "bogus"}), 400, "validation_error")["details"]


def test_refresh_guardrails_cap_the_range_and_throttle_repeats(all_writer, auth_client, settings):
    settings.REFRESH_MAX_RANGE_DAYS = 5
    settings.REFRESH_MIN_INTERVAL_SECONDS = 60
    client = auth_client(all_writer)
    too_long = get_range(client, day(0), day(5), refresh="true")
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "refresh_range_too_long"
    assert too_long.json()["error"]["details"] == {"days": 6, "max_days": 5}

    assert get_range(client, day(0), day(2), refresh="true").status_code == 200
    again = get_range(client, day(0), day(2), refresh="true")
    assert again.status_code == 429
    assert again.json()["error"]["code"] == "refresh_too_frequent"
    assert 1 <= int(again["Retry-After"]) <= 60
    assert again.json()["error"]["details"]["retry_after"] == int(again["Retry-After"])
    # Another range, or a plain (non-refresh) request, is not throttled.
    assert get_range(client, day(0), day(1), refresh="true").status_code == 200
    assert get_range(client, day(0), day(2)).status_code == 200
    assert ProgressiveFetchJob.objects.filter(force_refresh=True).count() == 2
