"""Progressive date-range fetch jobs: the request that never waits, the dispatch, the serialized
per-job updater and the exactly-once finalization.

On the workflow kernel (``core``). Flow: ``progressive_fetch_request`` (API) creates a job for the
missing dates (or every date when refreshing) and dispatches its orchestrator after commit
(``core.dispatch``) → ``progressive_fetch_dispatch`` (the orchestrator task) marks it processing and
fans out one day task per remaining date → each day task reports its outcome to the job's inbox
(``JOB_INBOX``, ``core.inbox``: serialized by a Redis lock keyed by the job id **and** the job's row
lock), whose updater ``progressive_fetch_apply_outcomes`` applies every pending outcome in one pass →
when no date remains, the same pass ends the job exactly once (``TrackedRun.end_once``: a conditional
update whose row count decides who publishes the terminal event and webhook) → ``RECONCILER``
(``core.reconcile``) makes every job end.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import orjson
from django.conf import settings
from django.db import connection, models, transaction
from django.utils import timezone
from redis.exceptions import RedisError

from accounts.grants import scope_for
from core.dispatch import dispatch_on_commit, fan_out
from core.exceptions import DependencyUnavailable, InvalidInput, ThrottledError
from core.inbox import Inbox
from core.limits import throttle_crm_requests
from core.reconcile import Reconciler
from core.redis import get_redis
from fiches import selectors
from fiches.job_snapshots import job_changed, job_payload, version_key
from fiches.models import TERMINAL_STATUSES, JobStatus, ProgressiveFetchJob, ScopeKind
from fiches.notifications import send_job_webhook
from fiches.workflow_log import trace
from realtime.publisher import publish, publish_many

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("fiches.jobs")

EVENT_CREATED = "fiches.progressive_fetch.created"
EVENT_PROGRESS = "fiches.progressive_fetch.progress"
EVENT_COMPLETE = "fiches.progressive_fetch.complete"
EVENT_FAILED = "fiches.progressive_fetch.failed"


# --- The request ------------------------------------------------------------------------


@dataclass(frozen=True)
class RangeResult:
    fiches_json: bytes  # a JSON array rendered by Postgres
    meta: dict

    def render(self) -> bytes:
        return b'{"fiches":' + self.fiches_json + b',"meta":' + orjson.dumps(self.meta) + b"}"


def validate_range(start: date, end: date) -> None:
    if end < start:
        raise InvalidInput(
            "endDate must be on or after startDate.", details={"startDate": str(start), "endDate": str(end)}
        )
    days = (end - start).days + 1
    limit = settings.PROGRESSIVE_FETCH_MAX_RANGE_DAYS
    if days > limit:
        raise InvalidInput(
            f"The range covers {days} days; at most {limit} are allowed.",
            code="range_too_long",
            details={"days": days, "max_days": limit},
        )


def _scope_snapshot(user: User) -> dict:
    scope = scope_for(user, "fiches", "read")
    return {
        "scope_kind": str(scope) if scope is not None else ScopeKind.NONE,
        "scope_groupes": list(user.groupes or []),
        "scope_crm_user_id": user.crm_user_id,
    }


def _counts_by_date(start: date, end: date) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sales_date, count(*) FROM fiche_cache WHERE sales_date BETWEEN %s AND %s GROUP BY sales_date",
            [start, end],
        )
        return {d.isoformat(): n for d, n in cursor.fetchall()}


def _find_reusable_job(
    *, user: User, start: date, end: date, webhook_url: str | None, webhook_secret: str | None
) -> ProgressiveFetchJob | None:
    """The user's latest job for the same range, webhook URL **and** secret within the reuse
    window, unless it failed (a failed job is never handed out again: the request gets a new job
    that retries the missing dates). A different secret for the same URL makes a new job, so the
    secret the caller gave is the one its webhooks are signed with."""
    since = timezone.now() - timedelta(seconds=settings.PROGRESSIVE_FETCH_REUSE_SECONDS)
    return (
        ProgressiveFetchJob.objects.filter(
            requested_by=user,
            start_date=start,
            end_date=end,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret or None,
            created_at__gte=since,
        )
        .exclude(status=JobStatus.FAILED)
        .order_by("-created_at")
        .first()
    )


def progressive_fetch_request(
    *,
    user: User,
    start: date,
    end: date,
    refresh: bool = False,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
) -> RangeResult:
    """Cached fiches of the range at once, plus a background job for what is missing.

    Never calls the CRM and never waits for background work. Not refreshing, the same user's
    same range within ``PROGRESSIVE_FETCH_REUSE_SECONDS`` reuses the latest job; concurrent
    identical requests are serialized by a transaction-scoped advisory lock, so they get one job.
    """
    validate_range(start, end)
    if refresh:
        _refresh_guardrails(user=user, start=start, end=end)
    all_dates = selectors.dates_between(start, end)
    coverage = selectors.date_range_coverage(start, end)
    rendered = selectors.fiches_for_range_json(user, start, end)
    fiches_json, fiche_count = rendered.body, rendered.count
    logger.info(
        "progressive_fetch_started",
        extra={"start": str(start), "end": str(end), "refresh": refresh, "user_id": user.pk},
    )
    logger.info(
        "cache_coverage_analyzed",
        extra={"cached_days": len(coverage.covered), "missing_days": len(coverage.missing)},
    )

    job = None
    reused = False
    if refresh or coverage.missing:
        with transaction.atomic():
            if not refresh:
                with connection.cursor() as cursor:
                    key = f"pf-request:{user.pk}:{start}:{end}:{webhook_url or ''}"
                    cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [key])
                job = _find_reusable_job(
                    user=user, start=start, end=end, webhook_url=webhook_url, webhook_secret=webhook_secret
                )
                reused = job is not None
            if job is None:
                job = _create_job(
                    user=user,
                    start=start,
                    end=end,
                    refresh=refresh,
                    covered=[] if refresh else coverage.covered,
                    remaining=all_dates if refresh else coverage.missing,
                    webhook_url=webhook_url,
                    webhook_secret=webhook_secret,
                )
    meta = {
        "startDate": start.isoformat(),
        "endDate": end.isoformat(),
        "totalDays": len(all_dates),
        "datesAlreadyFetched": [d.isoformat() for d in coverage.covered],
        "datesRemaining": [d.isoformat() for d in job.dates_remaining] if job else [],
        "complete": job is None,
        "backgroundJobId": str(job.id) if job else None,
        "jobReused": reused,
        "forceRefresh": refresh,
        "totalFiches": fiche_count,
        "cachedFiches": fiche_count,
    }
    return RangeResult(fiches_json=fiches_json, meta=meta)


def _refresh_guardrails(*, user: User, start: date, end: date) -> None:
    """``refresh=true`` forces CRM work for every date: cap its range, count it in the user's
    CRM-bound request rate, and let the same user refresh the same range at most once per
    ``REFRESH_MIN_INTERVAL_SECONDS``. Both limits live in Redis: with Redis down a refresh is
    refused (503) rather than let through unguarded; plain reads are not affected."""
    days = (end - start).days + 1
    if days > settings.REFRESH_MAX_RANGE_DAYS:
        raise InvalidInput(
            f"refresh=true covers at most {settings.REFRESH_MAX_RANGE_DAYS} days; this range has {days}.",
            code="refresh_range_too_long",
            details={"days": days, "max_days": settings.REFRESH_MAX_RANGE_DAYS},
        )
    throttle_crm_requests(user)
    interval = settings.REFRESH_MIN_INTERVAL_SECONDS
    if interval > 0:
        key = f"refresh-guard:{user.pk}:{start}:{end}"
        try:
            redis = get_redis()
            first = redis.set(key, 1, nx=True, ex=interval)
            ttl = None if first else redis.ttl(key)
        except RedisError:
            raise DependencyUnavailable(
                "refresh=true is unavailable right now (Redis is down); cached data is still served without it.",
                code="refresh_unavailable",
            ) from None
        if not first:
            raise ThrottledError(
                "This range was refreshed moments ago; the cached data is already being revalidated.",
                code="refresh_too_frequent",
                retry_after=max(1, ttl or 1),
            )


def _create_job(
    *,
    user: User,
    start: date,
    end: date,
    refresh: bool,
    covered: list[date],
    remaining: list[date],
    webhook_url: str | None,
    webhook_secret: str | None,
) -> ProgressiveFetchJob:
    from fiches.tasks import progressive_fetch_continue

    counts = _counts_by_date(start, end)
    total_days = (end - start).days + 1
    job = ProgressiveFetchJob.objects.create(
        start_date=start,
        end_date=end,
        dates_already_fetched=list(covered),
        dates_remaining=list(remaining),
        dates_failed=[],
        total_days=total_days,
        completed_days=len(covered),
        progress=round(len(covered) / total_days * 100),
        total_fiches=sum(counts.values()),
        initial_date_counts=counts,
        force_refresh=refresh,
        requested_by=user,
        webhook_url=webhook_url or None,
        webhook_secret=webhook_secret or None,
        **_scope_snapshot(user),
    )
    trace("background_job_created", job_id=job.id, remaining_days=len(remaining), refresh=refresh)
    logger.info(
        "triggering_background_fetch",
        extra={"job_id": str(job.id), "remaining_days": len(remaining), "webhook_configured": bool(webhook_url)},
    )
    publish(EVENT_CREATED, job_payload(job))
    # A broker that is down must not turn the user's answer into an error: the job is returned as it is
    # and the reconciler drives it (never dispatched → re-driven).
    dispatch_on_commit(progressive_fetch_continue, str(job.id))
    return job


# --- Dispatch (orchestrator) -------------------------------------------------------------


def progressive_fetch_dispatch(*, job_id: str, redrive: bool = False) -> list[date]:
    """Mark the job processing and return the dates to fan out (once; ``redrive`` re-sends the
    remaining dates of a job already dispatched). A job with nothing left is finalized."""
    return _mark_dispatched(job_id, redrive)[0]


def progressive_fetch_fan_out(*, job_id: str, redrive: bool = False) -> int:
    """The orchestrator: ``progressive_fetch_dispatch``, then one day task per date to fan out (plain
    messages: the updater ends the job, the reconciler is the safety net). The number sent."""
    from fiches.tasks import progressive_fetch_day

    dates, force_refresh = _mark_dispatched(job_id, redrive)
    return fan_out(progressive_fetch_day, ((job_id, day.isoformat(), force_refresh) for day in dates))


def _mark_dispatched(job_id: str, redrive: bool) -> tuple[list[date], bool]:
    with transaction.atomic():
        job = ProgressiveFetchJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_terminal:
            return [], False
        if job.dispatched_at is not None and not redrive:
            trace("progressive_fetch_already_dispatched", job_id=job_id)
            return [], False
        now = timezone.now()
        job.status = JobStatus.PROCESSING
        job.started_at = job.started_at or now
        job.dispatched_at = now
        job.last_progress_at = job.last_progress_at or now
        job.save(update_fields=["status", "started_at", "dispatched_at", "last_progress_at", "updated_at"])
        dates = sorted(job.dates_remaining)
        if not dates:
            _finalize_locked(job)
    trace("fanning_out_day_workers", job_id=job_id, days=len(dates), redrive=redrive)
    return dates, job.force_refresh


# --- The day task's check ---------------------------------------------------------------------


@dataclass(frozen=True)
class DayTaskContext:
    finished: bool  # the job ended (or is gone): nothing to do
    day_done: bool  # the job already has this date's outcome (a re-driven or duplicate day task)
    covered: bool = False  # the date's sales list is cached (fetched once at least)

    @property
    def skip(self) -> str | None:
        if self.finished:
            return "job is finished or gone"
        if self.day_done:
            return "outcome already applied"
        return None


_DAY_CHECK = """
SELECT j.status, %(day)s = ANY(j.dates_already_fetched) OR %(day)s = ANY(j.dates_failed),
       EXISTS (SELECT 1 FROM fiche_sales_dates WHERE sales_date = %(day)s AND last_fetched_at IS NOT NULL)
FROM (SELECT 1) AS one LEFT JOIN progressive_fetch_jobs j ON j.id = %(job_id)s
"""


def day_task_context(*, job_id: str, day: date) -> DayTaskContext:
    """What a day task checks before calling the CRM, in one statement (no lock): is the job still on,
    does it have this date's outcome already, and is the date covered (the coverage check of a fetch
    that is not forced; the caller holds the date's lock)."""
    with connection.cursor() as cursor:
        cursor.execute(_DAY_CHECK, {"day": day, "job_id": job_id})
        status, done, covered = cursor.fetchone()
    if status is None or status in TERMINAL_STATUSES:
        return DayTaskContext(finished=True, day_done=True, covered=covered)
    return DayTaskContext(finished=False, day_done=bool(done), covered=covered)


# --- The updater --------------------------------------------------------------------------


@dataclass
class UpdateResult:
    changed: bool = False
    finalized: bool = False
    status: str | None = None
    processed_days: int = 0
    remaining: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DayOutcome:
    day: date
    ok: bool
    error: str | None = None

    @classmethod
    def from_json(cls, outcome: list) -> DayOutcome:
        """``[day, ok, error]`` as reported to the inbox."""
        day, ok, error = outcome[:3]
        return cls(date.fromisoformat(day), bool(ok), error)

    def as_json(self) -> list:
        return [self.day.isoformat(), self.ok, self.error]


def outcome_is_applied(*, job_id: str, outcome: DayOutcome) -> bool:
    """Cheap pre-check without locks: is this outcome already reflected in the job (and the job not
    waiting for its finalization)? The updater's fast path for duplicates."""
    row = (
        ProgressiveFetchJob.objects.filter(pk=job_id)
        .values("status", "dates_already_fetched", "dates_failed", "dates_remaining")
        .first()
    )
    if row is None or row["status"] in TERMINAL_STATUSES:
        return True
    if not row["dates_remaining"]:
        return False  # nothing left but not finalized: the updater must finalize
    if outcome.ok:
        return outcome.day in row["dates_already_fetched"]
    return outcome.day in row["dates_already_fetched"] or outcome.day in row["dates_failed"]


def progressive_fetch_apply_outcome(*, job_id: str, day: date, ok: bool, error: str | None = None) -> UpdateResult:
    """Apply one day's outcome (see ``progressive_fetch_apply_outcomes``)."""
    return progressive_fetch_apply_outcomes(job_id=job_id, outcomes=[DayOutcome(day, ok, error)])


@functools.lru_cache(maxsize=256)
def _range_dates(start: date, end: date) -> tuple[tuple[date, ...], dict[date, str]]:
    """The dates of a job's range and their ISO strings (a job's range never changes: computed once
    per process, not at each updater pass)."""
    days = tuple(selectors.dates_between(start, end))
    return days, {d: d.isoformat() for d in days}


_JOB_COLUMNS = [f.attname for f in ProgressiveFetchJob._meta.concrete_fields]
_JSON_COLUMNS = [i for i, f in enumerate(ProgressiveFetchJob._meta.concrete_fields) if isinstance(f, models.JSONField)]
_TABLE = ProgressiveFetchJob._meta.db_table
# The job's row under its lock and, in the same statement, the cached fiches of the batch's successful
# dates (as of the statement's start: after those dates' cache writes committed, before their outcomes
# were reported).
_LOCK_JOB = f"""
SELECT {", ".join(f'"{_TABLE}"."{column}"' for column in _JOB_COLUMNS)}, counts.days, counts.fiches
FROM "{_TABLE}" LEFT JOIN LATERAL (
    SELECT array_agg(c.sales_date) AS days, array_agg(c.n) AS fiches
    FROM (SELECT sales_date, count(*) AS n FROM fiche_cache WHERE sales_date = ANY(%(days)s::date[])
          GROUP BY sales_date) c
) counts ON true
WHERE "{_TABLE}"."id" = %(id)s
FOR UPDATE OF "{_TABLE}"
""".strip()


def _lock_job(job_id: str, days: list[date]) -> tuple[ProgressiveFetchJob | None, dict[date, int]]:
    """The job (its row locked until the transaction ends) and the cached fiches on each of ``days``."""
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_JOB, {"id": job_id, "days": days})
        row = cursor.fetchone()
    if row is None:
        return None, {}
    counted = dict(zip(row[-2] or (), row[-1] or (), strict=True))
    values = list(row[:-2])
    for i in _JSON_COLUMNS:  # raw SQL skips the field's converter: jsonb arrives as text
        if isinstance(values[i], str):
            values[i] = orjson.loads(values[i])
    job = ProgressiveFetchJob.from_db("default", _JOB_COLUMNS, values)
    return job, {day: counted.get(day, 0) for day in days}


def progressive_fetch_apply_outcomes(
    *, job_id: str, outcomes: list[DayOutcome], invalidate_snapshot: bool = True
) -> UpdateResult:
    """Apply day outcomes to the job in one transaction under its row lock (callers also hold the
    job's Redis lock), in order, as the original's updater algorithm does for each:

    completed/failed date sets; remaining = all - completed - failed; progress =
    round(processed / total x 100); ``error`` records the latest failure; ``total_fiches`` moves by
    the processed date's delta. Duplicate and out-of-order outcomes are no-ops, except that a job
    with nothing left that is not finalized gets finalized. A success is final: a later failure of
    the same date does not undo it. Each applied outcome publishes a progress event (after commit)
    and every ``PROGRESSIVE_FETCH_WEBHOOK_FREQUENCY`` processed days a progress webhook goes out.

    Statements: the row lock (which also counts the batch's dates' fiches), one update for the whole
    batch, and the end when nothing remains — however many outcomes the batch holds. The job's status
    snapshot is invalidated here, unless the caller does it after the commit (``invalidate_snapshot``:
    the inbox's settle round trip does).
    """
    ok_days = sorted({o.day for o in outcomes if o.ok})
    with transaction.atomic():
        job, counts_now = _lock_job(job_id, ok_days)
        if job is None or job.is_terminal:
            return UpdateResult(status=job.status if job else None)
        all_dates, iso = _range_dates(job.start_date, job.end_date)
        completed, failed = set(job.dates_already_fetched), set(job.dates_failed)
        fresh_ok: list[date] = []
        frequency = max(1, settings.PROGRESSIVE_FETCH_WEBHOOK_FREQUENCY)
        result = UpdateResult()
        progress_events: list[tuple[str, dict]] = []
        for outcome in outcomes:
            day = outcome.day
            processed_before = len(completed) + len(failed)
            if day not in iso:  # outside the job's range
                continue
            if outcome.ok and day not in completed:
                completed.add(day)
                fresh_ok.append(day)
                if day in failed:
                    failed.discard(day)
                    if not failed:
                        job.error = None  # the failure it recorded was retried successfully
                before = int(job.initial_date_counts.get(iso[day], 0))
                job.total_fiches = max(0, job.total_fiches + counts_now[day] - before)
                job.initial_date_counts[iso[day]] = counts_now[day]
            elif not outcome.ok and day not in completed and day not in failed:
                failed.add(day)
                job.error = f"{day.isoformat()}: {outcome.error or 'failed'}"[:2000]
                trace("day_failed", job_id=job_id, day=day, level=logging.WARNING, error=outcome.error)
            else:
                continue
            result.changed = True
            processed = len(completed) + len(failed)
            job.dates_already_fetched = sorted(completed)
            job.dates_failed = sorted(failed)
            job.dates_remaining = [d for d in all_dates if d not in completed and d not in failed]
            job.completed_days = len(completed)
            job.progress = round(processed / len(all_dates) * 100)
            job.status = JobStatus.PROCESSING
            trace(
                "progressive_fetch_job_updated",
                job_id=job_id,
                day=day,
                ok=outcome.ok,
                processed_days=processed,
                remaining=len(job.dates_remaining),
            )
            # A progress event always says "processing" (the contract): only complete/failed carry
            # a terminal status, even for the outcome that leaves nothing remaining.
            progress_events.append(
                (EVENT_PROGRESS, {**job_payload(job, iso=iso), "status": JobStatus.PROCESSING, "latestDate": iso[day]})
            )
            if job.dates_remaining and processed // frequency > processed_before // frequency:
                _webhook(job, EVENT_PROGRESS)
        if result.changed:
            _write_progress(job, newly_completed=fresh_ok, counts=counts_now)
            if invalidate_snapshot:
                job_changed(job.pk)  # a raw statement: no model signal tells the status snapshot
            publish_many(progress_events)
        remaining = [d for d in all_dates if d not in completed and d not in failed]
        result.processed_days = len(completed) + len(failed)
        result.remaining = [d.isoformat() for d in remaining]
        if not remaining:
            result.finalized = _finalize_locked(job)
        result.status = job.status
        return result


_PROGRESS_UPDATE = """
UPDATE progressive_fetch_jobs SET
    dates_already_fetched = ARRAY(SELECT DISTINCT d FROM unnest(dates_already_fetched || %(completed)s::date[]) d
                                  ORDER BY d),
    dates_failed = ARRAY(SELECT DISTINCT d FROM unnest(dates_failed || %(failed)s::date[]) d
                         WHERE d <> ALL(%(completed)s::date[]) ORDER BY d),
    dates_remaining = ARRAY(SELECT d FROM unnest(dates_remaining) d
                            WHERE d <> ALL(%(completed)s::date[] || %(failed)s::date[]) ORDER BY d),
    initial_date_counts = initial_date_counts || %(counts)s::jsonb,
    total_fiches = %(total_fiches)s, completed_days = %(completed_days)s, progress = %(progress)s,
    error = %(error)s, status = %(status)s, last_progress_at = now(), updated_at = now()
WHERE id = %(id)s
"""


def _write_progress(job: ProgressiveFetchJob, *, newly_completed: list[date], counts: dict[date, int]) -> None:
    """One statement per applied batch: the date sets move by the batch's dates only (no full
    arrays are sent), the counters are set from the values computed under the row lock."""
    completed = set(job.dates_already_fetched)
    newly_failed = [d for d in job.dates_failed if d not in completed]
    with connection.cursor() as cursor:
        cursor.execute(
            _PROGRESS_UPDATE,
            {
                "id": job.pk,
                "completed": [d for d in newly_completed if d in completed],
                "failed": newly_failed,
                "counts": orjson.dumps({d.isoformat(): counts[d] for d in newly_completed}).decode(),
                "total_fiches": job.total_fiches,
                "completed_days": job.completed_days,
                "progress": job.progress,
                "error": job.error,
                "status": job.status,
            },
        )


def _webhook(job: ProgressiveFetchJob, event: str) -> None:
    """Store a webhook delivery of the job's state as it is now (the row must be written first)."""
    if job.webhook_url and not job.webhooks_disabled:
        send_job_webhook(job=job, event=event)


def _finalize_locked(job: ProgressiveFetchJob) -> bool:
    """End a job whose row lock the caller holds. Exactly once: ``end_once``'s conditional update
    decides, whoever races here (the updater, the reconciler, an operator)."""
    status = JobStatus.FAILED if job.dates_failed else JobStatus.COMPLETE
    now = timezone.now()
    if not ProgressiveFetchJob.end_once(job.pk, status, now=now, progress=100, dates_remaining=[], updated_at=now):
        return False
    job.status, job.progress, job.dates_remaining, job.completed_at = status, 100, [], now
    event = EVENT_COMPLETE if status == JobStatus.COMPLETE else EVENT_FAILED
    trace("progressive_fetch_job_finalized", job_id=job.pk, status=status, failed_days=len(job.dates_failed))
    publish(event, job_payload(job))
    _webhook(job, event)
    return True


def progressive_fetch_finalize_if_done(*, job_id: str) -> bool:
    """The reconciler's safety net (and an earlier release's chord body's): finalize a job with no date left that
    is not finalized."""
    with transaction.atomic():
        job = ProgressiveFetchJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_terminal or job.dates_remaining:
            return False
        return _finalize_locked(job)


def progressive_fetch_finalize_now(*, job_id: str, reason: str = "finalized by an operator") -> bool:
    """Operator action: the remaining dates are marked failed with ``reason``, then the job ends."""
    with transaction.atomic():
        job = ProgressiveFetchJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_terminal:
            return False
        if job.dates_remaining:
            job.dates_failed = sorted(set(job.dates_failed) | set(job.dates_remaining))
            job.error = f"{len(job.dates_remaining)} date(s) {reason}"
            job.dates_remaining = []
            job.save(update_fields=["dates_failed", "error", "dates_remaining", "updated_at"])
        return _finalize_locked(job)


# --- The inbox: day outcomes to the updater --------------------------------------------------


def _apply_reported(job_id: str, outcomes: list[list]) -> UpdateResult:
    return progressive_fetch_apply_outcomes(
        job_id=job_id, outcomes=[DayOutcome.from_json(o) for o in outcomes], invalidate_snapshot=False
    )


JOB_INBOX = Inbox(
    name="fiches.progressive_fetch",
    pending_prefix="progressive-fetch-outcomes",
    lock_prefix="progressive-fetch-job",
    lock_seconds=lambda: settings.PROGRESSIVE_FETCH_JOB_LOCK_SECONDS,
    apply=_apply_reported,
    is_applied=lambda job_id, outcome: outcome_is_applied(job_id=job_id, outcome=DayOutcome.from_json(outcome)),
    touch=lambda job_id: [version_key(job_id)],  # the status snapshot, invalidated after each pass's commit
)


# --- The reconciler ---------------------------------------------------------------------------


def _time_out(job: ProgressiveFetchJob) -> bool:
    if not progressive_fetch_finalize_now(job_id=str(job.pk), reason="timed out (no progress)"):
        return False
    trace("reconcile_timed_out", job_id=job.pk, level=logging.WARNING)
    return True


def _finish(job: ProgressiveFetchJob) -> bool:
    if not progressive_fetch_finalize_if_done(job_id=str(job.pk)):
        return False
    trace("reconcile_finalized", job_id=job.pk)
    return True


def _mark_redriven(job: ProgressiveFetchJob, now: datetime) -> None:
    ProgressiveFetchJob.objects.filter(pk=job.pk).update(redriven_at=now)
    trace("reconcile_redrive", job_id=job.pk, level=logging.WARNING, remaining=len(job.dates_remaining))


RECONCILER: Reconciler[ProgressiveFetchJob] = Reconciler(
    name="progressive_fetch",
    stall_seconds=lambda: settings.PROGRESSIVE_FETCH_STALL_SECONDS,
    deadline_seconds=lambda: settings.PROGRESSIVE_FETCH_DEADLINE_SECONDS,
    time_out=_time_out,
    is_done=lambda job: not job.dates_remaining,
    finish=_finish,
    mark_redriven=_mark_redriven,
    names={"finished": "finalized"},
)


def progressive_fetch_reconcile(*, now: datetime | None = None) -> dict[str, list[str]]:
    """Make every unfinished job end (the reconciler beat task; ``RECONCILER``):

    - no progress (no date applied) for ``PROGRESSIVE_FETCH_DEADLINE_SECONDS``: remaining dates
      marked failed ("timed out"), the job ends failed. A job that keeps progressing is never
      timed out, however long it runs;
    - nothing remaining but not finalized: finalized;
    - no progress for ``PROGRESSIVE_FETCH_STALL_SECONDS`` since its last progress or re-drive (or
      never dispatched): returned under ``redrive`` for the caller to re-dispatch (idempotent).
    """
    unfinished = ProgressiveFetchJob.objects.filter(status__in=[JobStatus.PENDING, JobStatus.PROCESSING]).only(
        "id", "status", "created_at", "dispatched_at", "last_progress_at", "redriven_at", "dates_remaining"
    )
    return RECONCILER.run(unfinished, now=now)
