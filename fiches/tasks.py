"""Celery tasks of the fiches app: thin wrappers that re-load by id and call one service.

Tasks whose name starts with ``fiches.tasks.crm.`` call the CRM and are routed to the ``crm``
queue (config/celery.py).
"""

from __future__ import annotations

import logging
import random
from datetime import date

from celery import shared_task
from django.conf import settings

from core.dispatch import send
from core.inbox import report
from core.limits import LimitBusy, RateLimiter, Semaphore
from core.locks import LockNotAcquired
from core.retry import (
    INFRA_RETRY,
    TRANSIENT_INFRA_ERRORS,
    error_budget_left,
    retry_after_error,
    retry_infra,
    retry_waiting,
)
from core.tasks import apply_outcome
from fiches.clients.crm import CrmPermanentError, CrmTransientError
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


# --- Progressive fetch jobs (on the workflow kernel: core.dispatch, core.inbox, core.reconcile) ----------


@shared_task(name="fiches.tasks.progressive_fetch_continue", ignore_result=True, **INFRA_RETRY)
def progressive_fetch_continue(job_id: str, redrive: bool = False) -> int:
    """Orchestrator: one day task per remaining date (plain messages: the updater ends the job)."""
    return jobs.progressive_fetch_fan_out(job_id=job_id, redrive=redrive)


def day_semaphore() -> Semaphore:
    return Semaphore(
        "progressive-fetch-days", limit=settings.PROGRESSIVE_FETCH_DAY_CONCURRENCY, lease_seconds=date_lock_ttl()
    )


@shared_task(bind=True, name="fiches.tasks.crm.progressive_fetch_day", ignore_result=True)
def progressive_fetch_day(
    self,
    job_id: str,
    day: str,
    force_refresh: bool = False,
    error_attempts: int = 0,
    outcome: list | None = None,
    infra_attempts: int = 0,
) -> dict:
    """Fetch and cache one date of a job, then report the outcome to the job's inbox (``JOB_INBOX``).

    A date whose outcome the job already has (a re-driven or duplicate task), or of a job that ended,
    is not fetched again. Waits (never drops) when the global day cap is reached
    (``PROGRESSIVE_FETCH_DAY_CONCURRENCY`` CRM day fetches at once across all workers) or the date is
    being fetched by someone else. Transient CRM errors retry with backoff within an error budget;
    after the last one, or on a permanent error, the date is reported failed. A transient database
    or Redis error retries the same way; one while handing the outcome over retries only the
    hand-over (``outcome`` carries it, the date is not fetched again).
    """
    the_day = date.fromisoformat(day)
    pending = outcome  # [ok, error] once the date is fetched
    fetched = False
    try:
        if pending is None:
            ok, error, fetched, skipped = _fetch_day(self, job_id, the_day, force_refresh)
            if skipped is not None:
                return {"date": day, "skipped": skipped}
            pending = [ok, error]
            if not ok:
                record_sales_date_error(day=the_day, error=error or "failed")
            trace("day_finished", job_id=job_id, day=day, ok=ok, fetched=fetched, error=error)
        report(jobs.JOB_INBOX, job_id, [day, bool(pending[0]), pending[1]])
    except TRANSIENT_INFRA_ERRORS as exc:
        retry_infra(self, exc, keep={"outcome": pending})
        return {"date": day, "ok": False, "error": f"infrastructure unavailable: {exc}"}  # the reconciler re-drives
    return {"date": day, "ok": pending[0], "fetched": fetched, "error": pending[1]}


def _fetch_day(task, job_id: str, the_day: date, force_refresh: bool) -> tuple[bool, str | None, bool, str | None]:
    """The CRM part of a day task: ``(ok, error, fetched, skipped)`` — ``skipped`` says why the date was
    not fetched (the job ended, or has its outcome) — or a retry raised for waits and transient CRM
    errors within the error budget."""
    day = the_day.isoformat()
    holder = f"{job_id}:{day}"

    def check() -> tuple[str | None, bool]:  # under the date's lock, one statement
        context = jobs.day_task_context(job_id=job_id, day=the_day)
        if context.skip is None:
            trace("day_started", job_id=job_id, day=day, force=force_refresh, attempt=task.request.retries)
        return context.skip, context.covered

    try:
        refresh = sales_day_refresh(
            day=the_day,
            force=force_refresh,
            job_id=job_id,
            crm_gate=lambda: day_semaphore().slot(holder, wait=1.0),
            check=check,
        )
        return True, None, refresh.fetched, refresh.skipped
    except LockNotAcquired:
        raise retry_waiting(task, countdown=random.uniform(0.2, 1.0)) from None
    except LimitBusy as exc:
        raise retry_waiting(task, countdown=max(0.2, exc.retry_after) + random.uniform(0, 0.2)) from None
    except CrmPermanentError as exc:
        return False, str(exc), True, None
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
        return False, f"{type(exc).__name__}: {exc}", True, None


@shared_task(name="fiches.tasks.progressive_fetch_finalize", ignore_result=True, **INFRA_RETRY)
def progressive_fetch_finalize(job_id: str) -> bool:
    """Finalize the job if every date is processed and nobody finalized it yet. The updater ends a job
    itself and the reconciler is the safety net; this task serves the chord bodies of jobs dispatched
    by an earlier release (and operators)."""
    return jobs.progressive_fetch_finalize_if_done(job_id=job_id)


@shared_task(name="fiches.tasks.progressive_fetch_update_job", ignore_result=True)
def progressive_fetch_update_job(job_id: str, day: str, ok: bool, error: str | None = None, **_: object) -> None:
    """Updater messages sent by an earlier release: handed to the kernel's ``core.tasks.apply_outcome``."""
    apply_outcome.delay(jobs.JOB_INBOX.name, job_id, [day, ok, error])


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
        send(progressive_fetch_continue, job_id, redrive=True)  # a broker down: the next stall re-drives
    return actions
