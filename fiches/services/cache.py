"""Writes to the fiche cache.

``cache_fiche_sales_summaries`` caches a whole sales list (a day or a range) in a handful of
set-based statements: the rows go to Postgres as JSON (read by ``jsonb_to_recordset``) and are
upserted with ``INSERT … ON CONFLICT`` for fiches, recordings and per-date state. Invariants:

- never overwrites full details: a fiche whose details were fetched keeps them and its
  ``raw_data``; only the summary columns, ``sales_date`` and ``last_revalidated_at`` move;
- idempotent: the same list with the same ``revalidated_at`` leaves identical rows (an upsert
  only touches a row when a value differs);
- ``recordings_count`` / ``has_recordings`` equal the recordings stored for the fiche;
- ``last_revalidated_at`` is bumped (never moved back) for every fiche in the list;
- additive: recordings are never deleted;
- every date of ``covered_dates`` is marked fetched, even when its list was empty;
- an erased fiche (``erased_at``: its prospect's data was erased on request, ``privacy.erasure``) stays
  erased: its prospect columns stay empty, its ``raw_data`` is not replaced, its recordings are stored
  without numbers, URL or extra fields, and a details fetch stores the sale's ``information`` only.

``fiche_details_persist`` stores one fiche's full details (sections, mail_devis, recordings).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
import psycopg
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from fiches.models import (
    DETAIL_SECTIONS,
    ERASED_FICHE_KEEPS,
    FicheCache,
    FicheCacheDetails,
    FicheCacheMailDevis,
)
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
    """A recording as a row of ``_REC_IN_COLUMNS`` (``raw_data`` as JSON text)."""
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


# The incoming rows of a table reach Postgres in one of two ways (``_load``), under the same name so the
# statements below read either: a small list as one bound JSON parameter read by ``jsonb_to_recordset``
# in a CTE (no temporary table: its catalog work would cost more than a small write), a large one
# COPY'd into a temporary table (parsing megabytes of JSON cost more than COPY).
_COPY_ABOVE_ROWS = 2000
_REC_IN_COLUMNS = (
    "call_id text, fiche_ext text, recording_url text, started_at timestamptz, duration_seconds double precision, "
    "direction text, from_number text, to_number text, raw_data jsonb"
)
# Fiches whose recordings may change in this call: the owners of the incoming recordings, and the
# fiches a recording moves away from (read before the upsert). Only those are recounted.
#
# The joins from the incoming rows go through LATERAL subqueries fenced with OFFSET 0: one index lookup
# per incoming row, whatever the planner guesses of a function's rows, instead of a scan of
# ``recordings`` / ``fiche_cache`` per call (which made a job's cost grow with the cache's size).
_TOUCHED = """
SELECT r.fiche_id FROM _rec_in i
JOIN recordings r ON r.call_id = i.call_id JOIN fiche_cache f ON f.id = r.fiche_id
WHERE f.fiche_id <> i.fiche_ext
UNION
SELECT f.id FROM fiche_cache f WHERE f.fiche_id IN (SELECT fiche_ext FROM _rec_in)
"""
_REC_UPSERT = """
INSERT INTO recordings AS r (
    call_id, fiche_id, recording_url, started_at, duration_seconds, direction, from_number, to_number,
    raw_data, created_at, updated_at
)
SELECT i.call_id, f.id, CASE WHEN f.erased_at IS NULL THEN i.recording_url END, i.started_at, i.duration_seconds,
       i.direction, CASE WHEN f.erased_at IS NULL THEN i.from_number END,
       CASE WHEN f.erased_at IS NULL THEN i.to_number END,
       CASE WHEN f.erased_at IS NULL THEN i.raw_data ELSE '{}'::jsonb END, now(), now()
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
# Upsert the recordings and return the fiches to recount (their counts as read before the upsert).
_RECORDINGS = f"""
touched AS MATERIALIZED ({_TOUCHED}),
upserted AS ({_REC_UPSERT})
SELECT DISTINCT fiche_id FROM touched
"""
# Recount the touched fiches (one index lookup each); rows whose count is already right are left alone.
_RECOUNT = """
WITH counted AS MATERIALIZED (
    SELECT c.id, c.n FROM (
        SELECT f.id, f.recordings_count, f.has_recordings,
               (SELECT count(*) FROM recordings r WHERE r.fiche_id = f.id) AS n
        FROM fiche_cache f WHERE f.id = ANY(%(touched)s::bigint[])
        OFFSET 0
    ) c
    WHERE c.recordings_count <> c.n OR c.has_recordings <> (c.n > 0)
)
UPDATE fiche_cache f
SET recordings_count = counted.n, has_recordings = counted.n > 0, updated_at = now()
FROM counted WHERE f.id = counted.id
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
# The prospect's columns: an erased fiche (``erased_at``, privacy) keeps them empty whatever the CRM sends.
_PERSONAL = frozenset({"prospect_nom", "prospect_prenom"})


def _incoming(column: str) -> str:
    """The value an upsert writes to ``column`` of an existing fiche."""
    if column in _PERSONAL:
        return f"CASE WHEN f.erased_at IS NULL THEN EXCLUDED.{column} END"
    return f"EXCLUDED.{column}"


_FICHE_UPSERT = f"""
INSERT INTO fiche_cache AS f (
    {_FICHE_COLUMNS}, last_revalidated_at, recordings_count, has_recordings, created_at, updated_at
)
SELECT {_FICHE_COLUMNS}, %(revalidated_at)s, rec_count, rec_count > 0, now(), now()
FROM _fiche_in ORDER BY fiche_id
ON CONFLICT (fiche_id) DO UPDATE SET
    {", ".join(f"{c} = {_incoming(c)}" for c in _SUMMARY)},
    raw_data = CASE WHEN f.details_fetched_at IS NULL AND f.erased_at IS NULL THEN EXCLUDED.raw_data
                    ELSE f.raw_data END,
    last_revalidated_at = GREATEST(f.last_revalidated_at, EXCLUDED.last_revalidated_at),
    updated_at = EXCLUDED.updated_at
WHERE ({", ".join(f"f.{c}" for c in _SUMMARY)}) IS DISTINCT FROM ({", ".join(_incoming(c) for c in _SUMMARY)})
   OR f.last_revalidated_at IS NULL OR f.last_revalidated_at < EXCLUDED.last_revalidated_at
   OR (f.details_fetched_at IS NULL AND f.erased_at IS NULL AND f.raw_data IS DISTINCT FROM EXCLUDED.raw_data)
"""
# The dates fiches move away from (read before the upsert: a fiche leaving a date changes that date
# too), and the upsert.
_FICHES = f"""
moved AS MATERIALIZED (
    SELECT DISTINCT f.sales_date FROM _fiche_in i JOIN fiche_cache f ON f.fiche_id = i.fiche_id
    WHERE f.sales_date <> i.sales_date
),
upserted AS ({_FICHE_UPSERT})
SELECT sales_date FROM moved
"""
_FICHE_IN_COLUMNS = (
    "fiche_id text, cle text, sales_date date, groupe text, crm_user_id text, agent_name text, prospect_nom text, "
    "prospect_prenom text, statut text, produit text, raw_data jsonb, rec_count int"
)
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


def _summary(source: dict, prospect: dict) -> dict:
    """The summary columns of a fiche, from a sales-list entry or a details' ``information``."""
    get = source.get
    return {
        "sales_date": source["sales_date"],
        "groupe": _str_or_none(get("groupe")),
        "crm_user_id": _str_or_none(get("crm_user_id")),
        "agent_name": _str_or_none(get("agent_name")),
        "prospect_nom": _str_or_none(prospect.get("nom")),
        "prospect_prenom": _str_or_none(prospect.get("prenom")),
        "statut": _str_or_none(get("statut")),
        "produit": _str_or_none(get("produit")),
    }


def _fiche_row(sale: dict, rec_count: int) -> tuple:
    """A fiche of a sales list as a row of ``_FICHE_IN_COLUMNS`` (``raw_data`` as JSON text)."""
    prospect = sale.get("prospect") or {}
    raw = {k: v for k, v in sale.items() if k != "recordings"}
    raw[SALES_LIST_ONLY] = True
    return (
        str(sale["fiche_id"]),
        _str_or_none(sale.get("cle")),
        *_summary(sale, prospect).values(),
        _json(raw),
        rec_count,
    )


def _recount(touched: list[int]) -> None:
    if touched:
        with psycopg.Cursor(connection.connection) as bound:  # the ids bound, not quoted into the text
            bound.execute(_RECOUNT, {"touched": touched})


def _load(cursor: CursorWrapper, table: str, columns: str, rows: Sequence[tuple], statement: str, params: dict) -> list:
    """Run ``statement`` (the tail of a ``WITH``) over ``rows`` read as ``table`` (see ``_COPY_ABOVE_ROWS``)
    and return its rows. A JSON list goes as a bound parameter (the extended protocol, on a cursor of its
    own on the same connection and transaction): quoted into the SQL text, it would cost more to escape
    and for Postgres to parse than the statement itself."""
    if len(rows) <= _COPY_ABOVE_ROWS:
        names = [(c.split()[0], c.endswith(" jsonb")) for c in columns.split(", ")]
        objects = [
            {name: orjson.Fragment(v) if is_json else v for (name, is_json), v in zip(names, row, strict=True)}
            for row in rows
        ]
        with psycopg.Cursor(connection.connection) as bound:
            source = f"{table} AS MATERIALIZED (SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS x({columns}))"
            bound.execute(f"WITH {source},\n{statement}", {**params, "rows": _json(objects)})
            return bound.fetchall()
    cursor.execute(f"CREATE TEMP TABLE {table} ({columns}) ON COMMIT DROP")
    with cursor.copy(f"COPY {table} FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    cursor.execute(f"WITH {statement}", params)
    result = cursor.fetchall()
    cursor.execute(f"DROP TABLE {table}")
    return result


def _upsert_recordings(cursor: CursorWrapper, rows: Sequence[tuple]) -> None:
    """Upsert recordings (deduplicated by call id) and recount the fiches they touch."""
    if rows:
        _recount([row[0] for row in _load(cursor, "_rec_in", _REC_IN_COLUMNS, rows, _RECORDINGS, {})])


def _dedupe_recordings(rows: Iterable[tuple]) -> list[tuple]:
    """One row per call id (the last wins: bad upstream data must not break ON CONFLICT)."""
    return list({row[0]: row for row in rows}.values())


_DATES_LOCK = """
INSERT INTO fiche_sales_dates (sales_date, fiche_count)
SELECT d, 0 FROM unnest(%(lock_dates)s::date[]) AS d ORDER BY d
ON CONFLICT (sales_date) DO NOTHING
"""
_DATES_NEWER = """
SELECT sales_date, last_fetched_at FROM fiche_sales_dates
WHERE sales_date = ANY(%(lock_dates)s::date[]) ORDER BY sales_date FOR UPDATE
"""
# An empty sales list: the dates' states are locked, fenced and marked in one statement (the CTE locks
# the rows that exist and reads their last fetch; the upsert skips a date a newer fetch wrote).
_EMPTY_DATES = """
WITH current AS (
    SELECT sales_date, last_fetched_at FROM fiche_sales_dates
    WHERE sales_date = ANY(%(dates)s::date[]) ORDER BY sales_date FOR UPDATE
), marked AS (
    INSERT INTO fiche_sales_dates AS d (sales_date, last_fetched_at, fiche_count, last_error, last_error_at)
    SELECT t.d, %(fetched_at)s, 0, NULL, NULL FROM unnest(%(dates)s::date[]) AS t(d)
    ORDER BY t.d
    ON CONFLICT (sales_date) DO UPDATE SET
        last_fetched_at = GREATEST(d.last_fetched_at, EXCLUDED.last_fetched_at),
        fiche_count = EXCLUDED.fiche_count,
        last_error = NULL,
        last_error_at = NULL
    WHERE (d.last_fetched_at IS NULL OR d.last_fetched_at <= EXCLUDED.last_fetched_at)
      AND (d.last_fetched_at IS NULL OR d.last_fetched_at < EXCLUDED.last_fetched_at
           OR d.fiche_count <> EXCLUDED.fiche_count OR d.last_error IS NOT NULL)
)
SELECT sales_date FROM current WHERE last_fetched_at > %(fetched_at)s
"""


def _lock_dates(cursor: CursorWrapper, dates: list[date], fetched_at: datetime) -> set[date]:
    """Lock the dates' fetch-state rows (in date order: two writers never deadlock) and return the
    dates a strictly newer fetch has already written: the fence behind the Redis date lock, so a
    fetch that outlived its lock cannot commit an older sales list over a newer one."""
    cursor.execute(f"{_DATES_LOCK};{_DATES_NEWER}", {"lock_dates": dates})
    cursor.nextset()  # the INSERT's result → the SELECT's rows
    return {day for day, last in cursor.fetchall() if last is not None and last > fetched_at}


def _log_skipped(newer: set[date], revalidated_at: datetime) -> None:
    if newer:
        logger.warning(
            "sales_list_older_than_cache_skipped",
            extra={"dates": [d.isoformat() for d in sorted(newer)], "fetched_at": revalidated_at.isoformat()},
        )


def _log_cached(sales: int, recordings: int, dates: list[date]) -> None:
    logger.info(
        "sales_list_cached",
        extra={
            "fiches": sales,
            "recordings": recordings,
            "dates": len(dates),
            "start": dates[0].isoformat() if dates else None,
            "end": dates[-1].isoformat() if dates else None,
        },
    )


def _cache_empty_list(requested: list[date], revalidated_at: datetime) -> CacheResult:
    """An empty sales list (a day without sales): its dates are marked fetched in one statement."""
    with connection.cursor() as cursor:
        cursor.execute(_EMPTY_DATES, {"dates": requested, "fetched_at": revalidated_at})
        newer = {row[0] for row in cursor.fetchall()}
    _log_skipped(newer, revalidated_at)
    dates = [d for d in requested if d not in newer]
    transaction.on_commit(lambda: bump_cache_version(dates))
    _log_cached(0, 0, dates)
    return CacheResult(fiches=0, recordings=0, dates=dates)


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

    Round trips: one statement for an empty list; otherwise, in one transaction, the dates' lock, one
    statement for the fiches, one for the recordings (a large list: COPY and a temporary table each),
    the recount of the fiches whose recordings moved, and the dates.
    """
    by_id: dict[str, dict] = {}
    for sale in fiches:  # the same fiche twice in one list: the last one wins
        by_id[str(sale["fiche_id"])] = sale

    def sale_day(sale: dict) -> date:
        value = sale["sales_date"]
        return value if isinstance(value, date) else date.fromisoformat(value)

    requested = sorted(set(covered_dates) if covered_dates is not None else {sale_day(s) for s in by_id.values()})
    if not by_id:
        return _cache_empty_list(requested, revalidated_at) if requested else CacheResult(0, 0, [])
    with transaction.atomic(), connection.cursor() as cursor:
        newer = _lock_dates(cursor, sorted(set(requested) | {sale_day(s) for s in by_id.values()}), revalidated_at)
        _log_skipped(newer, revalidated_at)
        if newer:
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
            fiche_rows = [_fiche_row(s, rec_counts.get(str(s["fiche_id"]), 0)) for s in sales]
            moved = _load(
                cursor, "_fiche_in", _FICHE_IN_COLUMNS, fiche_rows, _FICHES, {"revalidated_at": revalidated_at}
            )
            touched |= {row[0] for row in moved}  # a fiche leaving a date changes that date too
            _upsert_recordings(cursor, recording_rows)
        if dates:
            cursor.execute(
                _DATES_UPSERT,
                {"fetched_at": revalidated_at, "dates": dates, "counts": [counts.get(d, 0) for d in dates]},
            )
    transaction.on_commit(lambda: bump_cache_version(touched))
    _log_cached(len(sales), len(recording_rows), dates)
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
    # Locked before anything is read of it: an erasure committing meanwhile is seen here, not overwritten.
    previous_day, erased_at = (
        FicheCache.objects.select_for_update()
        .filter(fiche_id=information["fiche_id"])
        .values_list("sales_date", "erased_at")
        .first()
    ) or (None, None)
    prospect = fiche.get("prospect") or {}
    known = {*DETAIL_SECTIONS, "mail_devis", "recordings"}
    raw = {k: v for k, v in fiche.items() if k not in known}
    if erased_at is not None:  # the sale's columns only: nothing of the person comes back
        return _erased_details_persist(envelope, information, raw, fetched_at, previous_day)
    raw[SALES_LIST_ONLY] = False
    row, _ = FicheCache.objects.select_for_update().update_or_create(
        fiche_id=information["fiche_id"],
        defaults={
            "cle": envelope.get("cle"),
            **_summary(information, prospect),
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
    return _store_recordings(row, fiche, previous_day, "fiche_details_cached")


def _erased_details_persist(
    envelope: dict, information: dict, raw: dict, fetched_at: datetime, previous_day: date | None
) -> FicheCache:
    """``fiche_details_persist`` of an erased fiche: the sale's columns and ``information`` (the keys of
    ``ERASED_FICHE_KEEPS``), recordings without numbers; no prospect, no other section, no mail devis."""
    fiche = envelope["fiche"]
    row = FicheCache.objects.select_for_update().get(fiche_id=information["fiche_id"])
    for column, value in _summary(information, {}).items():
        setattr(row, column, value)
    row.cle = envelope.get("cle")
    row.raw_data = {**{k: v for k, v in raw.items() if k in ERASED_FICHE_KEEPS}, SALES_LIST_ONLY: False}
    row.details_success = bool(envelope.get("success", True))
    row.details_message = (envelope.get("message") or "")[:255] or None
    row.details_fetched_at = fetched_at
    row.save()
    FicheCacheDetails.objects.update_or_create(
        fiche=row,
        defaults={
            **{section: None for section in DETAIL_SECTIONS if section != "information"},
            "information": {k: v for k, v in information.items() if k in ERASED_FICHE_KEEPS},
            "present_sections": [s for s in fiche if s in ("information", "recordings")],
        },
    )
    FicheCacheMailDevis.objects.filter(fiche=row).delete()
    return _store_recordings(row, fiche, previous_day, "fiche_details_cached_erased")


def _store_recordings(row: FicheCache, fiche: dict, previous_day: date | None, event: str) -> FicheCache:
    """The end of ``fiche_details_persist``: the fiche's recordings upserted (numbers and URL kept out for an
    erased fiche, in SQL), the row re-read (its recordings count), the cache version of the day(s) bumped."""
    with connection.cursor() as cursor:
        _upsert_recordings(
            cursor, _dedupe_recordings(_recording_row(row.fiche_id, rec) for rec in fiche.get("recordings") or ())
        )
    row.refresh_from_db()
    touched = {row.sales_date} | ({previous_day} if previous_day else set())
    transaction.on_commit(lambda: bump_cache_version(touched))
    logger.info(event, extra={"fiche_id": row.fiche_id, "recordings": row.recordings_count})
    return row
