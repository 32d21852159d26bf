"""Reads of the fiche cache: coverage, scope-filtered range reads, details reconstruction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection

from accounts.grants import Scope, scope_for
from accounts.permissions import filter_by_scope, scope_queryset
from config.exceptions import NotFoundError, PermissionDeniedError
from config.redis import get_redis
from fiches.models import DETAIL_SECTIONS, FicheCache, ProgressiveFetchJob, Recording


def dates_between(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


@dataclass(frozen=True)
class Coverage:
    covered: list[date]
    missing: list[date]

    @property
    def complete(self) -> bool:
        return not self.missing


_COVERED_DATES = """
SELECT sales_date FROM fiche_sales_dates
WHERE sales_date BETWEEN %(start)s AND %(end)s AND last_fetched_at IS NOT NULL
UNION
SELECT DISTINCT sales_date FROM fiche_cache WHERE sales_date BETWEEN %(start)s AND %(end)s
"""


def date_range_coverage(start: date, end: date) -> Coverage:
    """Dates of ``start``..``end`` already covered (fetched, or holding fiche rows) and missing."""
    with connection.cursor() as cursor:
        cursor.execute(_COVERED_DATES, {"start": start, "end": end})
        covered = {row[0] for row in cursor.fetchall()}
    days = dates_between(start, end)
    return Coverage(covered=[d for d in days if d in covered], missing=[d for d in days if d not in covered])


def is_date_covered(day: date) -> bool:
    return bool(date_range_coverage(day, day).covered)


# --- Range reads --------------------------------------------------------------------------

RANGE_FIELDS = (
    "fiche_id",
    "cle",
    "sales_date",
    "groupe",
    "crm_user_id",
    "agent_name",
    "prospect_nom",
    "prospect_prenom",
    "statut",
    "produit",
    "recordings_count",
    "has_recordings",
    "details_fetched_at",
    "last_revalidated_at",
)


def _range_queryset(user, start: date, end: date):
    queryset = FicheCache.objects.filter(sales_date__range=(start, end))
    return scope_queryset(queryset, user, "fiches").order_by("sales_date", "fiche_id").values(*RANGE_FIELDS)


def fiches_for_range(user, start: date, end: date) -> list[dict]:
    """Cached fiches of the range the user may see (``fiches`` scope), as plain dicts ready for
    orjson, ordered by (sales date, fiche id)."""
    return list(_range_queryset(user, start, end))


CACHE_VERSION_KEY = "fiche-cache:version"


def _scope_key(user) -> str:
    scope = scope_for(user, "fiches", "read")
    if scope == Scope.GROUP:
        return "GROUP:" + ",".join(sorted(user.groupes or []))
    if scope == Scope.SELF:
        return f"SELF:{user.crm_user_id or ''}"
    return str(scope) if scope else "NONE"


def fiches_for_range_json(user, start: date, end: date) -> tuple[bytes, int]:
    """The same fiches, already rendered as a JSON array by Postgres (no Python object per row),
    and their count: the hot path of the range endpoint.

    Rendered arrays are kept in Redis for ``RANGE_RESPONSE_CACHE_SECONDS`` under the cache's data
    version (bumped after every committed cache write), the range and the caller's scope, so a
    repeated read costs one Redis GET and a write is visible to the next read.
    """
    ttl = settings.RANGE_RESPONSE_CACHE_SECONDS
    key = None
    if ttl > 0:
        redis = get_redis()
        version = int(redis.get(CACHE_VERSION_KEY) or 0)
        key = f"fiche-range-json:{version}:{_scope_key(user)}:{start}:{end}"
        cached = redis.get(key)
        if cached is not None:
            count, _, body = cached.partition(b"\n")
            return body, int(count)
    queryset = _range_queryset(user, start, end).order_by()  # json_agg orders
    if queryset.query.is_empty():
        return b"[]", 0
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT coalesce(json_agg(t ORDER BY t.sales_date, t.fiche_id), '[]')::text, count(*) FROM ({sql}) t",
            params,
        )
        text, count = cursor.fetchone()
    body = text.encode()
    if key is not None:
        get_redis().set(key, str(count).encode() + b"\n" + body, ex=ttl)
    return body, count


def bump_cache_version() -> None:
    """Invalidate rendered range responses (call after a committed write to the fiche cache)."""
    get_redis().incr(CACHE_VERSION_KEY)


# --- One fiche ----------------------------------------------------------------------------


def fiche_row(fiche_id: str) -> FicheCache | None:
    return FicheCache.objects.filter(fiche_id=fiche_id).first()


def _iso_z(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def recording_dict(rec: Recording) -> dict:
    """A recording in the gateway's shape."""
    duration = rec.duration_seconds
    if duration is not None and float(duration).is_integer():
        duration = int(duration)
    return {
        "call_id": rec.call_id,
        "recording_url": rec.recording_url,
        "started_at": _iso_z(rec.started_at),
        "duration_seconds": duration,
        "direction": rec.direction,
        "from_number": rec.from_number,
        "to_number": rec.to_number,
        **(rec.raw_data or {}),
    }


def recordings_for(fiche: FicheCache) -> list[dict]:
    return [recording_dict(r) for r in fiche.recordings.order_by("started_at", "call_id")]


def fiche_payload(fiche: FicheCache, *, include_mail_devis: bool = False) -> dict:
    """The gateway's details envelope rebuilt from the cache.

    With full details: exactly the gateway's ``fiche`` (same sections, same order), with
    ``mail_devis`` only when asked for. With only the sales list: the summary the list gave
    (``information`` and ``prospect`` from it, and the recordings).
    """
    if fiche.details_fetched_at is None:
        raw = fiche.raw_data or {}
        information = {
            k: raw.get(k)
            for k in ("fiche_id", "sales_date", "groupe", "crm_user_id", "agent_name", "statut", "produit")
        }
        information["fiche_id"], information["sales_date"] = fiche.fiche_id, fiche.sales_date.isoformat()
        body = {"information": information, "prospect": raw.get("prospect") or {}, "recordings": recordings_for(fiche)}
        return {"success": True, "message": "Sales list only", "cle": fiche.cle, "fiche": body}

    details = fiche.details
    body: dict = {}
    for section in details.present_sections:
        if section == "recordings":
            body["recordings"] = recordings_for(fiche)
        elif section == "mail_devis":
            if include_mail_devis:
                mail = getattr(fiche, "mail_devis", None)
                body["mail_devis"] = mail.content if mail is not None else None
        elif section in DETAIL_SECTIONS:
            body[section] = getattr(details, section)
        else:
            body[section] = (fiche.raw_data or {}).get(section)
    return {"success": bool(fiche.details_success), "message": fiche.details_message, "cle": fiche.cle, "fiche": body}


# --- Progressive fetch jobs ---------------------------------------------------------------


def derived_status(job) -> str:
    """The original's defensive status: ``processing`` at 100 % with nothing remaining reads as
    ``complete`` (or ``failed`` when a date failed), even if finalization has not run yet."""
    if job.status == "processing" and job.progress == 100 and not job.dates_remaining:
        return "failed" if job.dates_failed else "complete"
    return job.status


def _iso_dates(values) -> list[str]:
    return [d.isoformat() for d in sorted(values)]


def job_payload(job) -> dict:
    """The job in the field names of the ``fiches.progressive_fetch.*`` Pusher payloads."""
    return {
        "jobId": str(job.id),
        "status": derived_status(job),
        "startDate": job.start_date.isoformat(),
        "endDate": job.end_date.isoformat(),
        "progress": job.progress,
        "completedDays": job.completed_days,
        "totalDays": job.total_days,
        "totalFiches": job.total_fiches,
        "datesCompleted": _iso_dates(job.dates_already_fetched),
        "datesRemaining": _iso_dates(job.dates_remaining),
        "datesFailed": _iso_dates(job.dates_failed),
    }


def job_dict(job) -> dict:
    """Polling / inspection shape: the Pusher fields plus refresh marker, error and timestamps."""
    return {
        **job_payload(job),
        "forceRefresh": job.force_refresh,
        "error": job.error,
        "createdAt": job.created_at.isoformat() if job.created_at else None,
        "startedAt": job.started_at.isoformat() if job.started_at else None,
        "completedAt": job.completed_at.isoformat() if job.completed_at else None,
    }


def visible_jobs(user):
    """Jobs the user may see: every job with ``fiches`` scope ALL, else the jobs they requested
    (the same rule as ``job_for_user``)."""
    queryset = ProgressiveFetchJob.objects.all()
    if scope_for(user, "fiches", "read") == Scope.ALL:
        return queryset
    return queryset.filter(requested_by=user)


def job_for_user(user, job_id) -> ProgressiveFetchJob:
    """The job, or 404 ``job_not_found`` / 403 ``permission_denied`` when it is not the user's."""
    try:
        job = ProgressiveFetchJob.objects.filter(pk=job_id).first()
    except (ValueError, ValidationError):
        job = None
    if job is None:
        raise NotFoundError(f"No job {job_id}.", code="job_not_found", details={"jobId": str(job_id)})
    if job.requested_by_id != user.pk and scope_for(user, "fiches", "read") != Scope.ALL:
        raise PermissionDeniedError("This job belongs to another user.", details={"jobId": str(job_id)})
    return job


PARTIAL_FIELDS = ("fiche_id", "sales_date", "prospect_nom", "prospect_prenom", "groupe", "recordings_count")


def partial_fiches_for_job(job, *, limit: int) -> tuple[list[dict], bool]:
    """The cached fiches of the job's range filtered by the scope snapshot stored on the job (not
    the live user), at most ``limit`` of them; and whether more exist."""
    queryset = filter_by_scope(
        FicheCache.objects.filter(sales_date__range=(job.start_date, job.end_date)),
        job.scope_kind,
        groupes=job.scope_groupes,
        crm_user_id=job.scope_crm_user_id,
    ).order_by("sales_date", "fiche_id")
    rows = list(queryset.values(*PARTIAL_FIELDS)[: limit + 1])
    return rows[:limit], len(rows) > limit
