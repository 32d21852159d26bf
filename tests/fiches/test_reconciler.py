"""The progressive-fetch reconciler (fiches.services.jobs.progressive_fetch_reconcile and the
``reconcile_progressive_jobs`` beat task): every unfinished job ends.

- stalled (no progress for PROGRESSIVE_FETCH_STALL_SECONDS, or never dispatched) → re-driven once
  per stall period;
- nothing remaining but not finalized → finalized exactly once (complete, or failed with failures);
- no progress for PROGRESSIVE_FETCH_DEADLINE_SECONDS → failed, remaining dates failed, "timed out"
  (a job that keeps progressing is never timed out, however old it is);
- finished jobs are left alone.

No worker runs: the task's re-drives are read back from the test broker's queue.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.utils import timezone

from fiches.models import JobStatus, ProgressiveFetchJob
from fiches.services.jobs import progressive_fetch_reconcile
from fiches.tasks import reconcile_progressive_jobs
from tests.support import queued_tasks

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
D = [date(2026, 3, 2) + timedelta(days=n) for n in range(4)]


@pytest.fixture(autouse=True)
def _timing(settings):
    settings.PROGRESSIVE_FETCH_STALL_SECONDS = 300
    settings.PROGRESSIVE_FETCH_DEADLINE_SECONDS = 1800
    settings.CRM_RATE_LIMIT = "off"


def make_job(
    *,
    status: str = JobStatus.PROCESSING,
    created: datetime,
    dispatched: datetime | None = None,
    progress_at: datetime | None = None,
    done: list[date] = (),
    failed: list[date] = (),
    remaining: list[date] | None = None,
    error: str | None = None,
) -> ProgressiveFetchJob:
    done, failed = list(done), list(failed)
    if remaining is None:
        remaining = [d for d in D if d not in done and d not in failed]
    job = ProgressiveFetchJob.objects.create(
        status=status,
        start_date=D[0],
        end_date=D[-1],
        dates_already_fetched=done,
        dates_failed=failed,
        dates_remaining=remaining,
        total_days=len(D),
        completed_days=len(done),
        progress=round((len(done) + len(failed)) / len(D) * 100),
        error=error,
    )
    # created_at is auto_now_add: set the clock fields with an update
    ProgressiveFetchJob.objects.filter(pk=job.pk).update(
        created_at=created,
        dispatched_at=dispatched,
        last_progress_at=progress_at,
        started_at=dispatched,
        updated_at=created,
    )
    job.refresh_from_db()
    return job


def snapshot(job: ProgressiveFetchJob) -> dict:
    return ProgressiveFetchJob.objects.filter(pk=job.pk).values().get()


# --- Stalled jobs ----------------------------------------------------------------------------------


def test_stalled_job_is_redriven_once_per_stall_period():
    stalled = make_job(
        created=NOW - timedelta(minutes=10),
        dispatched=NOW - timedelta(minutes=10),
        progress_at=NOW - timedelta(seconds=301),
        done=[D[0]],
    )
    before = snapshot(stalled)

    actions = progressive_fetch_reconcile(now=NOW)

    assert actions == {"redrive": [str(stalled.pk)], "finalized": [], "timed_out": []}
    after = snapshot(stalled)
    assert after["redriven_at"] == NOW  # the stall clock restarts...
    assert after["last_progress_at"] == before["last_progress_at"]  # ...but a re-drive is not progress
    assert after["status"] == JobStatus.PROCESSING
    assert {k: v for k, v in after.items() if k not in ("redriven_at", "updated_at")} == {
        k: v for k, v in before.items() if k not in ("redriven_at", "updated_at")
    }

    # right after: not again
    assert progressive_fetch_reconcile(now=NOW + timedelta(seconds=1)) == {
        "redrive": [],
        "finalized": [],
        "timed_out": [],
    }
    assert progressive_fetch_reconcile(now=NOW + timedelta(seconds=300)) == {
        "redrive": [],
        "finalized": [],
        "timed_out": [],
    }
    # another full stall period without progress: re-driven again
    assert progressive_fetch_reconcile(now=NOW + timedelta(seconds=301))["redrive"] == [str(stalled.pk)]


def test_job_with_recent_progress_is_left_alone():
    busy = make_job(
        created=NOW - timedelta(minutes=20),
        dispatched=NOW - timedelta(minutes=20),
        progress_at=NOW - timedelta(seconds=299),
        done=[D[0]],
    )
    before = snapshot(busy)
    assert progressive_fetch_reconcile(now=NOW) == {"redrive": [], "finalized": [], "timed_out": []}
    assert snapshot(busy) == before


def test_never_dispatched_pending_job_is_redriven_after_a_stall_period():
    young = make_job(status=JobStatus.PENDING, created=NOW - timedelta(seconds=100))
    lost = make_job(status=JobStatus.PENDING, created=NOW - timedelta(seconds=400))

    actions = progressive_fetch_reconcile(now=NOW)

    assert actions["redrive"] == [str(lost.pk)]
    assert snapshot(lost)["redriven_at"] == NOW
    assert snapshot(young)["redriven_at"] is None


# --- Nothing remaining but not finalized ---------------------------------------------------------


def test_job_with_nothing_remaining_is_finalized_complete_exactly_once():
    job = make_job(
        created=NOW - timedelta(minutes=5),
        dispatched=NOW - timedelta(minutes=5),
        progress_at=NOW - timedelta(seconds=10),
        done=D,
        remaining=[],
    )

    assert progressive_fetch_reconcile(now=NOW) == {"redrive": [], "finalized": [str(job.pk)], "timed_out": []}

    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETE
    assert job.progress == 100
    assert job.completed_at is not None
    assert job.dates_failed == []
    finished = snapshot(job)
    assert progressive_fetch_reconcile(now=NOW + timedelta(seconds=5)) == {
        "redrive": [],
        "finalized": [],
        "timed_out": [],
    }
    assert snapshot(job) == finished


def test_job_with_nothing_remaining_and_failed_dates_is_finalized_failed():
    job = make_job(
        created=NOW - timedelta(minutes=5),
        dispatched=NOW - timedelta(minutes=5),
        progress_at=NOW - timedelta(seconds=10),
        done=D[:3],
        failed=[D[3]],
        remaining=[],
        error="2026-03-05: CRM answered 503",
    )

    assert progressive_fetch_reconcile(now=NOW)["finalized"] == [str(job.pk)]

    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.dates_failed == [D[3]]
    assert job.dates_already_fetched == D[:3]
    assert job.progress == 100
    assert progressive_fetch_reconcile(now=NOW)["finalized"] == []


def test_a_stalled_job_with_nothing_remaining_is_finalized_not_redriven():
    job = make_job(
        created=NOW - timedelta(minutes=20),
        dispatched=NOW - timedelta(minutes=20),
        progress_at=NOW - timedelta(minutes=15),
        done=D,
        remaining=[],
    )
    assert progressive_fetch_reconcile(now=NOW) == {"redrive": [], "finalized": [str(job.pk)], "timed_out": []}


# --- Deadline ----------------------------------------------------------------------------------------


def test_job_without_progress_for_the_deadline_ends_failed_with_its_remaining_dates_failed():
    job = make_job(
        created=NOW - timedelta(hours=2),
        dispatched=NOW - timedelta(hours=2),
        progress_at=NOW - timedelta(seconds=1801),
        done=[D[0]],
        failed=[D[1]],
    )
    assert job.dates_remaining == D[2:]

    actions = progressive_fetch_reconcile(now=NOW)

    assert actions == {"redrive": [], "finalized": [], "timed_out": [str(job.pk)]}
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.dates_remaining == []
    assert job.dates_failed == D[1:]
    assert job.dates_already_fetched == [D[0]]
    assert "timed out" in job.error
    assert job.progress == 100
    assert job.completed_at is not None
    assert progressive_fetch_reconcile(now=NOW + timedelta(seconds=60)) == {
        "redrive": [],
        "finalized": [],
        "timed_out": [],
    }


def test_a_job_that_keeps_progressing_is_never_timed_out_however_old():
    """The deadline counts from the last progress, not from creation: a big healthy job runs on."""
    job = make_job(
        created=NOW - timedelta(hours=3),
        dispatched=NOW - timedelta(hours=3),
        progress_at=NOW - timedelta(seconds=30),
        done=[D[0]],
    )
    assert progressive_fetch_reconcile(now=NOW) == {"redrive": [], "finalized": [], "timed_out": []}
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING


def test_re_drives_do_not_postpone_the_deadline():
    job = make_job(
        created=NOW - timedelta(seconds=1000),
        dispatched=NOW - timedelta(seconds=1000),
        progress_at=NOW - timedelta(seconds=1000),
        done=[D[0]],
    )
    clock = NOW
    redrives = 0
    while ProgressiveFetchJob.objects.get(pk=job.pk).status == JobStatus.PROCESSING:
        actions = progressive_fetch_reconcile(now=clock)
        redrives += len(actions["redrive"])
        clock += timedelta(seconds=60)
        assert clock < NOW + timedelta(hours=1), "never timed out"
    assert redrives == 3  # once per stall period (0, 360, 720 s) until the deadline, 800 s from now
    assert clock - timedelta(seconds=60) - (NOW - timedelta(seconds=1000)) > timedelta(seconds=1800)


def test_job_just_before_the_deadline_is_not_timed_out():
    job = make_job(
        created=NOW - timedelta(seconds=3600),
        dispatched=NOW - timedelta(seconds=1800),
        progress_at=NOW - timedelta(seconds=1800),
        done=[D[0]],
    )
    assert progressive_fetch_reconcile(now=NOW)["timed_out"] == []
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING


# --- Finished jobs -------------------------------------------------------------------------------------


def test_finished_jobs_are_untouched():
    old = NOW - timedelta(days=2)
    complete = make_job(status=JobStatus.COMPLETE, created=old, dispatched=old, progress_at=old, done=D, remaining=[])
    failed = make_job(
        status=JobStatus.FAILED, created=old, dispatched=old, progress_at=old, done=D[:2], failed=D[2:], remaining=[]
    )
    # even a (corrupt) finished job still listing remaining dates
    odd = make_job(status=JobStatus.FAILED, created=old, dispatched=old, progress_at=old, done=[D[0]])
    before = [snapshot(j) for j in (complete, failed, odd)]

    assert progressive_fetch_reconcile(now=NOW) == {"redrive": [], "finalized": [], "timed_out": []}
    assert [snapshot(j) for j in (complete, failed, odd)] == before


def test_one_reconcile_handles_each_kind_of_job():
    stalled = make_job(
        created=NOW - timedelta(minutes=10),
        dispatched=NOW - timedelta(minutes=10),
        progress_at=NOW - timedelta(minutes=6),
    )
    done = make_job(
        created=NOW - timedelta(minutes=3),
        dispatched=NOW - timedelta(minutes=3),
        progress_at=NOW - timedelta(minutes=1),
        done=D,
        remaining=[],
    )
    late = make_job(
        created=NOW - timedelta(hours=1), dispatched=NOW - timedelta(hours=1), progress_at=NOW - timedelta(minutes=31)
    )
    fine = make_job(
        created=NOW - timedelta(minutes=3),
        dispatched=NOW - timedelta(minutes=3),
        progress_at=NOW - timedelta(minutes=1),
    )

    actions = progressive_fetch_reconcile(now=NOW)

    assert actions == {"redrive": [str(stalled.pk)], "finalized": [str(done.pk)], "timed_out": [str(late.pk)]}
    assert ProgressiveFetchJob.objects.get(pk=fine.pk).status == JobStatus.PROCESSING


# --- The beat task -------------------------------------------------------------------------------------


def test_reconcile_task_returns_the_actions_and_enqueues_redrives():
    now = timezone.now()
    stalled = make_job(
        created=now - timedelta(minutes=10),
        dispatched=now - timedelta(minutes=10),
        progress_at=now - timedelta(minutes=6),
        done=[D[0]],
    )
    done = make_job(
        created=now - timedelta(minutes=3),
        dispatched=now - timedelta(minutes=3),
        progress_at=now - timedelta(seconds=30),
        done=D,
        remaining=[],
    )
    late = make_job(
        created=now - timedelta(hours=1), dispatched=now - timedelta(hours=1), progress_at=now - timedelta(minutes=31)
    )

    actions = reconcile_progressive_jobs.run()

    assert actions == {"redrive": [str(stalled.pk)], "finalized": [str(done.pk)], "timed_out": [str(late.pk)]}
    assert [(t.name, t.args, t.kwargs) for t in queued_tasks("default")] == [
        ("fiches.tasks.progressive_fetch_continue", [str(stalled.pk)], {"redrive": True}),
    ]
    # the next run (a minute later at most) has nothing to do
    assert reconcile_progressive_jobs.run() == {"redrive": [], "finalized": [], "timed_out": []}
    assert len(queued_tasks("default")) == 1
