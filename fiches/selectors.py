"""Reads of the fiche cache: coverage, scope-filtered range reads, details reconstruction."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet
from redis.exceptions import RedisError

from accounts.grants import Action, Scope, scope_for
from accounts.permissions import filter_by_scope, scope_queryset
from core.exceptions import NotFoundError, PermissionDeniedError
from core.redis import get_redis
from fiches import job_snapshots
from fiches.job_snapshots import JobView
from fiches.models import DETAIL_SECTIONS, FicheCache, ProgressiveFetchJob, Recording

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("fiches.selectors")


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
"""


def date_range_coverage(start: date, end: date) -> Coverage:
    """Dates of ``start``..``end`` already covered and missing. A date is covered only when its
    sales list was fetched (``fiche_sales_dates``), never because some fiche fetched by id happens
    to have that sales date: that one fiche says nothing about the date's other sales."""
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


def _range_queryset(user: User, start: date, end: date) -> QuerySet[FicheCache, dict[str, Any]]:
    queryset = FicheCache.objects.filter(sales_date__range=(start, end))
    return scope_queryset(queryset, user, "fiches").order_by("sales_date", "fiche_id").values(*RANGE_FIELDS)


def fiches_for_range(user: User, start: date, end: date) -> list[dict]:
    """Cached fiches of the range the user may see (``fiches`` scope), as plain dicts ready for
    orjson, ordered by (sales date, fiche id)."""
    return list(_range_queryset(user, start, end))


DATE_VERSION_PREFIX = "fiche-cache:version:"


def _date_version_keys(days: Iterable[date]) -> list[str]:
    return [f"{DATE_VERSION_PREFIX}{day.isoformat()}" for day in days]


def _scope_key(user: User) -> str:
    scope = scope_for(user, "fiches", "read")
    if scope == Scope.GROUP:
        return "GROUP:" + ",".join(sorted(user.groupes or []))
    if scope == Scope.SELF:
        return f"SELF:{user.crm_user_id or ''}"
    return str(scope) if scope else "NONE"


# One round trip: read the range's per-date versions, derive the entry's key from them, and GET
# it. (The entry key is not among KEYS: fine on a single Redis, not on a cluster.)
_RENDERED_LOOKUP = """
local versions = redis.call('MGET', unpack(KEYS))
for i = 1, #versions do
  if not versions[i] then versions[i] = '0' end
end
local key = ARGV[1] .. redis.sha1hex(table.concat(versions, ','))
return {key, redis.call('GET', key)}
"""


def _rendered_lookup(user: User, start: date, end: date, page: str) -> tuple[str, bytes | None]:
    """The Redis key of a rendered range (the range, the caller's scope, the page, and the data
    versions of the range's dates: a write elsewhere leaves it valid) and its cached value."""
    prefix = f"fiche-range-json:{start}:{end}:{_scope_key(user)}:{page}:"
    script = get_redis().register_script(_RENDERED_LOOKUP)
    key, value = script(keys=_date_version_keys(dates_between(start, end)), args=[prefix])
    return key.decode(), value


@dataclass(frozen=True)
class RenderedFiches:
    body: bytes  # a JSON array rendered by Postgres
    count: int  # rows in ``body``
    next_cursor: str | None = None  # set when more rows follow (``limit`` reached)


def encode_cursor(sales_date: date, fiche_id: str) -> str:
    return base64.urlsafe_b64encode(f"{sales_date.isoformat()}|{fiche_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[date, str]:
    """``(sales_date, fiche_id)`` of the last row already returned; ``ValueError`` when malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        day, _, fiche_id = raw.partition("|")
        if not fiche_id:
            raise ValueError("no fiche id")
        return date.fromisoformat(day), fiche_id
    except (UnicodeDecodeError, binascii.Error, ValueError) as exc:
        raise ValueError(f"malformed cursor ({exc})") from None


def _render(queryset: QuerySet[FicheCache, dict[str, Any]], limit: int | None) -> RenderedFiches:
    queryset = queryset.order_by("sales_date", "fiche_id")
    if limit is not None:
        queryset = queryset[: limit + 1]
    if queryset.query.is_empty():
        return RenderedFiches(b"[]", 0)
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(json_agg(t ORDER BY t.sales_date, t.fiche_id) FILTER (WHERE t.n <= %s), '[]')::text,"
            " count(*) FILTER (WHERE t.n <= %s), count(*),"
            " (array_agg(t.sales_date ORDER BY t.sales_date DESC, t.fiche_id DESC) FILTER (WHERE t.n <= %s))[1],"
            " (array_agg(t.fiche_id ORDER BY t.sales_date DESC, t.fiche_id DESC) FILTER (WHERE t.n <= %s))[1]"
            f" FROM (SELECT s.*, row_number() OVER (ORDER BY s.sales_date, s.fiche_id) AS n FROM ({sql}) s) t",
            [*[limit if limit is not None else 2**31 - 1] * 4, *params],
        )
        text, count, total, last_day, last_id = cursor.fetchone()
    more = limit is not None and total > limit
    return RenderedFiches(text.encode(), count, encode_cursor(last_day, last_id) if more else None)


def fiches_for_range_json(
    user: User, start: date, end: date, *, limit: int | None = None, after: tuple[date, str] | None = None
) -> RenderedFiches:
    """The same fiches, already rendered as a JSON array by Postgres (no Python object per row):
    the hot path of the range and polling endpoints. ``limit``/``after`` page them (in (sales
    date, fiche id) order; ``next_cursor`` says where the next page starts).

    Rendered pages are kept in Redis for ``RANGE_RESPONSE_CACHE_SECONDS`` under the range's
    per-date data versions (each bumped after a committed write to that date) and the caller's
    scope, so a repeated read costs two Redis round trips, a write to the range is visible to the
    next read, and writes to other dates leave the entry valid. With Redis unavailable the range
    is rendered from Postgres every time.
    """
    ttl = settings.RANGE_RESPONSE_CACHE_SECONDS
    key = None
    if ttl > 0:
        page = f"{limit or 'all'}:{after[0].isoformat() + '|' + after[1] if after else ''}"
        try:
            key, cached = _rendered_lookup(user, start, end, hashlib.blake2b(page.encode(), digest_size=8).hexdigest())
        except RedisError:
            logger.warning("range_cache_unavailable", extra={"start": str(start), "end": str(end)})
            key, cached = None, None
        if cached is not None:
            head, _, body = cached.partition(b"\n")
            count, _, next_cursor = head.decode().partition(" ")
            return RenderedFiches(body, int(count), next_cursor or None)
    queryset = _range_queryset(user, start, end)
    if after is not None:
        queryset = queryset.filter(Q(sales_date__gt=after[0]) | Q(sales_date=after[0], fiche_id__gt=after[1]))
    rendered = _render(queryset, limit)
    if key is not None:
        head = f"{rendered.count} {rendered.next_cursor or ''}".encode()
        try:
            get_redis().set(key, head + b"\n" + rendered.body, ex=ttl)
        except RedisError:
            pass
    return rendered


def bump_cache_version(days: Iterable[date]) -> None:
    """Invalidate the rendered ranges that include any of ``days`` (call after a committed write
    to the fiche cache for those dates). Redis down: logged; rendered entries expire anyway."""
    keys = _date_version_keys(sorted(set(days)))
    if not keys:
        return
    try:
        pipe = get_redis().pipeline(transaction=False)
        for key in keys:
            pipe.incr(key)
        pipe.execute()
    except RedisError:
        logger.warning("range_cache_version_bump_failed", extra={"dates": len(keys)})


# --- One fiche ----------------------------------------------------------------------------


def fiche_row(fiche_id: str) -> FicheCache | None:
    return FicheCache.objects.filter(fiche_id=fiche_id).first()


def fiche_in_scope(user: Any, key: str, fiche_id: str, *, action: str = "read") -> FicheCache | None:
    """The cached fiche ``user`` may ``action`` under ``key`` — checked before any CRM call or cache write.

    Scope is decided on what we hold: a user without ALL scope gets the same ``scope_denied`` for a fiche
    outside their scope and for one that is not cached (unknown, or not fetched yet: we cannot prove it is
    theirs without calling the CRM), so no refusal tells a foreign id from an unknown one. With ALL scope
    every fiche is theirs: ``None`` means not cached, and the caller may fetch it."""
    from accounts.permissions import can_access
    from fiches.exceptions import fiche_refused

    fiche_id = str(fiche_id).strip()
    checked: Action = "read" if action == "read" else "write"
    row = fiche_row(fiche_id)
    if row is None:
        if scope_for(user, key, checked) != Scope.ALL:
            raise fiche_refused(fiche_id, key)
        return None
    if not can_access(user, key, row, action=checked):
        raise fiche_refused(fiche_id, key)
    return row


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
        summary = {
            "information": information,
            "prospect": raw.get("prospect") or {},
            "recordings": recordings_for(fiche),
        }
        return {"success": True, "message": "Sales list only", "cle": fiche.cle, "fiche": summary}

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


def _done_but_not_finalized() -> Q:
    return Q(status="processing", progress=100, dates_remaining=[])


def filter_jobs_by_status(queryset: QuerySet[ProgressiveFetchJob], status: str) -> QuerySet[ProgressiveFetchJob]:
    """Jobs whose **shown** (derived) status is ``status`` (see ``job_snapshots.derived_status``)."""
    done = _done_but_not_finalized()
    if status == "complete":
        return queryset.filter(Q(status="complete") | (done & Q(dates_failed=[])))
    if status == "failed":
        return queryset.filter(Q(status="failed") | (done & ~Q(dates_failed=[])))
    if status == "processing":
        return queryset.filter(status="processing").exclude(done)
    return queryset.filter(status=status)


def visible_jobs(user: User) -> QuerySet[ProgressiveFetchJob]:
    """Jobs the user may see: every job with ``fiches`` scope ALL, else the jobs they requested
    (the same rule as ``job_for_user``)."""
    queryset = ProgressiveFetchJob.objects.all()
    if scope_for(user, "fiches", "read") == Scope.ALL:
        return queryset
    return queryset.filter(requested_by=user)


_JOB_COLUMNS = [f.attname for f in ProgressiveFetchJob._meta.concrete_fields]
_JOB_BY_ID = f"SELECT {', '.join(_JOB_COLUMNS)} FROM {ProgressiveFetchJob._meta.db_table} WHERE id = %s"


def _job_by_id(job_id: uuid.UUID) -> ProgressiveFetchJob | None:
    """One plain SQL statement (no ORM query compilation: the status endpoints are hot)."""
    with connection.cursor() as cursor:
        cursor.execute(_JOB_BY_ID, [job_id])
        row = cursor.fetchone()
    return None if row is None else ProgressiveFetchJob.from_db("default", _JOB_COLUMNS, row)


def _job_uuid(job_id: object) -> uuid.UUID | None:
    try:
        return job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        return None


def _check_job_visible(user: User, job_id: object, owner_id: int | None) -> None:
    if owner_id != user.pk and scope_for(user, "fiches", "read") != Scope.ALL:
        raise PermissionDeniedError("This job belongs to another user.", details={"jobId": str(job_id)})


def _job_not_found(job_id: object) -> NotFoundError:
    return NotFoundError(f"No job {job_id}.", code="job_not_found", details={"jobId": str(job_id)})


def job_for_user(user: User, job_id: object) -> ProgressiveFetchJob:
    """The job, or 404 ``job_not_found`` / 403 ``permission_denied`` when it is not the user's."""
    key = _job_uuid(job_id)
    job = _job_by_id(key) if key is not None else None
    if job is None:
        raise _job_not_found(job_id)
    _check_job_visible(user, job_id, job.requested_by_id)
    return job


def job_view_for_user(user: User, job_id: object) -> JobView:
    """``job_for_user`` for the status endpoints, from the job's snapshot when it is current (one
    Redis round trip), else from the database (and the snapshot refreshed)."""
    key = _job_uuid(job_id)
    if key is None:
        raise _job_not_found(job_id)
    version, view = job_snapshots.read_snapshot(key)
    if view is None:
        job = _job_by_id(key)
        if job is None:
            raise _job_not_found(job_id)
        view = job_snapshots.view_of(job)
        job_snapshots.store_snapshot(key, version, view)
    _check_job_visible(user, job_id, view.owner_id)
    return view


PARTIAL_FIELDS = ("fiche_id", "sales_date", "prospect_nom", "prospect_prenom", "groupe", "recordings_count")


def partial_fiches_for_job(job: ProgressiveFetchJob, *, limit: int) -> tuple[list[dict], bool]:
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
