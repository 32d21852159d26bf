"""Webhooks of progressive fetch jobs at the service level (no worker): the updater stores a progress
delivery every ``PROGRESSIVE_FETCH_WEBHOOK_FREQUENCY`` processed days and exactly one terminal
delivery; each delivery holds the job's state at event time and partial fiches filtered by the
scope snapshot stored on the job (not the requester's live scope)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from fiches.models import ProgressiveFetchJob
from fiches.notifications import JOB_WEBHOOK_SOURCE
from fiches.services import jobs
from fiches.services.cache import cache_fiche_sales_summaries
from realtime.models import WebhookDelivery
from realtime.webhooks import attempt_delivery

from .conftest import days, sale

pytestmark = pytest.mark.django_db

FIRST = date(2026, 3, 2)
DAYS = days(FIRST, 5)
WHSEC = "whsec_" + base64.b64encode(b"job-webhooks-secret-0123456789ab").decode()
PROGRESS, COMPLETE, FAILED = (jobs.EVENT_PROGRESS, jobs.EVENT_COMPLETE, jobs.EVENT_FAILED)


@pytest.fixture(autouse=True)
def _frequency(settings):
    settings.PROGRESSIVE_FETCH_WEBHOOK_FREQUENCY = 2
    settings.WEBHOOK_PARTIAL_DATA_LIMIT = 500


@pytest.fixture
def lyon(make_role, make_user):
    return make_user(
        make_role("lyon-reader", fiches=("r", "GROUP")),
        email="lyon@example.com",
        groupes=["Lyon-2"],
        crm_user_id="u-417",
    )


def cache_day(day: date, *specs: tuple[str, str, str]) -> None:
    """Cache fiches ``(fiche_id, groupe, crm_user_id)`` on ``day`` (as a day worker would)."""
    cache_fiche_sales_summaries(
        [sale(fid, day, groupe=groupe, crm_user_id=crm, prenom=f"P{fid}") for fid, groupe, crm in specs],
        revalidated_at=datetime(2026, 3, 10, tzinfo=UTC),
        covered_dates=[day],
    )


def default_fiches(day: date) -> tuple[tuple[str, str, str], ...]:
    n = day.day
    return ((f"L{n:02d}", "Lyon-2", "u-417"), (f"P{n:02d}", "Paris-Est", "u-999"))


def request_job(user, receiver, *, n: int = 5, secret: str | None = WHSEC) -> ProgressiveFetchJob:
    meta = jobs.progressive_fetch_request(
        user=user, start=DAYS[0], end=DAYS[n - 1], webhook_url=receiver.url("/jobs"), webhook_secret=secret
    ).meta
    job_id = meta["backgroundJobId"]
    assert jobs.progressive_fetch_dispatch(job_id=job_id) == DAYS[:n]
    return ProgressiveFetchJob.objects.get(pk=job_id)


def deliveries(job) -> list[WebhookDelivery]:
    return list(WebhookDelivery.objects.filter(source=JOB_WEBHOOK_SOURCE, source_id=str(job.pk)).order_by("id"))


def body_data(delivery) -> dict:
    return json.loads(delivery.payload)["data"]


def run_days(job, *, fiches=default_fiches, outcomes=None) -> list[list[str]]:
    """Cache each day's fiches and apply its outcome; the events of the deliveries after each day."""
    seen = []
    for i, day in enumerate(DAYS[: job.total_days]):
        ok = True if outcomes is None else outcomes[i]
        if ok:
            cache_day(day, *fiches(day))
        jobs.progressive_fetch_apply_outcome(job_id=str(job.id), day=day, ok=ok, error=None if ok else "CRM 503")
        seen.append([d.event for d in deliveries(job)])
    return seen


# --- Frequency and exactly one terminal delivery ---------------------------------------------------------


def test_progress_deliveries_every_two_days_and_one_terminal_delivery(lyon, receiver):
    job = request_job(lyon, receiver)
    seen = run_days(job)

    assert seen == [
        [],
        [PROGRESS],
        [PROGRESS],
        [PROGRESS, PROGRESS],
        [PROGRESS, PROGRESS, COMPLETE],
    ]
    job.refresh_from_db()
    assert job.status == "complete"

    # Duplicates, the safety net and the operator action add nothing.
    for day in DAYS:
        jobs.progressive_fetch_apply_outcome(job_id=str(job.id), day=day, ok=True)
    jobs.progressive_fetch_apply_outcome(job_id=str(job.id), day=DAYS[0], ok=False, error="late failure")
    assert jobs.progressive_fetch_finalize_if_done(job_id=str(job.id)) is False
    assert jobs.progressive_fetch_finalize_now(job_id=str(job.id)) is False
    assert [d.event for d in deliveries(job)] == [PROGRESS, PROGRESS, COMPLETE]


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (4, [[], [PROGRESS], [PROGRESS], [PROGRESS, COMPLETE]]),  # the last day: the terminal delivery only
        (2, [[], [COMPLETE]]),
        (1, [[COMPLETE]]),
    ],
)
def test_the_last_day_sends_only_the_terminal_delivery(n, expected, lyon, receiver):
    job = request_job(lyon, receiver, n=n)
    assert run_days(job) == expected


def test_each_delivery_holds_the_job_state_at_event_time(lyon, receiver, settings):
    settings.API_BASE_URL = "https://api.callcentre.test"
    job = request_job(lyon, receiver)
    run_days(job)
    day2, day4, terminal = deliveries(job)

    data = body_data(day2)
    assert (data["status"], data["progress"], data["completedDays"], data["totalDays"]) == ("processing", 40, 2, 5)
    assert data["datesCompleted"] == [d.isoformat() for d in DAYS[:2]]
    assert data["datesRemaining"] == [d.isoformat() for d in DAYS[2:]]
    assert data["datesFailed"] == []
    assert [p["fiche_id"] for p in data["partialData"]] == ["L02", "L03"]  # visible fiches cached so far

    data = body_data(day4)
    assert (data["progress"], data["completedDays"]) == (80, 4)
    assert data["datesRemaining"] == [DAYS[4].isoformat()]

    data = body_data(terminal)
    assert json.loads(terminal.payload)["type"] == COMPLETE
    assert (data["status"], data["progress"], data["completedDays"], data["datesRemaining"]) == ("complete", 100, 5, [])
    assert data["jobId"] == str(job.id)
    assert data["dataUrl"] == (
        "https://api.callcentre.test/api/fiches/status/by-date-range?startDate=2026-03-02&endDate=2026-03-06"
    )
    assert data["totalFiches"] == 10


def test_a_failed_day_ends_with_one_failed_delivery(lyon, receiver):
    job = request_job(lyon, receiver, n=3)
    seen = run_days(job, outcomes=[True, False, True])
    assert seen[-1] == [PROGRESS, FAILED]
    data = body_data(deliveries(job)[-1])
    assert data["status"] == "failed"
    assert data["datesFailed"] == [DAYS[1].isoformat()]
    assert "CRM 503" in data["error"]


def test_no_webhook_url_no_deliveries(lyon):
    meta = jobs.progressive_fetch_request(user=lyon, start=DAYS[0], end=DAYS[2]).meta
    job = ProgressiveFetchJob.objects.get(pk=meta["backgroundJobId"])
    jobs.progressive_fetch_dispatch(job_id=str(job.id))
    run_days(job)
    assert deliveries(job) == []


def test_a_410_stops_the_remaining_job_webhooks(lyon, receiver):
    job = request_job(lyon, receiver)
    cache_day(DAYS[0], *default_fiches(DAYS[0]))
    jobs.progressive_fetch_apply_outcome(job_id=str(job.id), day=DAYS[0], ok=True)
    cache_day(DAYS[1], *default_fiches(DAYS[1]))
    jobs.progressive_fetch_apply_outcome(job_id=str(job.id), day=DAYS[1], ok=True)
    (first,) = deliveries(job)
    receiver.respond(410)
    assert attempt_delivery(delivery_id=first.pk).status == "failed"

    for day in DAYS[2:]:
        jobs.progressive_fetch_apply_outcome(job_id=str(job.id), day=day, ok=True)
    job.refresh_from_db()
    assert job.status == "complete" and job.webhooks_disabled is True
    assert [d.event for d in deliveries(job)] == [PROGRESS]


# --- Partial data follows the scope snapshot -------------------------------------------------------------------


def test_partial_data_is_filtered_by_the_scope_stored_on_the_job(lyon, receiver):
    job = request_job(lyon, receiver)
    assert (job.scope_kind, job.scope_groupes) == ("GROUP", ["Lyon-2"])
    lyon.groupes = ["Paris-Est"]  # the requester's scope changes afterwards
    lyon.save()

    run_days(job)
    terminal = deliveries(job)[-1]
    data = body_data(terminal)
    assert {p["groupe"] for p in data["partialData"]} == {"Lyon-2"}
    assert [p["fiche_id"] for p in data["partialData"]] == ["L02", "L03", "L04", "L05", "L06"]
    assert data["partialData"][0] == {
        "fiche_id": "L02",
        "sales_date": "2026-03-02",
        "prospect_name": "PL02 Martin",
        "groupe": "Lyon-2",
        "recordings_count": 0,
    }
    assert data["partialDataTruncated"] is False

    # What the receiver gets: the same, signed.
    assert attempt_delivery(delivery_id=terminal.pk).status == "success"
    (request,) = receiver.at("/jobs")
    received = Webhook(WHSEC).verify(request.body, request.headers)
    assert {p["groupe"] for p in received["data"]["partialData"]} == {"Lyon-2"}
    assert "Paris-Est" not in request.body.decode()


@pytest.mark.parametrize(
    ("role", "fields", "expected"),
    [
        (("r", "ALL"), {}, ["L02", "P02", "L03", "P03"]),
        (("r", "SELF"), {"crm_user_id": "u-999"}, ["P02", "P03"]),
        (("r", "GROUP"), {"groupes": ["Paris-Est", "Lyon-2"]}, ["L02", "P02", "L03", "P03"]),
        (("r", "GROUP"), {"groupes": []}, []),
        (("r", "SELF"), {}, []),
    ],
)
def test_partial_data_for_each_scope_kind(role, fields, expected, make_role, make_user, receiver):
    user = make_user(make_role("scoped", fiches=role), email="scoped@example.com", **fields)
    job = request_job(user, receiver, n=2)
    run_days(job)
    assert [p["fiche_id"] for p in body_data(deliveries(job)[-1])["partialData"]] == expected


def test_a_user_without_fiches_read_gets_no_partial_data(make_role, make_user, receiver):
    user = make_user(
        make_role("recordings-only", recordings=("r", "ALL")),
        email="rec@example.com",
        groupes=["Lyon-2"],
        crm_user_id="u-417",
    )
    job = request_job(user, receiver, n=2)
    assert job.scope_kind == "NONE"
    run_days(job)
    assert body_data(deliveries(job)[-1])["partialData"] == []


def test_partial_data_is_capped_and_flagged_truncated(lyon, receiver, settings):
    settings.WEBHOOK_PARTIAL_DATA_LIMIT = 3
    job = request_job(lyon, receiver)
    run_days(job)  # 5 Lyon-2 fiches visible in the end
    terminal = deliveries(job)[-1]
    data = body_data(terminal)
    assert [p["fiche_id"] for p in data["partialData"]] == ["L02", "L03", "L04"]
    assert data["partialDataTruncated"] is True

    # At day 2 only 2 were visible: not truncated.
    assert body_data(deliveries(job)[0])["partialDataTruncated"] is False


def test_exactly_the_limit_is_not_truncated(lyon, receiver, settings):
    settings.WEBHOOK_PARTIAL_DATA_LIMIT = 3
    job = request_job(lyon, receiver, n=3)
    run_days(job)
    data = body_data(deliveries(job)[-1])
    assert len(data["partialData"]) == 3 and data["partialDataTruncated"] is False
