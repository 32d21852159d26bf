"""The jobs' outcome inbox (``fiches.services.jobs.JOB_INBOX`` on ``core.inbox``): how a day's outcome
reaches the job's updater, and what one updater pass costs.

- a report that finds the job's lock free applies its outcome (and every pending one) at once;
- a report that finds it busy waits for the holder to drain it ("drained": the holder's commit moved
  the run's counter past it), takes the lock when it frees, or hands the outcome over to the durable
  ``core.tasks.apply_outcome`` message — never drops it (nor when Redis lost the list meanwhile);
- a holder that lost its lock trims nothing (the next holder applies those outcomes again: no-ops);
- one updater pass is one row lock and one update, however many outcomes it applies.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import date, timedelta

import orjson
import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core import inbox
from fiches import job_snapshots
from fiches.models import ProgressiveFetchJob
from fiches.services import jobs
from fiches.services.jobs import JOB_INBOX
from tests.support import make_job, queued_tasks

START = date(2026, 5, 4)

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(make_role, make_user):
    return make_user(make_role("pf-inbox", fiches=("r", "ALL")), email="pf-inbox@example.com")


@pytest.fixture
def job(user) -> ProgressiveFetchJob:
    return make_job(user, START, 6, status="processing")


@pytest.fixture
def client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def day(n: int) -> str:
    return (START + timedelta(days=n)).isoformat()


def keys(job) -> tuple[str, str, str]:
    pending, lock, counters = JOB_INBOX.keys(str(job.pk))
    return pending, lock, counters


def applied_days(job) -> list[date]:
    job.refresh_from_db()
    return sorted(job.dates_already_fetched)


def hold_lock(client, job, token: str = "someone-else", ms: int = 10_000) -> None:
    assert client.set(keys(job)[1], token, nx=True, px=ms)


def test_a_report_with_the_lock_free_applies_at_once_and_leaves_nothing_pending(job, client):
    version = job_snapshots.version_key(job.pk)
    client.set(version, 7)

    assert inbox.report(JOB_INBOX, str(job.pk), [day(0), True, None]) == "applied"

    assert applied_days(job) == [START]
    pending, lock, counters = keys(job)
    assert client.llen(pending) == 0 and not client.exists(lock)
    assert client.hget(counters, "done") == client.hget(counters, "pushed") == b"1"
    assert client.get(version) == b"8"  # the job's status snapshot invalidated once, in the settle round trip


def test_a_holder_applies_the_outcomes_queued_before_it_in_the_same_pass(job, client):
    pending, _, _ = keys(job)
    client.rpush(pending, orjson.dumps([day(1), True, None]), orjson.dumps([day(2), False, "CRM 503"]))

    with CaptureQueriesContext(connection) as ctx:
        assert inbox.report(JOB_INBOX, str(job.pk), [day(0), True, None]) == "applied"

    job.refresh_from_db()
    assert job.dates_already_fetched == [START, START + timedelta(days=1)]
    assert job.dates_failed == [START + timedelta(days=2)]
    assert client.llen(pending) == 0
    job_statements = [q["sql"] for q in ctx.captured_queries if "progressive_fetch_jobs" in q["sql"]]
    assert len(job_statements) == 2  # one pass: the row lock and one update, for three outcomes


def test_a_waiting_report_returns_once_the_holder_drained_it(job, client):
    hold_lock(client, job, token="holder")
    results: list[str] = []
    waiter = threading.Thread(target=lambda: results.append(inbox.report(JOB_INBOX, str(job.pk), [day(3), True, None])))
    waiter.start()
    pending, _, _ = keys(job)
    deadline = time.monotonic() + 5
    while client.llen(pending) == 0 and time.monotonic() < deadline:
        time.sleep(0.005)

    # The holder's pass: apply what is pending, commit, then settle (trim, counter, release).
    entries = [orjson.loads(raw) for raw in client.lrange(pending, 0, -1)]
    result = JOB_INBOX.apply(str(job.pk), entries)
    rest = inbox._script(inbox._SETTLE)(
        keys=list(keys(job)), args=["holder", len(entries), int(result.finalized), 1000, 1, 1, 60]
    )
    waiter.join(5)

    assert rest == [] and results == ["drained"]
    assert applied_days(job) == [START + timedelta(days=3)]
    assert queued_tasks("default") == []  # no durable message was needed


def test_a_waiting_report_takes_the_lock_when_it_frees(job, client):
    hold_lock(client, job, ms=150)  # a holder that dies: its lock expires

    assert inbox.report(JOB_INBOX, str(job.pk), [day(4), True, None], wait=2) == "applied"

    assert applied_days(job) == [START + timedelta(days=4)]
    assert queued_tasks("default") == []


def test_a_report_that_cannot_get_its_turn_hands_the_outcome_over_to_the_durable_updater(job, client):
    hold_lock(client, job)

    assert inbox.report(JOB_INBOX, str(job.pk), [day(5), False, "CRM 502"], wait=0.05) == "handed_over"

    assert [(t.name, t.args) for t in queued_tasks("default")] == [
        ("core.tasks.apply_outcome", [JOB_INBOX.name, str(job.pk), [day(5), False, "CRM 502"]])
    ]
    assert client.llen(keys(job)[0]) == 1  # still pending too: whoever drains it first applies it


def test_a_report_whose_pending_list_redis_lost_is_handed_over_not_taken_for_drained(job, client):
    hold_lock(client, job)
    waiter_results: list[str] = []
    waiter = threading.Thread(
        target=lambda: waiter_results.append(inbox.report(JOB_INBOX, str(job.pk), [day(1), True, None], wait=2))
    )
    waiter.start()
    pending, _, counters = keys(job)
    deadline = time.monotonic() + 5
    while client.llen(pending) == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    client.delete(pending, counters)  # a Redis restart that lost the data: the entry is gone, unapplied
    waiter.join(5)

    assert waiter_results == ["handed_over"]
    assert [t.name for t in queued_tasks("default")] == ["core.tasks.apply_outcome"]


def test_a_holder_that_lost_its_lock_trims_nothing(job, client):
    pending, lock, counters = keys(job)
    client.rpush(pending, orjson.dumps([day(0), True, None]))
    token = uuid.uuid4().hex
    assert inbox._script(inbox._ACQUIRE)(keys=list(keys(job)), args=[token, 50]) == [orjson.dumps([day(0), True, None])]
    client.set(lock, "the-next-holder")  # ours expired and another updater took it over

    assert inbox._script(inbox._SETTLE)(keys=list(keys(job)), args=[token, 1, 0, 1000, 1, 1, 60]) is None
    assert client.llen(pending) == 1 and client.get(lock) == b"the-next-holder"
    assert client.hget(counters, "done") is None


def test_the_durable_updater_applies_its_outcome_and_the_pending_ones(job, client):
    from core.tasks import apply_outcome

    client.rpush(keys(job)[0], orjson.dumps([day(1), True, None]))
    assert apply_outcome.run(JOB_INBOX.name, str(job.pk), [day(0), True, None]) == "applied"
    assert applied_days(job) == [START, START + timedelta(days=1)]
    assert apply_outcome.run(JOB_INBOX.name, str(job.pk), [day(0), True, None]) == "already applied"


@pytest.mark.parametrize("batch", [1, 5])
def test_an_updater_pass_is_one_row_lock_and_one_update_whatever_its_size(job, batch):
    outcomes = [jobs.DayOutcome(START + timedelta(days=n), n % 2 == 0, "CRM 503") for n in range(batch)]

    with CaptureQueriesContext(connection) as ctx:
        result = jobs.progressive_fetch_apply_outcomes(job_id=str(job.pk), outcomes=outcomes)

    assert result.changed and not result.finalized
    statements = [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == 2, statements
    assert statements[0].startswith('SELECT "progressive_fetch_jobs".') and "FOR UPDATE" in statements[0]
    assert statements[1].lstrip().startswith("UPDATE progressive_fetch_jobs")
