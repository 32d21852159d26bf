"""The progressive fetch job updater (fiches.services.jobs): dispatch, per-day outcomes, idempotency
under duplicates / reordering / concurrent updaters, exactly-once finalization, progress webhooks
and the operator's finalize-now.

Published realtime events and webhook requests are observed through their after-commit log lines
(``realtime_event`` on ``realtime.publisher``, ``webhook_delivery_created`` on ``realtime.webhooks``).
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import UTC, date, datetime, timedelta

import pytest

from fiches.models import ProgressiveFetchJob
from fiches.services import jobs
from fiches.services.cache import cache_fiche_sales_summaries
from tests.support import make_job, run_threads, sale

REVALIDATED_AT = datetime(2026, 4, 20, 8, 0, tzinfo=UTC)
START = date(2026, 4, 6)
HOOK = "https://hooks.example/progressive"
TIMESTAMPS = ("updated_at", "created_at", "last_progress_at", "completed_at", "started_at", "dispatched_at")


# --- Helpers ---------------------------------------------------------------------------------------


def days(start: date, n: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(n)]


def cache_day(on: date, count: int, *, prefix: str = "F") -> None:
    """Cache ``count`` fiches on ``on`` (an empty list still marks the date fetched)."""
    sales = [sale(f"{prefix}{on:%m%d}{i:03d}", on) for i in range(count)]
    cache_fiche_sales_summaries(sales, revalidated_at=REVALIDATED_AT, covered_dates=[on])


def row(job_id, *, exclude=("updated_at",)) -> dict:
    values = ProgressiveFetchJob.objects.filter(pk=job_id).values().get()
    return {k: v for k, v in values.items() if k not in exclude}


def comparable(job_id) -> dict:
    """The row without identity and clock values (to compare two jobs over the same range)."""
    return row(job_id, exclude=("id", *TIMESTAMPS))


def apply(job, on: date, ok: bool = True, error: str | None = None) -> jobs.UpdateResult:
    return jobs.progressive_fetch_apply_outcome(job_id=str(job.id), day=on, ok=ok, error=error)


def events(caplog, message: str, event: str | None = None) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.getMessage() == message and (event is None or getattr(r, "event", None) == event)
    ]


@pytest.fixture
def user(make_role, make_user):
    return make_user(make_role("pf-updater", fiches=("r", "ALL")), email="pf-updater@example.com")


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO, logger="realtime.publisher")
    caplog.set_level(logging.INFO, logger="realtime.webhooks")
    return caplog


# --- Dispatch ------------------------------------------------------------------------------------------


def test_dispatch_returns_the_dates_once_and_redrive_returns_what_remains(user):
    all_days = days(START, 4)
    meta = jobs.progressive_fetch_request(user=user, start=all_days[0], end=all_days[-1]).meta
    job_id = meta["backgroundJobId"]
    assert ProgressiveFetchJob.objects.get(pk=job_id).status == "pending"

    assert jobs.progressive_fetch_dispatch(job_id=job_id) == all_days

    job = ProgressiveFetchJob.objects.get(pk=job_id)
    assert job.status == "processing"
    assert job.started_at is not None and job.dispatched_at is not None
    started_at = job.started_at
    assert jobs.progressive_fetch_dispatch(job_id=job_id) == []
    assert jobs.progressive_fetch_dispatch(job_id=job_id, redrive=True) == all_days

    cache_day(all_days[1], 2)
    jobs.progressive_fetch_apply_outcome(job_id=job_id, day=all_days[1], ok=True)
    assert jobs.progressive_fetch_dispatch(job_id=job_id, redrive=True) == [all_days[0], *all_days[2:]]
    assert jobs.progressive_fetch_dispatch(job_id=job_id) == []
    job.refresh_from_db()
    assert job.started_at == started_at  # a redrive does not restart the job
    assert job.status == "processing"


def test_dispatch_of_a_finished_job_or_an_unknown_id_returns_nothing(user):
    done = make_job(user, START, 2, status="complete", progress=100, dates_remaining=[])
    assert jobs.progressive_fetch_dispatch(job_id=str(done.id)) == []
    assert jobs.progressive_fetch_dispatch(job_id=str(done.id), redrive=True) == []
    done.refresh_from_db()
    assert done.status == "complete" and done.dispatched_at is None
    assert jobs.progressive_fetch_dispatch(job_id="00000000-0000-0000-0000-000000000000") == []


def test_dispatch_of_a_job_with_nothing_remaining_finalizes_it(user, logs, django_capture_on_commit_callbacks):
    job = make_job(
        user, START, 2, dates_remaining=[], dates_already_fetched=days(START, 2), progress=100, completed_days=2
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.progressive_fetch_dispatch(job_id=str(job.id)) == []
    job.refresh_from_db()
    assert job.status == "complete" and job.completed_at is not None and job.progress == 100
    assert len(events(logs, "realtime_event", jobs.EVENT_COMPLETE)) == 1


# --- Applying outcomes ---------------------------------------------------------------------------------


def test_outcomes_move_dates_progress_and_fiche_counts(user):
    d1, d2, d3, d4 = days(START, 4)
    job_id = jobs.progressive_fetch_request(user=user, start=d1, end=d4).meta["backgroundJobId"]
    job = ProgressiveFetchJob.objects.get(pk=job_id)
    jobs.progressive_fetch_dispatch(job_id=job_id)
    # d3's fiches are already in the cache when d1 completes: d1's outcome must not count them.
    cache_day(d3, 2)
    cache_day(d1, 3)

    result = apply(job, d1)
    job.refresh_from_db()
    assert result.changed is True and result.finalized is False
    assert result.processed_days == 1 and result.remaining == [d2.isoformat(), d3.isoformat(), d4.isoformat()]
    assert job.dates_already_fetched == [d1]
    assert job.dates_remaining == [d2, d3, d4]
    assert job.progress == 25 and job.completed_days == 1
    assert job.total_fiches == 3
    assert job.status == "processing"

    result = apply(job, d2, ok=False, error="CRM timed out after 30s")
    job.refresh_from_db()
    assert result.changed is True
    assert job.dates_failed == [d2]
    assert job.dates_remaining == [d3, d4]
    assert d2.isoformat() in job.error and "CRM timed out after 30s" in job.error
    assert job.status == "processing"
    assert job.progress == 50 and job.completed_days == 1
    assert job.total_fiches == 3

    apply(job, d3)
    job.refresh_from_db()
    assert job.dates_already_fetched == [d1, d3]
    assert job.total_fiches == 5
    assert job.progress == 75 and job.completed_days == 2

    # The failed date is retried and succeeds (an empty day): it moves to completed.
    cache_day(d2, 0)
    result = apply(job, d2)
    job.refresh_from_db()
    assert result.changed is True
    assert job.dates_failed == []
    assert job.dates_already_fetched == [d1, d2, d3]
    assert job.progress == 75 and job.completed_days == 3
    assert job.total_fiches == 5

    # A failure after a success does not undo it.
    before = row(job_id)
    result = apply(job, d1, ok=False, error="late duplicate failure")
    assert result.changed is False
    assert row(job_id) == before

    cache_day(d4, 1)
    result = apply(job, d4)
    job.refresh_from_db()
    assert result.finalized is True and result.status == "complete"
    assert job.status == "complete"
    assert job.dates_already_fetched == [d1, d2, d3, d4]
    assert job.dates_remaining == [] and job.dates_failed == []
    assert job.progress == 100 and job.completed_days == 4
    assert job.total_fiches == 6
    assert job.completed_at is not None


@pytest.mark.parametrize("n_days", [3, 6, 7])
def test_progress_is_the_rounded_processed_share(user, n_days):
    all_days = days(START, n_days)
    job = make_job(user, START, n_days, status="processing")
    seen = []
    for i, on in enumerate(all_days[:-1]):
        apply(job, on, ok=i % 2 == 0, error="boom")
        job.refresh_from_db()
        seen.append(job.progress)
    assert seen == [round((i + 1) / n_days * 100) for i in range(n_days - 1)]


def test_total_fiches_moves_by_the_dates_delta_on_a_refresh_job(user):
    d1, d2, d3 = days(START, 3)
    cache_day(d1, 2)
    cache_day(d2, 1)
    job_id = jobs.progressive_fetch_request(user=user, start=d1, end=d3, refresh=True).meta["backgroundJobId"]
    job = ProgressiveFetchJob.objects.get(pk=job_id)
    assert job.total_fiches == 3 and job.dates_remaining == [d1, d2, d3]

    cache_day(d1, 4)  # the refetch found two more fiches on d1
    apply(job, d1)
    job.refresh_from_db()
    assert job.total_fiches == 5
    apply(job, d2)  # unchanged day
    job.refresh_from_db()
    assert job.total_fiches == 5
    cache_day(d3, 2)
    apply(job, d3)
    job.refresh_from_db()
    assert job.total_fiches == 7 and job.status == "complete"


def test_an_outcome_for_a_date_outside_the_range_changes_nothing(user):
    job = make_job(user, START, 2, status="processing")
    before = row(job.id)
    result = apply(job, START - timedelta(days=1))
    assert result.changed is False and result.finalized is False
    assert row(job.id) == before


# --- Idempotency and order -----------------------------------------------------------------------------


@pytest.mark.parametrize("ok", [True, False])
def test_the_same_outcome_three_times_leaves_the_row_of_once(user, ok):
    all_days = days(START, 3)
    cache_day(all_days[0], 2)
    job = make_job(user, START, 3, status="processing")

    first = apply(job, all_days[0], ok=ok, error="CRM 502")
    once = row(job.id)
    again = [apply(job, all_days[0], ok=ok, error="CRM 502") for _ in range(2)]

    assert first.changed is True
    assert [r.changed for r in again] == [False, False]
    assert row(job.id) == once
    assert once["progress"] == 33 and once["dates_remaining"] == all_days[1:]


def _play(job, outcomes) -> None:
    for on, ok in outcomes:
        apply(job, on, ok=ok, error=None if ok else "CRM 503")


@pytest.mark.parametrize("failing", [None, 2])
def test_out_of_order_and_duplicated_outcomes_give_the_row_of_in_order(user, failing):
    all_days = days(START, 5)
    for i, on in enumerate(all_days):
        cache_day(on, i)
    in_order = [(on, i != failing) for i, on in enumerate(all_days)]
    shuffled = list(reversed(in_order))
    shuffled = [
        shuffled[1],
        shuffled[0],
        shuffled[1],
        shuffled[3],
        shuffled[2],
        shuffled[2],
        shuffled[4],
        shuffled[3],
        shuffled[0],
    ]
    assert {d for d, _ in shuffled} == set(all_days)
    reference = make_job(user, START, 5, status="processing")
    other = make_job(user, START, 5, status="processing")

    _play(reference, in_order)
    _play(other, shuffled)

    assert comparable(other.id) == comparable(reference.id)
    final = comparable(reference.id)
    assert final["status"] == ("complete" if failing is None else "failed")
    assert final["progress"] == 100 and final["dates_remaining"] == []
    assert final["total_fiches"] == sum(range(5)) - (failing or 0)
    assert final["dates_failed"] == ([] if failing is None else [all_days[failing]])


# --- Finalization -----------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", [None, 1])
def test_finalization_happens_exactly_once(user, logs, django_capture_on_commit_callbacks, failing):
    all_days = days(START, 3)
    for on in all_days:
        cache_day(on, 1)
    job = make_job(user, START, 3, webhook_url=HOOK)
    job_id = str(job.id)
    outcomes = [(on, i != failing) for i, on in enumerate(all_days)]
    terminal = jobs.EVENT_COMPLETE if failing is None else jobs.EVENT_FAILED
    other_terminal = jobs.EVENT_FAILED if failing is None else jobs.EVENT_COMPLETE

    with django_capture_on_commit_callbacks(execute=True):
        jobs.progressive_fetch_dispatch(job_id=job_id)
        results = [apply(job, on, ok=ok, error="CRM down") for on, ok in outcomes]
        job.refresh_from_db()
        first_completed_at = job.completed_at
        duplicates = [apply(job, on, ok=ok, error="CRM down") for on, ok in outcomes * 2]
        assert jobs.progressive_fetch_finalize_if_done(job_id=job_id) is False
        assert jobs.progressive_fetch_finalize_now(job_id=job_id) is False

    assert [r.finalized for r in results] == [False, False, True]
    assert not any(r.finalized or r.changed for r in duplicates)
    job.refresh_from_db()
    assert job.completed_at == first_completed_at is not None
    assert job.status == ("complete" if failing is None else "failed")
    assert job.progress == 100 and job.dates_remaining == []
    assert len(events(logs, "realtime_event", terminal)) == 1
    assert events(logs, "realtime_event", other_terminal) == []
    assert len(events(logs, "realtime_event", jobs.EVENT_PROGRESS)) == 3
    assert len(events(logs, "webhook_delivery_created", terminal)) == 1
    assert all(r.job_id == job_id for r in events(logs, "realtime_event"))


def test_a_done_but_unfinalized_job_is_finalized_by_a_duplicate_outcome(user, logs, django_capture_on_commit_callbacks):
    all_days = days(START, 2)
    job = make_job(
        user,
        START,
        2,
        status="processing",
        progress=100,
        dates_remaining=[],
        dates_already_fetched=all_days,
        completed_days=2,
    )
    with django_capture_on_commit_callbacks(execute=True):
        result = apply(job, all_days[0])
        assert jobs.progressive_fetch_finalize_if_done(job_id=str(job.id)) is False
    assert result.changed is False and result.finalized is True and result.status == "complete"
    job.refresh_from_db()
    assert job.status == "complete" and job.completed_at is not None
    assert len(events(logs, "realtime_event", jobs.EVENT_COMPLETE)) == 1


def test_finalize_if_done_is_the_chords_safety_net(user, logs, django_capture_on_commit_callbacks):
    all_days = days(START, 2)
    pending = make_job(user, START, 2, status="processing")
    done = make_job(
        user,
        START,
        2,
        status="processing",
        progress=100,
        dates_remaining=[],
        dates_already_fetched=[all_days[0]],
        dates_failed=[all_days[1]],
        completed_days=1,
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.progressive_fetch_finalize_if_done(job_id=str(pending.id)) is False
        assert jobs.progressive_fetch_finalize_if_done(job_id=str(done.id)) is True
        assert jobs.progressive_fetch_finalize_if_done(job_id=str(done.id)) is False
    pending.refresh_from_db()
    done.refresh_from_db()
    assert pending.status == "processing" and pending.completed_at is None
    assert done.status == "failed" and done.completed_at is not None
    assert [r.job_id for r in events(logs, "realtime_event", jobs.EVENT_FAILED)] == [str(done.id)]


def test_finalize_now_fails_the_remaining_dates_and_ends_the_job(user, logs, django_capture_on_commit_callbacks):
    d1, d2, d3, d4 = days(START, 4)
    cache_day(d1, 2)
    job = make_job(user, START, 4)
    job_id = str(job.id)
    with django_capture_on_commit_callbacks(execute=True):
        jobs.progressive_fetch_dispatch(job_id=job_id)
        apply(job, d1)
        apply(job, d2, ok=False, error="CRM 500")
        assert jobs.progressive_fetch_finalize_now(job_id=job_id, reason="stuck for an hour") is True
        assert jobs.progressive_fetch_finalize_now(job_id=job_id) is False
        assert apply(job, d3).changed is False  # a late outcome cannot reopen it

    job.refresh_from_db()
    assert job.status == "failed"
    assert job.dates_failed == [d2, d3, d4]
    assert job.dates_already_fetched == [d1]
    assert job.dates_remaining == []
    assert job.progress == 100
    assert "2 date(s)" in job.error and "stuck for an hour" in job.error
    assert job.completed_at is not None
    assert job.total_fiches == 2
    assert len(events(logs, "realtime_event", jobs.EVENT_FAILED)) == 1
    assert events(logs, "realtime_event", jobs.EVENT_COMPLETE) == []


def test_finalize_now_of_a_never_dispatched_job(user):
    job = make_job(user, START, 3)
    assert jobs.progressive_fetch_finalize_now(job_id=str(job.id)) is True
    job.refresh_from_db()
    assert job.status == "failed" and job.dates_failed == days(START, 3) and job.dates_remaining == []
    assert job.error and "3 date(s)" in job.error


# --- Progress webhooks --------------------------------------------------------------------------------


@pytest.mark.parametrize(("webhook_url", "disabled"), [(HOOK, False), (None, False), (HOOK, True)])
def test_progress_webhooks_follow_the_frequency(
    user, logs, settings, django_capture_on_commit_callbacks, webhook_url, disabled
):
    settings.PROGRESSIVE_FETCH_WEBHOOK_FREQUENCY = 2
    all_days = days(START, 5)
    job = make_job(user, START, 5, status="processing", webhook_url=webhook_url, webhooks_disabled=disabled)
    seen = []
    for on in all_days:
        with django_capture_on_commit_callbacks(execute=True):
            apply(job, on)
        seen.append([r.event for r in events(logs, "webhook_delivery_created")])

    if webhook_url is None or disabled:
        assert seen == [[]] * 5
        return
    progress, complete = jobs.EVENT_PROGRESS, jobs.EVENT_COMPLETE
    assert seen == [
        [],
        [progress],
        [progress],
        [progress, progress],
        [progress, progress, complete],
    ]
    assert all(r.source_id == str(job.id) for r in events(logs, "webhook_delivery_created"))


# --- Concurrent updaters ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("failing", [None, 3])
def test_racing_updaters_finalize_once_and_leave_the_sequential_row(make_role, make_user, caplog, failing):
    caplog.set_level(logging.INFO, logger="realtime.publisher")
    user = make_user(make_role("pf-race", fiches=("r", "ALL")), email="pf-race@example.com")
    all_days = days(START, 6)
    for i, on in enumerate(all_days):
        cache_day(on, i + 1)
    outcomes = [(on, i != failing) for i, on in enumerate(all_days)]
    final = outcomes[-1]
    terminal = jobs.EVENT_COMPLETE if failing is None else jobs.EVENT_FAILED

    reference = make_job(user, START, 6, status="processing")
    _play(reference, outcomes)
    expected = comparable(reference.id)
    assert expected["status"] == ("complete" if failing is None else "failed")

    rng = random.Random(20260406)
    for round_no in range(3):
        job = make_job(user, START, 6, status="processing")
        caplog.clear()
        barrier = threading.Barrier(8)
        results: list[jobs.UpdateResult] = []
        lock = threading.Lock()

        def same_final_outcome():
            barrier.wait(timeout=10)
            result = apply(job, final[0], ok=final[1], error="CRM 503")
            with lock:
                results.append(result)

        def every_outcome(order):
            def run():
                barrier.wait(timeout=10)
                for on, ok in order:
                    result = apply(job, on, ok=ok, error="CRM 503")
                    with lock:
                        results.append(result)

            return run

        orders = [rng.sample(outcomes, len(outcomes)) for _ in range(4)]
        errors = run_threads([same_final_outcome] * 4 + [every_outcome(order) for order in orders])

        assert not errors, errors
        assert len(results) == 4 + 4 * 6
        assert sum(r.finalized for r in results) == 1, f"round {round_no}"
        assert comparable(job.id) == expected, f"round {round_no}"
        terminal_events = [r for r in events(caplog, "realtime_event", terminal) if r.job_id == str(job.id)]
        assert len(terminal_events) == 1, f"round {round_no}"
        progress_events = [r for r in events(caplog, "realtime_event", jobs.EVENT_PROGRESS) if r.job_id == str(job.id)]
        assert len(progress_events) == 6  # one per date, whoever applied it
