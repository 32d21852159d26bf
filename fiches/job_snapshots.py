"""A job's shapes (the Pusher payload, the polling dict) and its status snapshot in Redis.

The job status endpoints answer from a snapshot in Redis, valid while the job's version key is
unchanged. Every write to a job bumps the version (``job_changed``: now and after commit), so a poll
never shows an older state than the database once a change has committed.

Imports nothing of the fiches app (``fiches.models`` imports it for its bulk-update hook; the
selectors read snapshots through it); a job is anything with the job's attributes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
from django.db import transaction
from redis.exceptions import RedisError

from core.redis import get_redis

logger = logging.getLogger("fiches.job_snapshots")

# A ``fiches.models.ProgressiveFetchJob`` (or anything with its attributes); not imported, even for typing:
# ``fiches.models`` imports this module.
ProgressiveFetchJob = Any

JOB_SNAPSHOT_SECONDS = 60
VERSION_SECONDS = 24 * 3600


# --- Shapes -----------------------------------------------------------------------------------


def derived_status(job: ProgressiveFetchJob) -> str:
    """The original's defensive status: ``processing`` at 100 % with nothing remaining reads as
    ``complete`` (or ``failed`` when a date failed), even if finalization has not run yet."""
    if job.status == "processing" and job.progress == 100 and not job.dates_remaining:
        return "failed" if job.dates_failed else "complete"
    return job.status


def _iso_dates(values: Iterable[date], iso: Mapping[date, str] | None = None) -> list[str]:
    if iso is None:
        return [d.isoformat() for d in sorted(values)]
    return [iso.get(d) or d.isoformat() for d in sorted(values)]


def job_payload(job: ProgressiveFetchJob, *, iso: Mapping[date, str] | None = None) -> dict:
    """The job in the field names of the ``fiches.progressive_fetch.*`` Pusher payloads (``iso``: the
    ISO strings of the job's dates, when the caller renders many payloads of one job)."""
    return {
        "jobId": str(job.id),
        "status": derived_status(job),
        "startDate": job.start_date.isoformat(),
        "endDate": job.end_date.isoformat(),
        "progress": job.progress,
        "completedDays": job.completed_days,
        "totalDays": job.total_days,
        "totalFiches": job.total_fiches,
        "datesCompleted": _iso_dates(job.dates_already_fetched, iso),
        "datesRemaining": _iso_dates(job.dates_remaining, iso),
        "datesFailed": _iso_dates(job.dates_failed, iso),
    }


def job_dict(job: ProgressiveFetchJob) -> dict:
    """Polling / inspection shape: the Pusher fields plus refresh marker, error and timestamps."""
    return {
        **job_payload(job),
        "forceRefresh": job.force_refresh,
        "error": job.error,
        "createdAt": job.created_at.isoformat() if job.created_at else None,
        "startedAt": job.started_at.isoformat() if job.started_at else None,
        "completedAt": job.completed_at.isoformat() if job.completed_at else None,
    }


# --- Invalidation -----------------------------------------------------------------------------


def _keys(job_id: object) -> tuple[str, str]:
    return f"pf-job-version:{job_id}", f"pf-job-snapshot:{job_id}"


def version_key(job_id: object) -> str:
    """The key whose increment invalidates the job's snapshot (the jobs' inbox increments it after each
    updater pass: ``core.inbox.Inbox.touch``)."""
    return _keys(job_id)[0]


def _bump_version(job_id: object) -> None:
    version_key, _ = _keys(job_id)
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.incr(version_key)
        pipe.expire(version_key, VERSION_SECONDS)
        pipe.execute()
    except RedisError:
        logger.warning("job_snapshot_invalidation_failed", extra={"job_id": str(job_id)})


def job_changed(job_id: object) -> None:
    """Invalidate the job's snapshot (call on every write to the job)."""
    _bump_version(job_id)
    transaction.on_commit(lambda: _bump_version(job_id))


# --- Snapshots ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobView:
    """What the status endpoints show of a job (``data``: ``job_dict``)."""

    data: dict
    owner_id: int | None
    start_date: date
    end_date: date
    webhook_configured: bool


def view_of(job: ProgressiveFetchJob) -> JobView:
    return JobView(job_dict(job), job.requested_by_id, job.start_date, job.end_date, bool(job.webhook_url))


def read_snapshot(job_id: object) -> tuple[int, JobView | None]:
    """``(version, view)``: the job's current version and its snapshot when the snapshot is of that
    version (one Redis round trip); ``(0, None)`` when Redis is unavailable."""
    version_key, snapshot_key = _keys(job_id)
    try:
        raw_version, raw = get_redis().mget(version_key, snapshot_key)
    except RedisError:
        return 0, None
    version = int(raw_version or 0)
    if raw is None:
        return version, None
    entry: dict[str, Any] = orjson.loads(raw)
    if entry["v"] != version:
        return version, None
    view = JobView(
        entry["data"],
        entry["owner"],
        date.fromisoformat(entry["start"]),
        date.fromisoformat(entry["end"]),
        entry["webhook"],
    )
    return version, view


def store_snapshot(job_id: object, version: int, view: JobView) -> None:
    """Keep ``view`` as the job's snapshot of ``version`` (read before the database was): a write
    in between bumped the version, so the entry is never taken for a newer state."""
    entry = {
        "v": version,
        "data": view.data,
        "owner": view.owner_id,
        "start": view.start_date.isoformat(),
        "end": view.end_date.isoformat(),
        "webhook": view.webhook_configured,
    }
    try:
        get_redis().set(_keys(job_id)[1], orjson.dumps(entry), ex=JOB_SNAPSHOT_SECONDS)
    except RedisError:
        pass
