"""Writes to the fiche cache.

``cache_fiche_sales_summaries`` caches a whole sales list (a day or a range) in a handful of
set-based statements: rows are COPY'd into temporary tables, then upserted with
``INSERT … ON CONFLICT`` for fiches, recordings and per-date state. Invariants:

- never overwrites full details: a fiche whose details were fetched keeps them and its
  ``raw_data``; only the summary columns, ``sales_date`` and ``last_revalidated_at`` move;
- idempotent: the same list with the same ``revalidated_at`` leaves identical rows (an upsert
  only touches a row when a value differs);
- ``recordings_count`` / ``has_recordings`` equal the recordings stored for the fiche;
- ``last_revalidated_at`` is bumped (never moved back) for every fiche in the list;
- additive: recordings are never deleted;
- every date of ``covered_dates`` is marked fetched, even when its list was empty.

``fiche_details_persist`` stores one fiche's full details (sections, mail_devis, recordings).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from fiches.models import DETAIL_SECTIONS, FicheCache, FicheCacheDetails, FicheCacheMailDevis
from fiches.selectors import bump_cache_version

logger = logging.getLogger("fiches.cache")

SALES_LIST_ONLY = "_salesListOnly"
_RECORDING_COLUMNS = (
    "call_id",
    "recording_url",
    "started_at",
    "duration_seconds",
    "direction",
    "from_number",
    "to_number",
)


@dataclass(frozen=True)
class CacheResult:
    fiches: int
    recordings: int
    dates: list[date]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _str_or_none(value: Any) -> str | None:
    return value if value is None or value.__class__ is str else str(value)


_RECORDING_KEYS = frozenset(_RECORDING_COLUMNS)


def _recording_row(fiche_id: str, rec: dict) -> tuple:
    get = rec.get
    duration = get("duration_seconds")
    extras = (
        "{}" if rec.keys() <= _RECORDING_KEYS else _json({k: v for k, v in rec.items() if k not in _RECORDING_KEYS})
    )
    return (
        str(rec["call_id"]),
        fiche_id,
        _str_or_none(get("recording_url")),
        _str_or_none(get("started_at")),
        None if duration is None else float(duration),
        _str_or_none(get("direction")),
        _str_or_none(get("from_number")),
        _str_or_none(get("to_number")),
        extras,
    )


def _copy(cursor: CursorWrapper, table: str, columns: str, rows: Iterable[tuple]) -> None:
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


_REC_TEMP = """
CREATE TEMP TABLE _rec_in (
    call_id text, fiche_ext text, recording_url text, started_at timestamptz,
    duration_seconds double precision, direction text, from_number text, to_number text, raw_data jsonb
) ON COMMIT DROP
"""
_REC_COLUMNS = (
    "call_id, fiche_ext, recording_url, started_at, duration_seconds, direction, from_number, to_number, raw_data"
)
# Fiches whose recordings may change in this call: the owners of the incoming recordings, and the
# fiches a recording moves away from. Only those are recounted.
_TOUCHED_TEMP = "CREATE TEMP TABLE _rec_touched (fiche_id bigint) ON COMMIT DROP"
_TOUCHED = """
INSERT INTO _rec_touched (fiche_id)
SELECT r.fiche_id FROM recordings r JOIN _rec_in i ON i.call_id = r.call_id JOIN fiche_cache f ON f.id = r.fiche_id
WHERE f.fiche_id <> i.fiche_ext
UNION
SELECT f.id FROM fiche_cache f WHERE f.fiche_id IN (SELECT fiche_ext FROM _rec_in)
"""
_REC_UPSERT = """
INSERT INTO recordings AS r (
    call_id, fiche_id, recording_url, started_at, duration_seconds, direction, from_number, to_number,
    raw_data, created_at, updated_at
)
SELECT i.call_id, f.id, i.recording_url, i.started_at, i.duration_seconds, i.direction, i.from_number,
       i.to_number, i.raw_data, now(), now()
FROM _rec_in i JOIN fiche_cache f ON f.fiche_id = i.fiche_ext
ORDER BY i.call_id
ON CONFLICT (call_id) DO UPDATE SET
    fiche_id = EXCLUDED.fiche_id,
    recording_url = EXCLUDED.recording_url,
    started_at = EXCLUDED.started_at,
    duration_seconds = EXCLUDED.duration_seconds,
    direction = EXCLUDED.direction,
    from_number = EXCLUDED.from_number,
    to_number = EXCLUDED.to_number,
    raw_data = EXCLUDED.raw_data,
    updated_at = EXCLUDED.updated_at
WHERE (r.fiche_id, r.recording_url, r.started_at, r.duration_seconds, r.direction, r.from_number,
       r.to_number, r.raw_data)
   IS DISTINCT FROM (EXCLUDED.fiche_id, EXCLUDED.recording_url, EXCLUDED.started_at,
       EXCLUDED.duration_seconds, EXCLUDED.direction, EXCLUDED.from_number, EXCLUDED.to_number,
       EXCLUDED.raw_data)
"""
# Recount the touched fiches; rows whose count is already right are left alone.
_RECOUNT = """
UPDATE fiche_cache f
SET recordings_count = c.n, has_recordings = c.n > 0, updated_at = now()
FROM (
    SELECT t.fiche_id AS id, count(r.id) AS n
    FROM _rec_touched t LEFT JOIN recordings r ON r.fiche_id = t.fiche_id
    GROUP BY t.fiche_id
) c
WHERE f.id = c.id AND (f.recordings_count <> c.n OR f.has_recordings <> (c.n > 0))
"""

_FICHE_TEMP = """
CREATE TEMP TABLE _fiche_in (
    fiche_id text, cle text, sales_date date, groupe text, crm_user_id text, agent_name text,
    prospect_nom text, prospect_prenom text, statut text, produit text, raw_data jsonb, rec_count int
) ON COMMIT DROP
"""
_FICHE_COLUMNS = (
    "fiche_id, cle, sales_date, groupe, crm_user_id, agent_name, prospect_nom, prospect_prenom, statut, produit, "
    "raw_data"
)
_SUMMARY = (
    "cle",
    "sales_date",
    "groupe",
    "crm_user_id",
    "agent_name",
    "prospect_nom",
    "prospect_prenom",
    "statut",
    "produit",
)
_FICHE_UPSERT = f"""
INSERT INTO fiche_cache AS f (
    {_FICHE_COLUMNS}, last_revalidated_at, recordings_count, has_recordings, created_at, updated_at
)
SELECT {_FICHE_COLUMNS}, %(revalidated_at)s, rec_count, rec_count > 0, now(), now()
FROM _fiche_in ORDER BY fiche_id
ON CONFLICT (fiche_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _SUMMARY)},
    raw_data = CASE WHEN f.details_fetched_at IS NULL THEN EXCLUDED.raw_data ELSE f.raw_data END,
    last_revalidated_at = GREATEST(f.last_revalidated_at, EXCLUDED.last_revalidated_at),
    updated_at = EXCLUDED.updated_at
WHERE ({", ".join(f"f.{c}" for c in _SUMMARY)}) IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in _SUMMARY)})
   OR f.last_revalidated_at IS NULL OR f.last_revalidated_at < EXCLUDED.last_revalidated_at
   OR (f.details_fetched_at IS NULL AND f.raw_data IS DISTINCT FROM EXCLUDED.raw_data)
"""
_DATES_UPSERT = """
INSERT INTO fiche_sales_dates AS d (sales_date, last_fetched_at, fiche_count, last_error, last_error_at)
SELECT t.d, %(fetched_at)s, t.n, NULL, NULL FROM unnest(%(dates)s::date[], %(counts)s::int[]) AS t(d, n)
ORDER BY t.d
ON CONFLICT (sales_date) DO UPDATE SET
    last_fetched_at = GREATEST(d.last_fetched_at, EXCLUDED.last_fetched_at),
    fiche_count = EXCLUDED.fiche_count,
    last_error = NULL,
    last_error_at = NULL
WHERE d.last_fetched_at IS NULL OR d.last_fetched_at < EXCLUDED.last_fetched_at
   OR d.fiche_count <> EXCLUDED.fiche_count OR d.last_error IS NOT NULL
"""


def _fiche_row(sale: dict, rec_count: int) -> tuple:
    prospect = sale.get("prospect") or {}
    raw = {k: v for k, v in sale.items() if k != "recordings"}
    raw[SALES_LIST_ONLY] = True
    return (
        str(sale["fiche_id"]),
        _str_or_none(sale.get("cle")),
        sale["sales_date"],
        _str_or_none(sale.get("groupe")),
        _str_or_none(sale.get("crm_user_id")),
        _str_or_none(sale.get("agent_name")),
        _str_or_none(prospect.get("nom")),
        _str_or_none(prospect.get("prenom")),
        _str_or_none(sale.get("statut")),
        _str_or_none(sale.get("produit")),
        _json(raw),
        rec_count,
    )


def _upsert_recordings(cursor: CursorWrapper, rows: Sequence[tuple]) -> None:
    """Upsert recordings (deduplicated by call id) and recount the fiches they touch."""
    if not rows:
        return
    cursor.execute(_REC_TEMP)
    cursor.execute(_TOUCHED_TEMP)
    _copy(cursor, "_rec_in", _REC_COLUMNS, rows)
    cursor.execute(_TOUCHED)
    cursor.execute(_REC_UPSERT)
    cursor.execute(_RECOUNT)
    cursor.execute("DROP TABLE _rec_in, _rec_touched")


def _dedupe_recordings(rows: Iterable[tuple]) -> list[tuple]:
    """One row per call id (the last wins: bad upstream data must not break ON CONFLICT)."""
    return list({row[0]: row for row in rows}.values())


_DATES_LOCK = """
INSERT INTO fiche_sales_dates (sales_date, fiche_count)
SELECT d, 0 FROM unnest(%(dates)s::date[]) AS d ORDER BY d
ON CONFLICT (sales_date) DO NOTHING
"""
_DATES_NEWER = """
SELECT sales_date, last_fetched_at FROM fiche_sales_dates
WHERE sales_date = ANY(%(dates)s::date[]) ORDER BY sales_date FOR UPDATE
"""
_MOVED_FROM = """
SELECT DISTINCT f.sales_date FROM fiche_cache f JOIN _fiche_in i ON i.fiche_id = f.fiche_id
WHERE f.sales_date <> i.sales_date
"""


def _lock_dates(cursor: CursorWrapper, dates: list[date], fetched_at: datetime) -> set[date]:
    """Lock the dates' fetch-state rows (in date order: two writers never deadlock) and return the
    dates a strictly newer fetch has already written: the fence behind the Redis date lock, so a
    fetch that outlived its lock cannot commit an older sales list over a newer one."""
    cursor.execute(_DATES_LOCK, {"dates": dates})
    cursor.execute(_DATES_NEWER, {"dates": dates})
    return {day for day, last in cursor.fetchall() if last is not None and last > fetched_at}


@transaction.atomic
def cache_fiche_sales_summaries(
    fiches: Sequence[dict],
    *,
    revalidated_at: datetime,
    covered_dates: Iterable[date] | None = None,
) -> CacheResult:
    """Cache a sales list (validated items of the CRM client) and mark its dates fetched.

    ``revalidated_at``: when the list was fetched (the start of the CRM call). A date whose state
    shows a strictly newer fetch keeps that newer data: this list's fiches of that date are not
    written and the date is not marked again. ``covered_dates``: the dates the list was fetched
    for (so that an empty day counts as covered); defaults to the sales dates present in the list.
    """
    by_id: dict[str, dict] = {}
    for sale in fiches:  # the same fiche twice in one list: the last one wins
        by_id[str(sale["fiche_id"])] = sale

    def sale_day(sale: dict) -> date:
        value = sale["sales_date"]
        return value if isinstance(value, date) else date.fromisoformat(value)

    requested = sorted(set(covered_dates) if covered_dates is not None else {sale_day(s) for s in by_id.values()})
    with connection.cursor() as cursor:
        newer = _lock_dates(cursor, sorted(set(requested) | {sale_day(s) for s in by_id.values()}), revalidated_at)
        if newer:
            logger.warning(
                "sales_list_older_than_cache_skipped",
                extra={"dates": [d.isoformat() for d in sorted(newer)], "fetched_at": revalidated_at.isoformat()},
            )
            by_id = {k: sale for k, sale in by_id.items() if sale_day(sale) not in newer}
        sales = list(by_id.values())
        counts: dict[date, int] = {}
        for sale in sales:
            counts[sale_day(sale)] = counts.get(sale_day(sale), 0) + 1
        dates = [d for d in requested if d not in newer]
        recording_rows = _dedupe_recordings(
            _recording_row(fiche_id, rec) for fiche_id, sale in by_id.items() for rec in sale.get("recordings") or ()
        )
        rec_counts: dict[str, int] = {}
        for row in recording_rows:
            rec_counts[row[1]] = rec_counts.get(row[1], 0) + 1

        touched = set(dates) | set(counts)
        if sales:
            cursor.execute(_FICHE_TEMP)
            _copy(
                cursor,
                "_fiche_in",
                f"{_FICHE_COLUMNS}, rec_count",
                (_fiche_row(s, rec_counts.get(str(s["fiche_id"]), 0)) for s in sales),
            )
            cursor.execute(_MOVED_FROM)
            touched |= {row[0] for row in cursor.fetchall()}  # a fiche leaving a date changes that date too
            cursor.execute(_FICHE_UPSERT, {"revalidated_at": revalidated_at})
            cursor.execute("DROP TABLE _fiche_in")
            _upsert_recordings(cursor, recording_rows)
        if dates:
            cursor.execute(
                _DATES_UPSERT,
                {"fetched_at": revalidated_at, "dates": dates, "counts": [counts.get(d, 0) for d in dates]},
            )
    transaction.on_commit(lambda: bump_cache_version(touched))
    logger.info(
        "sales_list_cached",
        extra={
            "fiches": len(sales),
            "recordings": len(recording_rows),
            "dates": len(dates),
            "start": dates[0].isoformat() if dates else None,
            "end": dates[-1].isoformat() if dates else None,
        },
    )
    return CacheResult(fiches=len(sales), recordings=len(recording_rows), dates=dates)


def record_sales_date_error(*, day: date, error: str) -> None:
    """Remember why fetching a date failed (does not make the date covered)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO fiche_sales_dates (sales_date, fiche_count, last_error, last_error_at) "
            "VALUES (%s, 0, %s, now()) ON CONFLICT (sales_date) DO UPDATE SET "
            "last_error = EXCLUDED.last_error, last_error_at = EXCLUDED.last_error_at",
            [day, error[:2000]],
        )


@transaction.atomic
def fiche_details_persist(*, envelope: dict, fetched_at: datetime | None = None) -> FicheCache:
    """Store the full details of one fiche (the validated envelope of the CRM client)."""
    fetched_at = fetched_at or timezone.now()
    fiche = envelope["fiche"]
    information = fiche["information"]
    previous_day = (
        FicheCache.objects.filter(fiche_id=information["fiche_id"]).values_list("sales_date", flat=True).first()
    )
    prospect = fiche.get("prospect") or {}
    known = {*DETAIL_SECTIONS, "mail_devis", "recordings"}
    raw = {k: v for k, v in fiche.items() if k not in known}
    raw[SALES_LIST_ONLY] = False
    row, _ = FicheCache.objects.select_for_update().update_or_create(
        fiche_id=information["fiche_id"],
        defaults={
            "cle": envelope.get("cle"),
            "sales_date": information["sales_date"],
            "groupe": _str_or_none(information.get("groupe")),
            "crm_user_id": _str_or_none(information.get("crm_user_id")),
            "agent_name": _str_or_none(information.get("agent_name")),
            "prospect_nom": _str_or_none(prospect.get("nom")),
            "prospect_prenom": _str_or_none(prospect.get("prenom")),
            "statut": _str_or_none(information.get("statut")),
            "produit": _str_or_none(information.get("produit")),
            "raw_data": raw,
            "details_success": bool(envelope.get("success", True)),
            "details_message": (envelope.get("message") or "")[:255] or None,
            "details_fetched_at": fetched_at,
        },
    )
    FicheCacheDetails.objects.update_or_create(
        fiche=row,
        defaults={
            **{section: fiche.get(section) for section in DETAIL_SECTIONS if section != "information"},
            "information": information,
            "present_sections": list(fiche.keys()),
        },
    )
    if "mail_devis" in fiche:
        FicheCacheMailDevis.objects.update_or_create(fiche=row, defaults={"content": fiche["mail_devis"]})
    else:
        FicheCacheMailDevis.objects.filter(fiche=row).delete()
    with connection.cursor() as cursor:
        _upsert_recordings(
            cursor, _dedupe_recordings(_recording_row(row.fiche_id, rec) for rec in fiche.get("recordings") or ())
        )
    row.refresh_from_db()
    touched = {row.sales_date} | ({previous_day} if previous_day else set())
    transaction.on_commit(lambda: bump_cache_version(touched))
    logger.info("fiche_details_cached", extra={"fiche_id": row.fiche_id, "recordings": row.recordings_count})
    return row
