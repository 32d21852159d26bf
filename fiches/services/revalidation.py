"""Fetching sales lists from the CRM into the cache: per day (progressive jobs) and per range
(warm-cache with a 5-day chunk fallback), with the limits the original had in Inngest, rebuilt
on Redis: one CRM fetch per date at a time, a global CRM call rate, and the staleness policy of
scheduled warmups."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection
from django.utils import timezone

from core.limits import LimitBusy, RateLimiter, throttle_crm_requests
from core.locks import LockNotAcquired, redis_lock
from fiches import selectors
from fiches.clients import crm
from fiches.services.cache import cache_fiche_sales_summaries, record_sales_date_error

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("fiches.revalidation")


def date_lock_ttl() -> float:
    return settings.CRM_FETCH_LEASE_SECONDS


def crm_rate_limiter() -> RateLimiter:
    return RateLimiter("crm-calls", rate=settings.CRM_RATE_LIMIT)


@contextmanager
def date_locks(days: list[date]) -> Iterator[None]:
    """Hold the fetch lock of every date (sorted, so two ranges never deadlock); one busy date
    raises ``LockNotAcquired`` and releases the others."""
    with ExitStack() as stack:
        for day in sorted(set(days)):
            stack.enter_context(redis_lock(f"date-fetch:{day.isoformat()}", timeout=date_lock_ttl()))
        yield


def _fetch(
    start: date, end: date, crm_gate: Callable[[], AbstractContextManager], max_wait: float
) -> tuple[list[dict], datetime]:
    """One CRM call, inside the caller's gate and the global CRM rate (waiting up to
    ``max_wait`` seconds, else ``LimitBusy``). Returns the sales and when the call started (the
    time the data is as of, and the fence of the write that follows)."""
    with crm_gate():
        crm_rate_limiter().acquire(max_wait=max_wait)
        started = timezone.now()
        return crm.fetch_sales_with_calls(start, end), started


# --- Per day --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayRefresh:
    fetched: bool  # the CRM was called
    fiches: int
    skipped: str | None = None  # why ``check`` said not to fetch the date


def sales_day_refresh(
    *,
    day: date,
    force: bool = False,
    job_id: str | None = None,
    crm_gate: Callable[[], AbstractContextManager] = nullcontext,
    max_wait: float = 1.0,
    check: Callable[[], tuple[str | None, bool]] | None = None,
) -> DayRefresh:
    """Cache ``day``'s sales list from the CRM unless it is covered and not forced.

    Holds the date's Redis lock (one CRM fetch per date across all jobs and warmups) and checks
    coverage once it has its turn. Raises ``LockNotAcquired`` when another fetch of the date runs,
    ``LimitBusy`` when a global limit is saturated, and the CRM client's errors. ``crm_gate`` wraps
    the CRM call only (a slot is held for the call, not for the database write that follows).
    ``check``, if given, replaces the coverage check (under the date's lock): ``(reason to skip the
    date or None, covered)`` — the caller's own conditions and the coverage in one statement.
    """
    with date_locks([day]):
        if check is not None:
            skip, covered = check()
            if skip is not None:
                return DayRefresh(fetched=False, fiches=0, skipped=skip)
        else:
            covered = not force and selectors.is_date_covered(day)
        if not force and covered:
            return DayRefresh(fetched=False, fiches=0)
        if force:
            logger.info("force_refresh_refetching_cached_date", extra={"job_id": job_id, "date": day.isoformat()})
        sales, fetched_at = _fetch(day, day, crm_gate, max_wait)
        result = cache_fiche_sales_summaries(sales, revalidated_at=fetched_at, covered_dates=[day])
        return DayRefresh(fetched=True, fiches=result.fiches)


# --- Per range (warm-cache) -----------------------------------------------------------------


@dataclass
class ChunkOutcome:
    start: date
    end: date
    ok: bool
    fiches: int = 0
    error: str | None = None

    def as_dict(self) -> dict:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "ok": self.ok,
            "fiches": self.fiches,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ChunkOutcome:
        return cls(
            date.fromisoformat(data["start"]),
            date.fromisoformat(data["end"]),
            bool(data["ok"]),
            int(data["fiches"]),
            data["error"],
        )


@dataclass
class WarmSummary:
    start: date
    end: date
    mode: str = "range"  # "range" (one call), "chunks" (fallback) or "prefetched"
    chunks: list[ChunkOutcome] = field(default_factory=list)

    @property
    def chunks_ok(self) -> int:
        return sum(c.ok for c in self.chunks)

    @property
    def chunks_failed(self) -> int:
        return sum(not c.ok for c in self.chunks)

    @property
    def fiches_cached(self) -> int:
        return sum(c.fiches for c in self.chunks)

    @property
    def dates_covered(self) -> list[date]:
        return [d for c in self.chunks if c.ok for d in selectors.dates_between(c.start, c.end)]

    def as_dict(self) -> dict:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "mode": self.mode,
            "chunks_ok": self.chunks_ok,
            "chunks_failed": self.chunks_failed,
            "fiches_cached": self.fiches_cached,
            "dates_covered": [d.isoformat() for d in self.dates_covered],
            "failed_chunks": [
                {"start": c.start.isoformat(), "end": c.end.isoformat(), "error": c.error}
                for c in self.chunks
                if not c.ok
            ],
        }


class WarmPaused(Exception):
    """The warm-cache has to wait (a busy date, or a saturated CRM rate) in the middle of its
    work. Waiting is not a failure: the caller waits ``retry_after`` seconds and calls again with
    ``resume=paused.state``, which goes on with the chunks not done yet (finished chunks are
    never fetched again)."""

    def __init__(self, state: dict, retry_after: float):
        super().__init__(f"warm-cache waiting {retry_after:.2f}s ({len(state.get('pending', []))} chunk(s) left)")
        self.state = state
        self.retry_after = retry_after


def chunks_of(start: date, end: date, size: int) -> list[tuple[date, date]]:
    days = selectors.dates_between(start, end)
    return [(days[i], days[min(i + size, len(days)) - 1]) for i in range(0, len(days), size)]


def _cache_range(start: date, end: date, sales: list[dict], fetched_at: datetime) -> int:
    return cache_fiche_sales_summaries(
        sales, revalidated_at=fetched_at, covered_dates=selectors.dates_between(start, end)
    ).fiches


def _wait_of(exc: Exception) -> float:
    return exc.retry_after if isinstance(exc, LimitBusy) else random.uniform(0.5, 2.0)


def cache_sales_list(
    *,
    start: date,
    end: date,
    sales_data: list[dict] | None = None,
    on_chunk: Callable[[ChunkOutcome], None] | None = None,
    max_wait: float = 1.0,
    resume: dict | None = None,
) -> WarmSummary:
    """Warm the cache for a range without a job.

    With ``sales_data`` (prefetched items in the CRM's shape), they are validated and cached
    without calling the CRM. Otherwise one CRM call for the whole range; on a transient failure,
    5-day chunks (``SALES_LIST_CHUNK_DAYS``) are fetched and cached independently: a failing
    chunk does not stop the others and its dates record the error. The dates being fetched are
    locked (one fetch per date at a time). A busy date or a saturated CRM rate raises
    ``WarmPaused`` (resume with its state; before any chunk, a plain ``LockNotAcquired`` /
    ``LimitBusy`` is raised: nothing was done yet).
    """
    summary = WarmSummary(start=start, end=end)

    def done(outcome: ChunkOutcome) -> None:
        summary.chunks.append(outcome)
        if on_chunk:
            on_chunk(outcome)

    if sales_data is not None:
        summary.mode = "prefetched"
        try:
            sales = [crm.validate_sale(item, f"sales_data[{i}]") for i, item in enumerate(sales_data)]
        except crm.InvalidSale as exc:
            raise crm.CrmPermanentError(f"Prefetched sales data breaks the contract: {exc}") from None
        with date_locks(selectors.dates_between(start, end)):
            done(ChunkOutcome(start, end, ok=True, fiches=_cache_range(start, end, sales, timezone.now())))
        return summary

    if resume is None:
        try:
            with date_locks(selectors.dates_between(start, end)):
                sales, fetched_at = _fetch(start, end, nullcontext, max_wait)
                done(ChunkOutcome(start, end, ok=True, fiches=_cache_range(start, end, sales, fetched_at)))
            return summary
        except crm.CrmTransientError as exc:
            logger.warning(
                "sales_list_range_failed_falling_back_to_chunks",
                extra={"start": start.isoformat(), "end": end.isoformat(), "error": str(exc)},
            )
        pending = chunks_of(start, end, settings.SALES_LIST_CHUNK_DAYS)
    else:
        summary.chunks = [ChunkOutcome.from_dict(c) for c in resume.get("done", [])]
        pending = [(date.fromisoformat(a), date.fromisoformat(b)) for a, b in resume["pending"]]
    summary.mode = "chunks"
    while pending:
        chunk_start, chunk_end = pending[0]
        try:
            with date_locks(selectors.dates_between(chunk_start, chunk_end)):
                sales, fetched_at = _fetch(chunk_start, chunk_end, nullcontext, max_wait)
                fiches = _cache_range(chunk_start, chunk_end, sales, fetched_at)
            done(ChunkOutcome(chunk_start, chunk_end, ok=True, fiches=fiches))
        except (LimitBusy, LockNotAcquired) as exc:
            state = {
                "mode": "chunks",
                "done": [c.as_dict() for c in summary.chunks],
                "pending": [[a.isoformat(), b.isoformat()] for a, b in pending],
            }
            raise WarmPaused(state, _wait_of(exc)) from None
        except crm.CrmError as exc:
            for day in selectors.dates_between(chunk_start, chunk_end):
                record_sales_date_error(day=day, error=str(exc))
            done(ChunkOutcome(chunk_start, chunk_end, ok=False, error=str(exc)))
        pending.pop(0)
    logger.info("sales_list_warmed", extra=summary.as_dict() | {"dates_covered": len(summary.dates_covered)})
    return summary


def cache_warm_request(*, user: User, start: date, end: date) -> str:
    """``POST /api/fiches/cache/warm``: a CRM-bound request, counted in the user's CRM request rate;
    the warm runs in the background. Returns the task id."""
    from fiches.tasks import cache_sales_list as warm_task

    throttle_crm_requests(user)
    return warm_task.delay(start.isoformat(), end.isoformat()).id


# --- Staleness policy -------------------------------------------------------------------------

DATE_IS_TODAY, NEVER_VALIDATED, STALE_CACHE, CACHE_FRESH = (
    "date_is_today",
    "never_validated",
    "stale_cache",
    "cache_fresh",
)
REVALIDATE_REASONS = frozenset({DATE_IS_TODAY, NEVER_VALIDATED, STALE_CACHE})


def should_revalidate(day: date, last_revalidated_at: datetime | None, *, now: datetime | None = None) -> str:
    """Why (or why not) a date's cache should be revalidated: ``date_is_today``,
    ``never_validated`` or ``stale_cache`` (older than ``CACHE_STALE_AFTER_HOURS``) → yes;
    ``cache_fresh`` → no."""
    now = now or timezone.now()
    if day == timezone.localdate(now):
        return DATE_IS_TODAY
    if last_revalidated_at is None:
        return NEVER_VALIDATED
    if now - last_revalidated_at > timedelta(hours=settings.CACHE_STALE_AFTER_HOURS):
        return STALE_CACHE
    return CACHE_FRESH


_LAST_REVALIDATED = """
SELECT d::date,
       COALESCE(s.last_fetched_at,
                (SELECT min(f.last_revalidated_at) FROM fiche_cache f WHERE f.sales_date = d::date))
FROM generate_series(%(start)s::date, %(end)s::date, interval '1 day') AS d
LEFT JOIN fiche_sales_dates s ON s.sales_date = d::date
ORDER BY 1
"""


def last_revalidated_by_date(start: date, end: date) -> dict[date, datetime | None]:
    """When each date was last revalidated: its fetch state, else the oldest revalidation of its
    fiches (by sales date, never by row creation time)."""
    with connection.cursor() as cursor:
        cursor.execute(_LAST_REVALIDATED, {"start": start, "end": end})
        return dict(cursor.fetchall())


def dates_to_warm(*, now: datetime | None = None) -> dict[date, str]:
    """Today and the last ``CACHE_WARMUP_DAYS`` dates that the policy selects, with the reason."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    start = today - timedelta(days=settings.CACHE_WARMUP_DAYS)
    reasons = {
        day: should_revalidate(day, last, now=now) for day, last in last_revalidated_by_date(start, today).items()
    }
    return {day: reason for day, reason in reasons.items() if reason in REVALIDATE_REASONS}
