"""Celery tasks of the fiches app: thin wrappers that re-load by id and call one service.

Tasks whose name starts with ``fiches.tasks.crm.`` call the CRM and are routed to the ``crm``
queue (config/celery.py).
"""

from __future__ import annotations

import logging
import random
from datetime import date

import orjson
from celery import chord, shared_task
from django.conf import settings

from core.limits import LimitBusy, RateLimiter, Semaphore
from core.locks import LockNotAcquired, redis_lock
from core.redis import get_redis
from core.retry import (
    INFRA_MAX_ERRORS,
    TRANSIENT_INFRA_ERRORS,
    error_budget_left,
    retry_after_error,
    retry_waiting,
)
from fiches.clients.crm import CrmPermanentError, CrmTransientError
from fiches.models import ProgressiveFetchJob
from fiches.services import jobs, revalidation
from fiches.services.cache import record_sales_date_error
from fiches.services.details import fiche_ensure_details
from fiches.services.revalidation import date_lock_ttl, sales_day_refresh
from fiches.workflow_log import trace

logger = logging.getLogger("fiches.tasks")

FICHE_FETCH_MAX_ERRORS = 5


@shared_task(bind=True, name="fiches.tasks.crm.fiche_fetch")
def fiche_fetch(self, fiche_id: str, force_refresh: bool = False, error_attempts: int = 0) -> dict:
    """Fetch and persist one fiche's details (idempotent; one at a time per fiche).

    A fetch of the same fiche already running makes this one wait its turn, then usually find
    the details cached. Transient CRM errors retry with backoff, at most 5 times.
    """
    try:
        outcome = fiche_ensure_details(fiche_id=str(fiche_id), force_refresh=force_refresh)
    except LockNotAcquired:
        raise retry_waiting(self, countdown=2) from None
    except LimitBusy as exc:
        raise retry_waiting(self, countdown=max(0.2, exc.retry_after) + random.uniform(0, 0.2)) from None
    except CrmTransientError as exc:
        if not error_budget_left(self, max_errors=FICHE_FETCH_MAX_ERRORS):
            logger.error("fiche_fetch_failed", extra={"fiche_id": fiche_id, "error": str(exc)})
            raise
        logger.warning("fiche_fetch_retry", extra={"fiche_id": fiche_id, "error": str(exc), "attempt": error_attempts})
        raise retry_after_error(self, exc) from None
    return {
        "fiche_id": outcome.row.fiche_id,
        "fetched": outcome.fetched,
        "refresh_skipped": outcome.refresh_skipped,
        "recordings": outcome.row.recordings_count,
    }


# --- Progressive fetch jobs ----------------------------------------------------------------


@shared_task(
    name="fiches.tasks.progressive_fetch_continue",
    ignore_result=True,
    autoretry_for=TRANSIENT_INFRA_ERRORS,
    retry_backoff=True,
    retry_backoff_max=10,
    max_retries=INFRA_MAX_ERRORS,
)
def progressive_fetch_continue(job_id: str, redrive: bool = False) -> int:
    """Orchestrator: one day task per remaining date, as a chord whose body is a finalizer."""
    dates = jobs.progressive_fetch_dispatch(job_id=job_id, redrive=redrive)
    if dates:
        job = ProgressiveFetchJob.objects.only("force_refresh").get(pk=job_id)
        chord(progressive_fetch_day.si(job_id, d.isoformat(), job.force_refresh) for d in dates)(
            progressive_fetch_finalize.si(job_id)
        )
    return len(dates)


def day_semaphore() -> Semaphore:
    return Semaphore(
        "progressive-fetch-days", limit=settings.PROGRESSIVE_FETCH_DAY_CONCURRENCY, lease_seconds=date_lock_ttl()
    )


@shared_task(bind=True, name="fiches.tasks.crm.progressive_fetch_day")
def progressive_fetch_day(
    self,
    job_id: str,
    day: str,
    force_refresh: bool = False,
    error_attempts: int = 0,
    outcome: list | None = None,
    infra_attempts: int = 0,
) -> dict:
    """Fetch and cache one date of a job, then hand the outcome to the job's updater.

    A date whose outcome the job already has (a re-driven or duplicate task) is not fetched again.
    Waits (never drops) when the global day cap is reached (``PROGRESSIVE_FETCH_DAY_CONCURRENCY``
    CRM day fetches at once across all workers) or the date is being fetched by someone else.
    Transient CRM errors retry with backoff within an error budget; after the last one, or on a
    permanent error, the date is reported failed. A transient database or Redis error retries
    the same way; one while handing the outcome over retries only the hand-over (``outcome``
    carries it, the date is not fetched again). Always returns normally so the chord completes.
    """
    the_day = date.fromisoformat(day)
    pending = outcome  # [ok, error] once the date is fetched
    fetched = False
    try:
        if pending is None:
            job = jobs.day_task_context(job_id=job_id, day=the_day)
            if job.finished:
                return {"date": day, "skipped": "job is finished or gone"}
            if job.day_done:
                return {"date": day, "skipped": "outcome already applied"}
            ok, error, fetched = _fetch_day(self, job_id, the_day, force_refresh)
            pending = [ok, error]
            if not ok:
                record_sales_date_error(day=the_day, error=error or "failed")
            trace("day_finished", job_id=job_id, day=day, ok=ok, fetched=fetched, error=error)
        report_day_outcome(job_id, day, bool(pending[0]), pending[1])
    except TRANSIENT_INFRA_ERRORS as exc:
        if error_budget_left(self, max_errors=INFRA_MAX_ERRORS, counter="infra_attempts"):
            logger.warning("day_infra_retry", extra={"job_id": job_id, "date": day, "error": str(exc)})
            raise retry_after_error(
                self, exc, base=0.5, cap=10.0, counter="infra_attempts", extra_kwargs={"outcome": pending}
            ) from None
        logger.error("day_infra_failed", extra={"job_id": job_id, "date": day, "error": str(exc)})
        return {"date": day, "ok": False, "error": f"infrastructure unavailable: {exc}"}  # the reconciler re-drives
    return {"date": day, "ok": pending[0], "fetched": fetched, "error": pending[1]}


def _fetch_day(task, job_id: str, the_day: date, force_refresh: bool) -> tuple[bool, str | None, bool]:
    """The CRM part of a day task: ``(ok, error, fetched)``, or a retry raised for waits and
    transient CRM errors within the error budget."""
    day = the_day.isoformat()
    holder = f"{job_id}:{day}"
    try:
        trace("day_started", job_id=job_id, day=day, force=force_refresh, attempt=task.request.retries)
        outcome = sales_day_refresh(
            day=the_day,
            force=force_refresh,
            job_id=job_id,
            crm_gate=lambda: day_semaphore().slot(holder, wait=1.0),
        )
        return True, None, outcome.fetched
    except LockNotAcquired:
        raise retry_waiting(task, countdown=random.uniform(0.2, 1.0)) from None
    except LimitBusy as exc:
        raise retry_waiting(task, countdown=max(0.2, exc.retry_after) + random.uniform(0, 0.2)) from None
    except CrmPermanentError as exc:
        return False, str(exc), True
    except TRANSIENT_INFRA_ERRORS:
        raise
    except Exception as exc:  # transient CRM errors, and anything unexpected
        if not isinstance(exc, CrmTransientError):
            logger.exception("day_unexpected_error", extra={"job_id": job_id, "date": day})
        if error_budget_left(task, max_errors=settings.PROGRESSIVE_FETCH_DAY_MAX_ERRORS):
            logger.warning(
                "day_retry",
                extra={
                    "job_id": job_id,
                    "date": day,
                    "error": str(exc),
                    "attempt": int(task.request.kwargs.get("error_attempts", 0)) + 1,
                },
            )
            raise retry_after_error(task, exc, base=settings.PROGRESSIVE_FETCH_RETRY_BASE_SECONDS) from None
        return False, f"{type(exc).__name__}: {exc}", True


def _outcomes_key(job_id: str) -> str:
    return f"progressive-fetch-outcomes:{job_id}"


def report_day_outcome(job_id: str, day: str, ok: bool, error: str | None) -> None:
    """Hand a day's outcome to the job's updater.

    The outcome goes into the job's pending list in Redis; then the day task runs the updater
    itself (same code, same locks) if it gets the job's lock within a moment, applying every
    pending outcome in one transaction. If it cannot (or Redis or the database fails), the outcome
    is handed over as a durable updater task message instead: the Redis list is only an
    accelerator. Raises only when that message cannot be sent either (the caller retries).
    """
    try:
        redis = get_redis()
        key = _outcomes_key(job_id)
        redis.rpush(key, orjson.dumps([day, ok, error]))
        redis.expire(key, 24 * 3600)
        apply_pending_outcomes(job_id, jobs.DayOutcome(date.fromisoformat(day), ok, error), wait=0.5)
        return
    except LockNotAcquired:
        pass
    except TRANSIENT_INFRA_ERRORS:  # the durable message still carries it
        logger.warning("inline_update_failed", exc_info=True, extra={"job_id": job_id, "date": day})
    progressive_fetch_update_job.delay(job_id, day, ok, error)


def apply_pending_outcomes(job_id: str, outcome: jobs.DayOutcome, *, wait: float) -> jobs.UpdateResult:
    """Under the job's Redis lock: apply ``outcome`` and every outcome pending in the list, in one
    transaction; trim the list only after the commit (a crash in between re-applies: no-ops)."""
    redis = get_redis()
    key = _outcomes_key(job_id)
    with redis_lock(f"progressive-fetch-job:{job_id}", timeout=settings.PROGRESSIVE_FETCH_JOB_LOCK_SECONDS, wait=wait):
        pending = redis.lrange(key, 0, -1)
        outcomes = [outcome] + [
            jobs.DayOutcome(date.fromisoformat(d), bool(o), e) for d, o, e in map(orjson.loads, pending)
        ]
        result = jobs.progressive_fetch_apply_outcomes(job_id=job_id, outcomes=outcomes)
        if pending:
            redis.ltrim(key, len(pending), -1)
        if result.finalized:
            redis.delete(key)
    return result


@shared_task(bind=True, name="fiches.tasks.progressive_fetch_update_job", ignore_result=True)
def progressive_fetch_update_job(
    self, job_id: str, day: str, ok: bool, error: str | None = None, infra_attempts: int = 0
) -> dict:
    """The per-job updater: serialized by a Redis lock keyed by the job id (the filter) and the
    job's row lock (the fence). A lock it cannot get in time means retry later, never a drop; so
    does a transient database or Redis error (bounded, with backoff). An outcome already applied
    (by an updater that drained the pending list) is a quick no-op."""
    outcome = jobs.DayOutcome(date.fromisoformat(day), ok, error)
    try:
        if jobs.outcome_is_applied(job_id=job_id, outcome=outcome):
            return {"changed": False, "finalized": False, "status": "already applied"}
        result = apply_pending_outcomes(job_id, outcome, wait=0.5)
    except LockNotAcquired:
        raise retry_waiting(self, countdown=random.uniform(0.1, 0.5)) from None
    except TRANSIENT_INFRA_ERRORS as exc:
        if not error_budget_left(self, max_errors=INFRA_MAX_ERRORS, counter="infra_attempts"):
            logger.error("updater_infra_failed", extra={"job_id": job_id, "date": day, "error": str(exc)})
            raise
        logger.warning("updater_infra_retry", extra={"job_id": job_id, "date": day, "error": str(exc)})
        raise retry_after_error(self, exc, base=0.5, cap=10.0, counter="infra_attempts") from None
    return {"changed": result.changed, "finalized": result.finalized, "status": result.status}


@shared_task(
    bind=True,
    name="fiches.tasks.progressive_fetch_finalize",
    ignore_result=True,
    autoretry_for=TRANSIENT_INFRA_ERRORS,
    retry_backoff=True,
    retry_backoff_max=10,
    max_retries=INFRA_MAX_ERRORS,
)
def progressive_fetch_finalize(self, job_id: str) -> bool:
    """Chord body: finalize the job if every date is processed and nobody finalized it yet."""
    try:
        with redis_lock(f"progressive-fetch-job:{job_id}", timeout=settings.PROGRESSIVE_FETCH_JOB_LOCK_SECONDS, wait=2):
            return jobs.progressive_fetch_finalize_if_done(job_id=job_id)
    except LockNotAcquired:
        raise retry_waiting(self, countdown=1) from None


# --- Warm-cache, revalidation, reconciliation ---------------------------------------------------


def _warm(task, start: str, end: str, sales_data: list | None = None, resume: dict | None = None) -> dict:
    """Run the range warm-cache for ``task``. Each run counts in ``CRM_REVALIDATION_RATE_LIMIT``
    (the original's per-function rate) before it starts. Waiting (the task's rate, busy dates, a
    saturated CRM rate) re-enqueues ``task`` itself: never dropped, and a run paused in the middle
    of its chunks resumes with the chunks not done yet."""
    if resume is None and sales_data is None:
        wait = RateLimiter(f"task:{task.name}", rate=settings.CRM_REVALIDATION_RATE_LIMIT).try_acquire()
        if wait > 0:
            raise retry_waiting(task, countdown=wait + random.uniform(0, 0.2))
    try:
        summary = revalidation.cache_sales_list(
            start=date.fromisoformat(start), end=date.fromisoformat(end), sales_data=sales_data, resume=resume
        )
    except revalidation.WarmPaused as paused:
        kwargs = {**task.request.kwargs, "resume": paused.state}
        raise retry_waiting(
            task, countdown=max(0.2, paused.retry_after) + random.uniform(0, 0.2), kwargs=kwargs
        ) from None
    except LockNotAcquired:
        raise retry_waiting(task, countdown=random.uniform(0.5, 2.0)) from None
    except LimitBusy as exc:
        raise retry_waiting(task, countdown=max(0.2, exc.retry_after) + random.uniform(0, 0.2)) from None
    return summary.as_dict()


@shared_task(bind=True, name="fiches.tasks.crm.cache_sales_list")
def cache_sales_list(self, start: str, end: str, sales_data: list | None = None, resume: dict | None = None) -> dict:
    """Warm the cache for a range (one CRM call, 5-day chunks on failure; or prefetched data)."""
    return _warm(self, start, end, sales_data, resume)


@shared_task(bind=True, name="fiches.tasks.crm.revalidate_date")
def revalidate_date(self, day: str, resume: dict | None = None) -> dict:
    """Revalidate one date (the range warm-cache for that day)."""
    return _warm(self, day, day, resume=resume)


@shared_task(name="fiches.tasks.warm_recent_sales_cache", ignore_result=True)
def warm_recent_sales_cache() -> dict:
    """Beat: revalidate today and the last CACHE_WARMUP_DAYS dates the staleness policy selects."""
    selected = revalidation.dates_to_warm()
    for day in sorted(selected):
        revalidate_date.delay(day.isoformat())
    trace("warmup_scheduled", dates=len(selected), reasons=",".join(sorted(set(selected.values()))))
    return {day.isoformat(): reason for day, reason in selected.items()}


@shared_task(name="fiches.tasks.reconcile_progressive_jobs", ignore_result=True)
def reconcile_progressive_jobs() -> dict:
    """Beat (every minute): every job ends. Stalled jobs get their remaining dates re-dispatched,
    jobs with nothing left are finalized, jobs past the deadline end failed ("timed out")."""
    actions = jobs.progressive_fetch_reconcile()
    for job_id in actions["redrive"]:
        progressive_fetch_continue.delay(job_id, redrive=True)
    return actions
