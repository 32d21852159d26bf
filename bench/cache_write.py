"""Sales-list cache write throughput: ``cache_fiche_sales_summaries`` vs a raw COPY + upsert.

N fiches (~3 recordings each) over 31 days are cached twice: an insert pass (empty tables) and
an update pass (every fiche's status changed, new revalidation time). The baseline loads the
same rows with psycopg COPY into temporary tables and upserts them with a plain
``INSERT … ON CONFLICT DO UPDATE`` (no invariants: no details guard, no change detection, no
recount, no per-date state). Target: >= 10,000 fiches/s and >= 0.5 x the baseline.
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import UTC, date, datetime, timedelta

from django.db import connection, transaction

from fiches.services.cache import cache_fiche_sales_summaries

START = date(2026, 1, 1)


def make_sales(n: int, *, statut: str, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    sales = []
    for i in range(n):
        day = START + timedelta(days=i % 31)
        fiche_id = str(900_000_000 + i)
        recordings = [
            {
                "call_id": f"b-{fiche_id}-{k}",
                "recording_url": f"https://recordings.example/b-{fiche_id}-{k}.mp3",
                "started_at": f"{day.isoformat()}T{9 + k:02d}:{rng.randrange(60):02d}:00Z",
                "duration_seconds": rng.randrange(30, 900),
                "direction": "outbound",
                "from_number": "0478000000",
                "to_number": f"06{rng.randrange(10**8):08d}",
            }
            for k in range(rng.choice((2, 3, 3, 4)))
        ]
        sales.append(
            {
                "fiche_id": fiche_id,
                "cle": f"{rng.randrange(16**6):06x}",
                "sales_date": day.isoformat(),
                "groupe": rng.choice(("Lyon-1", "Lyon-2", "Paris-Est", "Marseille")),
                "crm_user_id": f"u-{rng.randrange(400, 480)}",
                "agent_name": "Camille Martin",
                "statut": statut,
                "produit": "Santé Sérénité",
                "montant_cotisation": 84.5,
                "prospect": {"civilite": "Mme", "nom": "Durand", "prenom": "Julie", "ville": "Lyon"},
                "recordings": recordings,
            }
        )
    return sales


def _truncate() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE recordings, fiche_cache_details, fiche_cache_mail_devis, fiche_cache, fiche_sales_dates CASCADE"
        )


def _ours(sales: list[dict], revalidated_at: datetime) -> None:
    cache_fiche_sales_summaries(sales, revalidated_at=revalidated_at)


@transaction.atomic
def _baseline(sales: list[dict], revalidated_at: datetime) -> None:
    import orjson

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE _b_f (fiche_id text, cle text, sales_date date, groupe text, crm_user_id text, "
            "agent_name text, prospect_nom text, prospect_prenom text, statut text, produit text, raw_data jsonb) "
            "ON COMMIT DROP"
        )
        with cursor.copy("COPY _b_f FROM STDIN") as copy:
            for s in sales:
                p = s["prospect"]
                raw = {k: v for k, v in s.items() if k != "recordings"}
                copy.write_row(
                    (
                        s["fiche_id"],
                        s["cle"],
                        s["sales_date"],
                        s["groupe"],
                        s["crm_user_id"],
                        s["agent_name"],
                        p.get("nom"),
                        p.get("prenom"),
                        s["statut"],
                        s["produit"],
                        orjson.dumps(raw).decode(),
                    )
                )
        cursor.execute(
            "INSERT INTO fiche_cache (fiche_id, cle, sales_date, groupe, crm_user_id, agent_name, prospect_nom, "
            "prospect_prenom, statut, produit, raw_data, last_revalidated_at, recordings_count, has_recordings, "
            "created_at, updated_at) SELECT *, %s, 0, false, now(), now() FROM _b_f "
            "ON CONFLICT (fiche_id) DO UPDATE SET cle = EXCLUDED.cle, sales_date = EXCLUDED.sales_date, "
            "groupe = EXCLUDED.groupe, crm_user_id = EXCLUDED.crm_user_id, agent_name = EXCLUDED.agent_name, "
            "prospect_nom = EXCLUDED.prospect_nom, prospect_prenom = EXCLUDED.prospect_prenom, "
            "statut = EXCLUDED.statut, produit = EXCLUDED.produit, raw_data = EXCLUDED.raw_data, "
            "last_revalidated_at = EXCLUDED.last_revalidated_at, updated_at = EXCLUDED.updated_at",
            [revalidated_at],
        )
        cursor.execute(
            "CREATE TEMP TABLE _b_r (call_id text, fiche_ext text, recording_url text, started_at timestamptz, "
            "duration_seconds double precision, direction text, from_number text, to_number text) ON COMMIT DROP"
        )
        with cursor.copy("COPY _b_r FROM STDIN") as copy:
            for s in sales:
                for r in s["recordings"]:
                    copy.write_row(
                        (
                            r["call_id"],
                            s["fiche_id"],
                            r["recording_url"],
                            r["started_at"],
                            r["duration_seconds"],
                            r["direction"],
                            r["from_number"],
                            r["to_number"],
                        )
                    )
        cursor.execute(
            "INSERT INTO recordings (call_id, fiche_id, recording_url, started_at, duration_seconds, direction, "
            "from_number, to_number, raw_data, created_at, updated_at) "
            "SELECT r.call_id, f.id, r.recording_url, r.started_at, r.duration_seconds, r.direction, r.from_number, "
            "r.to_number, '{}'::jsonb, now(), now() FROM _b_r r JOIN fiche_cache f ON f.fiche_id = r.fiche_ext "
            "ON CONFLICT (call_id) DO UPDATE SET fiche_id = EXCLUDED.fiche_id, recording_url = EXCLUDED.recording_url, "
            "started_at = EXCLUDED.started_at, duration_seconds = EXCLUDED.duration_seconds, "
            "updated_at = EXCLUDED.updated_at"
        )


def _time(fn, sales, revalidated_at) -> float:
    started = time.perf_counter()
    fn(sales, revalidated_at)
    return time.perf_counter() - started


def run(args) -> None:
    n = args.fiches
    first = make_sales(n, statut="En attente de signature")
    second = make_sales(n, statut="Vente validée")
    recordings = sum(len(s["recordings"]) for s in first)
    t1, t2 = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 2, 2, tzinfo=UTC)
    results: dict[str, list[float]] = {k: [] for k in ("ours_insert", "ours_update", "base_insert", "base_update")}
    for _ in range(args.repeat):
        _truncate()
        results["ours_insert"].append(_time(_ours, first, t1))
        results["ours_update"].append(_time(_ours, second, t2))
        _truncate()
        results["base_insert"].append(_time(_baseline, first, t1))
        results["base_update"].append(_time(_baseline, second, t2))
    _truncate()
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n== cache_write: {n} fiches, {recordings} recordings, median of {args.repeat} ==")
    for phase in ("insert", "update"):
        ours, base = n / med[f"ours_{phase}"], n / med[f"base_{phase}"]
        verdict = "OK" if ours >= 10_000 and ours >= 0.5 * base else "BELOW TARGET"
        print(
            f"{phase:<7} cache_fiche_sales_summaries {ours:>9,.0f} fiches/s   "
            f"baseline COPY+upsert {base:>9,.0f} fiches/s   ratio {ours / base:.2f}   [{verdict}]"
        )
