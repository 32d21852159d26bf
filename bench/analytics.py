"""P-analytics ``analytics`` (issue 22): compliance figures over a year of audits, default settings, no workers.

Seeded in SQL into the real tables (``fiche_cache``, ``audits``, ``audit_step_results``,
``audit_control_point_results``, plus one recording, its transcription and the usage ledger of each fiche so the
fact build does all its work): two years of working days (Mon-Fri) x 200 sales a day, each with a completed
production audit of one config (``config_create``: 5 steps x 4 control points, 4 critical points, one critical
step, 2 conditional points) scored as ``audits.compliance`` does (step scores, conforme, niveau, REJET on a
critical miss, critical_issues, needs_review), over 40 agents in 5 groups and 3 products, the verdict mix
depending on the agent; ~5 % of the fiches also have an earlier, superseded audit (the counting rule matters).

Measured:

- ``analytics.services.rebuild_config`` (the whole fact build) over both years (the facts VACUUM ANALYZEd after,
  as autovacuum would);
- p50 / p95 / max of the real HTTP handlers (Django's test ``Client``, a real JWT) over the last year for an ALL
  and a GROUP (one group) reader, beside a plain ``SELECT count(*)`` of the same fact rows in the same run (the
  baseline the issue asks for); target p95 <= 300 ms (informative: nothing fails);
- the exports (``table=audits``, CSV and XLSX) over both years (>= 100k rows), consumed chunk by chunk: rows,
  bytes, wall time, the peak of Python allocations (``tracemalloc``, a second pass) and the growth of the
  process's peak RSS (``VmHWM``, reset before each export when the kernel allows it);
- ``refresh_pairs`` of one (fiche, config) pair (what each audit's end costs).
"""

from __future__ import annotations

import math
import os
import re
import statistics
import tempfile
import time
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from accounts.grants import Scope
from accounts.models import Role, RolePermission, User
from accounts.tokens import issue_tokens
from analytics import services
from analytics.models import AuditFact, PointFact
from audits.models import Audit
from audits.services.configs import config_create
from fiches.models import FicheCache

PER_DAY = 200
AGENTS = 40  # agent n is in group n % 5 + 1: 8 agents a group
GROUP = "Groupe 3"  # the GROUP reader's
SUPERSEDED = 0.05  # share of fiches audited twice (the earlier audit no longer counts)
REQUESTS, WARMUPS = 30, 3
TARGET_MS = 300.0
PREFIX = "BA"  # the seeded fiches' ids


def _cp(question: str, *, critical: bool = False, conditional: bool = False) -> dict[str, Any]:
    return {
        "question": question,
        "evidence_hint": question.lower(),
        "is_critical": critical,
        "conditional": conditional,
    }


CONFIG: dict[str, Any] = {
    "name": "bench: analytics (5 x 4)",
    "description": "",
    "is_active": True,
    "thresholds": {"excellent": 90, "bon": 75, "acceptable": 60},
    "steps": [
        {
            "name": "Présentation",
            "instructions": "",
            "weight": 30,
            "is_critical": True,
            "pass_ratio": 0.75,
            "control_points": [
                _cp("Nom et cabinet ?", critical=True),
                _cp("Courtier et ORIAS ?", critical=True),
                _cp("Appel commercial annoncé ?"),
                _cp("Enregistrement annoncé ?"),
            ],
        },
        {
            "name": "Besoins",
            "instructions": "",
            "weight": 20,
            "is_critical": False,
            "pass_ratio": 1.0,
            "control_points": [
                _cp("Situation du client ?"),
                _cp("Couverture actuelle ?"),
                _cp("Budget ?"),
                _cp("Si conjoint : ses besoins ?", conditional=True),
            ],
        },
        {
            "name": "Offre",
            "instructions": "",
            "weight": 20,
            "is_critical": False,
            "pass_ratio": 1.0,
            "control_points": [
                _cp("Garanties présentées ?", critical=True),
                _cp("Exclusions ?"),
                _cp("Prix mensuel ?"),
                _cp("Délais de carence ?"),
            ],
        },
        {
            "name": "Rétractation",
            "instructions": "",
            "weight": 15,
            "is_critical": False,
            "pass_ratio": 1.0,
            "control_points": [
                _cp("Délai de 14 jours ?", critical=True),
                _cp("Modalités ?"),
                _cp("Documents envoyés ?"),
                _cp("Si devis : envoi ?", conditional=True),
            ],
        },
        {
            "name": "Conclusion",
            "instructions": "",
            "weight": 15,
            "is_critical": False,
            "pass_ratio": 1.0,
            "control_points": [
                _cp("Récapitulatif ?"),
                _cp("Consentement explicite ?"),
                _cp("Prochaines étapes ?"),
                _cp("Coordonnées du service client ?"),
            ],
        },
    ],
}


def _u(key: str) -> str:
    """SQL: a uniform number in [0, 1) from the hash of the SQL text expression ``key`` (deterministic)."""
    return f"((hashtext({key})::bigint + 2147483648) / 4294967296.0)"


_FICHES = f"""
INSERT INTO fiche_cache (fiche_id, sales_date, groupe, crm_user_id, agent_name, produit, statut, raw_data,
    details_success, details_fetched_at, recordings_count, has_recordings, created_at, updated_at)
SELECT '{PREFIX}' || to_char(d, 'YYYYMMDD') || lpad(n::text, 3, '0'), d::date, 'Groupe ' || (k.agent %% 5 + 1),
       'agent-' || lpad(k.agent::text, 2, '0'), 'Agent ' || lpad(k.agent::text, 2, '0'),
       CASE WHEN k.p < 0.5 THEN 'Santé' WHEN k.p < 0.8 THEN 'Obsèques' ELSE 'Prévoyance' END, 'Vendu', '{{}}'::jsonb,
       true, now(), 1, true, now(), now()
FROM generate_series(%(first)s::date, %(last)s::date, interval '1 day') d
CROSS JOIN generate_series(1, %(per_day)s) n
CROSS JOIN LATERAL (SELECT floor({_u("'agent' || d::date || ':' || n")} * {AGENTS})::int AS agent,
                           {_u("'product' || d::date || ':' || n")} AS p) k
WHERE extract(isodow FROM d) < 6
"""

# The audits to make: the one that counts for every fiche, an earlier one for ~5 % of them (worse: re-audited).
_PLAN = f"""
CREATE TEMP TABLE bench_plan ON COMMIT DROP AS
SELECT gen_random_uuid() AS id, f.id AS fiche_pk, f.sales_date, substr(f.crm_user_id, 7)::int AS agent,
       1.0 AS worse, f.sales_date + time '20:00' + {_u("'done' || f.id")} * interval '3 hours' AS completed_at
FROM fiche_cache f
WHERE f.sales_date BETWEEN %(first)s AND %(last)s AND f.fiche_id LIKE '{PREFIX}%%'
UNION ALL
SELECT gen_random_uuid(), f.id, f.sales_date, substr(f.crm_user_id, 7)::int, 1.6, f.sales_date + time '19:00'
FROM fiche_cache f
WHERE f.sales_date BETWEEN %(first)s AND %(last)s AND f.fiche_id LIKE '{PREFIX}%%'
  AND {_u("'superseded' || f.id")} < {SUPERSEDED}
"""

# Each verdict: a conditional point is not applicable 30 % of the time; else fail / uncertain at a rate that
# depends on the agent (x0.4 .. x2.15), the week (x0.8 .. x1.2) and whether the point is critical; else pass.
_POINTS = f"""
CREATE TEMP TABLE bench_points ON COMMIT DROP AS
SELECT p.id AS audit_id, st.id AS step_id, st.position, st.name AS step_name, st.weight, st.pass_ratio,
       st.is_critical AS step_critical, cp.index AS idx, cp.question, cp.is_critical,
       CASE WHEN cp.conditional AND r.na < 0.30 THEN 'not_applicable'
            WHEN r.v < r.m * (CASE WHEN cp.is_critical THEN 0.012 ELSE 0.040 END) THEN 'fail'
            WHEN r.v < r.m * (CASE WHEN cp.is_critical THEN 0.020 ELSE 0.065 END) THEN 'uncertain'
            ELSE 'pass' END AS status
FROM bench_plan p
JOIN audit_steps st ON st.config_version_id = %(version)s
JOIN audit_control_points cp ON cp.step_id = st.id
CROSS JOIN LATERAL (
    SELECT {_u("p.id::text || ':' || st.position || ':' || cp.index")} AS v,
           {_u("'na' || p.id::text || ':' || st.position || ':' || cp.index")} AS na,
           p.worse * (0.4 + (p.agent %% 8) * 0.25)
                   * (0.8 + 0.4 * {_u("'week' || date_trunc('week', p.sales_date)::date")}) AS m
) r
"""

_STEPS = """
CREATE TEMP TABLE bench_steps ON COMMIT DROP AS
SELECT audit_id, step_id, position, weight, step_critical, applicable > 0 AS included,
       CASE WHEN applicable > 0 THEN round(weight * passed::numeric / applicable, 4)::float ELSE 0 END AS score,
       CASE WHEN applicable > 0 THEN weight ELSE 0 END::float AS max_score,
       CASE WHEN applicable = 0 THEN true
            ELSE NOT critical_miss AND passed::float / applicable >= pass_ratio - 1e-9 END AS conforme
FROM (SELECT audit_id, step_id, position, weight, pass_ratio, step_critical,
             count(*) FILTER (WHERE status <> 'not_applicable') AS applicable,
             count(*) FILTER (WHERE status = 'pass') AS passed,
             bool_or(is_critical AND status IN ('fail', 'uncertain', 'pending')) AS critical_miss
      FROM bench_points GROUP BY 1, 2, 3, 4, 5, 6) s
"""

_AUDITS = """
INSERT INTO audits (id, status, use_rlm, model, overall_score, max_score, score_percentage, niveau, is_compliant,
    critical_issues, needs_review, total_tokens, duration_seconds, created_at, dispatched_at, started_at,
    last_progress_at, completed_at, fiche_id, config_id, config_version_id, purpose)
SELECT p.id, 'completed', false, 'bench-model', s.overall, s.maximum, round(s.exact::numeric, 2)::float, n.niveau,
       n.niveau IN ('EXCELLENT', 'BON', 'ACCEPTABLE'), COALESCE(v.issues, '[]'::jsonb), v.review, 18000, 45.0,
       p.completed_at - interval '1 minute', p.completed_at - interval '55 seconds',
       p.completed_at - interval '55 seconds', p.completed_at, p.completed_at, p.fiche_pk, %(config)s, %(version)s,
       'production'
FROM bench_plan p
JOIN (SELECT audit_id, round(sum(score) FILTER (WHERE included)::numeric, 4)::float AS overall,
             COALESCE(sum(max_score) FILTER (WHERE included), 0) AS maximum,
             CASE WHEN sum(max_score) FILTER (WHERE included) > 0
                  THEN sum(score) FILTER (WHERE included) / sum(max_score) FILTER (WHERE included) * 100
                  ELSE 0 END AS exact,
             bool_or(step_critical AND included AND NOT conforme) AS step_missed
      FROM bench_steps GROUP BY audit_id) s ON s.audit_id = p.id
JOIN (SELECT audit_id,
             jsonb_agg(jsonb_build_object('step_position', position, 'step_name', step_name,
                                          'control_point_index', idx, 'question', question, 'status', status)
                       ORDER BY position, idx)
                 FILTER (WHERE is_critical AND status IN ('fail', 'uncertain', 'pending')) AS issues,
             bool_or(status IN ('uncertain', 'pending')) AS review
      FROM bench_points GROUP BY audit_id) v ON v.audit_id = p.id
CROSS JOIN LATERAL (
    SELECT CASE WHEN v.issues IS NOT NULL OR s.step_missed THEN 'REJET'
                WHEN s.exact >= 90 THEN 'EXCELLENT' WHEN s.exact >= 75 THEN 'BON'
                WHEN s.exact >= 60 THEN 'ACCEPTABLE' ELSE 'INSUFFISANT' END AS niveau
) n
"""

_STEP_RESULTS = """
INSERT INTO audit_step_results (position, status, score, max_score, conforme, included, prompt_tokens,
    completion_tokens, tokens_estimated, model, prompt_hash, tool_calls, attempts, completed_at, audit_id, step_id)
SELECT s.position, 'completed', s.score, s.max_score, s.conforme, s.included, 3200, 450, false, 'bench-model', '', 0,
       1, p.completed_at, s.audit_id, s.step_id
FROM bench_steps s JOIN bench_plan p ON p.id = s.audit_id
"""

_POINT_RESULTS = """
INSERT INTO audit_control_point_results (index, ai_status, status, rationale, step_result_id, guided,
    unguided_status, advisory)
SELECT bp.idx, bp.status, bp.status, '', sr.id, false, bp.status, false
FROM bench_points bp JOIN audit_step_results sr ON sr.audit_id = bp.audit_id AND sr.position = bp.position
"""

# The fiche's call (audited seconds), its transcription, and the usage ledger (costs): one LLM call a step, one
# speech-to-text call a fiche.
_RECORDINGS = f"""
INSERT INTO recordings (call_id, started_at, duration_seconds, direction, raw_data, created_at, updated_at, fiche_id)
SELECT 'bench-call-' || f.id, f.sales_date + time '10:00', 240 + floor({_u("'call' || f.id")} * 1800), 'outbound',
       '{{}}'::jsonb, now(), now(), f.id
FROM fiche_cache f
WHERE f.sales_date BETWEEN %(first)s AND %(last)s AND f.fiche_id LIKE '{PREFIX}%%'
"""

_TRANSCRIPTIONS = f"""
INSERT INTO transcriptions (call_id, status, provider, model, language, text, words, speaker_map, duration_seconds,
    attempts, transcribed_at, created_at, updated_at, fiche_id, recording_id)
SELECT r.call_id, 'completed', 'elevenlabs', 'scribe_v1', 'fr', '', '[]'::jsonb, '{{}}'::jsonb, r.duration_seconds,
       1, now(), now(), now(), r.fiche_id, r.id
FROM recordings r JOIN fiche_cache f ON f.id = r.fiche_id
WHERE f.sales_date BETWEEN %(first)s AND %(last)s AND f.fiche_id LIKE '{PREFIX}%%'
"""

_USAGE = f"""
INSERT INTO usage_records (at, day, kind, purpose, model, prompt_tokens, completion_tokens, cached_tokens, estimated,
    audio_seconds, audit_id, fiche_id)
SELECT p.completed_at, p.completed_at::date, 'llm', 'audit_step', 'bench-model', 3200, 450, 0, false, 0, p.id,
       p.fiche_pk
FROM bench_plan p CROSS JOIN generate_series(1, 5)
UNION ALL
SELECT t.transcribed_at, t.transcribed_at::date, 'stt', 'transcription', '', 0, 0, 0, false, t.duration_seconds,
       NULL, t.fiche_id
FROM transcriptions t JOIN fiche_cache f ON f.id = t.fiche_id
WHERE f.sales_date BETWEEN %(first)s AND %(last)s AND f.fiche_id LIKE '{PREFIX}%%'
"""


def _truncate() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE analytics_point_facts, analytics_audit_facts, usage_records, audits, audit_configs, "
            "transcriptions, transcription_runs, recordings, fiche_cache_details, fiche_cache_mail_devis, "
            "fiche_cache CASCADE"
        )
    User.objects.filter(email__startswith="bench-analytics").delete()
    Role.objects.filter(key__startswith="bench-analytics").delete()


def _seed(first: date, last: date, config_id: int, version_id: int) -> dict[str, int]:
    """Every working day of [first, last]; returns the rows written per table."""
    params: dict[str, Any] = {
        "first": first,
        "last": last,
        "per_day": PER_DAY,
        "config": config_id,
        "version": version_id,
    }
    written: dict[str, int] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_FICHES, params)
        written["fiches"] = cursor.rowcount
        cursor.execute(_PLAN, params)
        cursor.execute("ANALYZE bench_plan")
        cursor.execute(_POINTS, params)
        cursor.execute("ANALYZE bench_points")
        cursor.execute(_STEPS)
        cursor.execute("ANALYZE bench_steps")
        cursor.execute(_AUDITS, params)
        written["audits"] = cursor.rowcount
        cursor.execute(_STEP_RESULTS)
        written["step results"] = cursor.rowcount
        cursor.execute("ANALYZE audit_step_results")
        cursor.execute(_POINT_RESULTS)
        written["control point results"] = cursor.rowcount
        cursor.execute(_RECORDINGS, params)
        cursor.execute(_TRANSCRIPTIONS, params)
        cursor.execute(_USAGE, params)
        written["usage records"] = cursor.rowcount
    with connection.cursor() as cursor:
        cursor.execute(
            "VACUUM ANALYZE fiche_cache, audits, audit_step_results, audit_control_point_results, recordings, "
            "transcriptions, usage_records"
        )
    return written


def _vacuum_facts() -> None:
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE analytics_audit_facts, analytics_point_facts")


def _readers() -> tuple[User, User]:
    every = Role.objects.create(key="bench-analytics-all", name="Bench analytics (all)")
    RolePermission.objects.create(role=every, permission_key="audits", can_read=True, scope=Scope.ALL)
    team = Role.objects.create(key="bench-analytics-group", name="Bench analytics (group)")
    RolePermission.objects.create(role=team, permission_key="audits", can_read=True, scope=Scope.GROUP)
    reader = User.objects.create_user(email="bench-analytics-all@example.com", password="x")
    reader.roles.set([every])
    lead = User.objects.create_user(email="bench-analytics-group@example.com", password="x", groupes=[GROUP])
    lead.roles.set([team])
    return reader, lead


def _client(user: User) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {issue_tokens(user).access}", HTTP_HOST="localhost")


def _percentile(ordered: list[float], p: float) -> float:
    """Nearest rank."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _measure(call: Callable[[], Any]) -> dict[str, float]:
    for _ in range(WARMUPS):
        call()
    samples = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    ordered = sorted(samples)
    return {"p50": statistics.median(ordered), "p95": _percentile(ordered, 95), "max": ordered[-1]}


def _count(sql: str, params: list[Any]) -> Callable[[], Any]:
    def call() -> Any:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()

    return call


def _fmt(figures: dict[str, float] | None) -> str:
    if figures is None:
        return f"{'error':>29}"
    return f"{figures['p50']:7.1f} {figures['p95']:7.1f} {figures['max']:7.1f}  {_verdict(figures):4}"


def _verdict(figures: dict[str, float]) -> str:
    return "PASS" if figures["p95"] <= TARGET_MS else "FAIL"


QUERIES: list[tuple[str, str, dict[str, str]]] = [
    ("overall / month", "compliance", {"by": "overall", "period": "month"}),
    ("agent / week", "compliance", {"by": "agent", "period": "week"}),
    ("group / month", "compliance", {"by": "group", "period": "month"}),
    ("control_point / month", "compliance", {"by": "control_point", "period": "month"}),
    ("control_point / all", "compliance", {"by": "control_point"}),
    ("product / day", "compliance", {"by": "product", "period": "day"}),
    ("config_version / all", "compliance", {"by": "config_version"}),
    ("worst control_point", "worst", {"by": "control_point"}),
    ("worst agent", "worst", {"by": "agent"}),
]


def _http(client: Client, path: str, params: dict[str, str]) -> tuple[Callable[[], Any], int | None, str]:
    """A call of the endpoint, the rows it answers and an error (empty when it answered 200)."""
    response = client.get(f"/api/analytics/{path}", params)
    if response.status_code != 200:
        return lambda: None, None, f"HTTP {response.status_code}: {response.content[:300]!r}"
    rows = len(response.json()["rows"])

    def call() -> Any:
        answer = client.get(f"/api/analytics/{path}", params)
        if answer.status_code != 200:
            raise RuntimeError(f"HTTP {answer.status_code}: {answer.content[:300]!r}")
        return answer.content

    return call, rows, ""


def _queries(reader: User, lead: User, first: date, last: date) -> list[tuple[str, dict[str, float] | None]]:
    rng = {"from": first.isoformat(), "to": last.isoformat()}
    clients = {"ALL": _client(reader), "GROUP": _client(lead)}
    years = [first, last]
    counts = [
        (
            "count(*) point facts",
            "SELECT count(*) FROM analytics_point_facts WHERE sales_date BETWEEN %s AND %s",
            years,
        ),
        (
            "count(*) audit facts",
            "SELECT count(*) FROM analytics_audit_facts WHERE sales_date BETWEEN %s AND %s",
            years,
        ),
    ]
    head = f"{'p50':>7} {'p95':>7} {'max':>7}  {'':4}"
    print(f"\n{'':24} {'':>9} | {'ALL reader':^29} | {'GROUP reader':^29}")
    print(f"{'(ms)':24} {'rows':>9} | {head} | {head}")
    results: list[tuple[str, dict[str, float] | None]] = []
    for label, sql, bounds in counts:
        everything = _measure(_count(sql, bounds))
        group_sql = sql.replace("WHERE", "WHERE groupe = ANY(%s) AND")
        team = _measure(_count(group_sql, [[GROUP], *bounds]))
        with connection.cursor() as cursor:
            cursor.execute(sql, bounds)
            (n,) = cursor.fetchone()
        print(f"{label:24} {'':>9} | {_fmt(everything)} | {_fmt(team)}   ({n} rows counted, ALL)")
    for label, path, params in QUERIES:
        line = []
        rows = []
        errors = []
        for scope, client in clients.items():
            call, n, error = _http(client, path, {**params, **rng})
            figures = None
            if not error:
                try:
                    figures = _measure(call)
                except Exception as exc:  # reported, not raised: the other figures still come
                    error = repr(exc)
            results.append((f"{label} ({scope})", figures))
            line.append(_fmt(figures))
            rows.append("-" if n is None else str(n))
            if error:
                errors.append(f"{scope}: {error}")
        print(f"{label:24} {'/'.join(rows):>9} | {line[0]} | {line[1]}")
        for error in errors:
            print(f"    {error}")
    return results


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M)
    return int(match.group(1)) if match else 0


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _export(client: Client, params: dict[str, str], *, traced: bool) -> dict[str, Any]:
    """Stream one export, chunk by chunk, into a temporary file (nothing kept in memory)."""
    reset = _reset_peak_rss()
    rss_before = _rss_kib("VmRSS")
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    response = client.get("/api/analytics/export", params)
    if response.status_code != 200 or not response.streaming:
        if traced:
            tracemalloc.stop()
        return {"status": response.status_code, "error": repr(response.content[:300])}
    first_byte = None
    size = lines = 0
    fd, path = tempfile.mkstemp(prefix="bench-analytics-", suffix="." + params["file_format"])
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in response.streaming_content:  # type: ignore[attr-defined]
                if first_byte is None:
                    first_byte = time.perf_counter() - started
                size += len(chunk)
                lines += chunk.count(b"\n")
                out.write(chunk)
        response.close()
        wall = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if traced else 0
        if traced:
            tracemalloc.stop()
        hwm = _rss_kib("VmHWM")
        if params["file_format"] == "csv":
            rows = lines - 1
        else:
            with zipfile.ZipFile(path) as book:
                head = book.open("xl/worksheets/sheet1.xml").read(2000).decode()
            match = re.search(r'<dimension ref="A1:[A-Z]+(\d+)"', head)
            rows = int(match.group(1)) - 1 if match else -1
    finally:
        os.unlink(path)
    return {
        "status": response.status_code,
        "rows": rows,
        "bytes": size,
        "wall": wall,
        "first_byte": first_byte or 0.0,
        "peak": peak,
        "rss_growth_kib": max(0, hwm - rss_before) if reset else None,
        "rss_before_kib": rss_before,
    }


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def _exports(reader: User, first: date, last: date) -> None:
    client = _client(reader)
    expected = AuditFact.objects.filter(sales_date__gte=first, sales_date__lte=last).count()
    print(f"\nexports, table=audits, {first} .. {last} ({expected} audits that count), ALL reader:")
    for file_format in ("csv", "xlsx"):
        params = {"table": "audits", "file_format": file_format, "from": first.isoformat(), "to": last.isoformat()}
        plain = _export(client, params, traced=False)
        if "error" in plain:
            print(f"  {file_format:4}  HTTP {plain['status']}: {plain['error']}")
            continue
        traced = _export(client, params, traced=True)
        if "error" in traced:
            traced = {"peak": float("nan"), "wall": float("nan")}
        growth = plain["rss_growth_kib"]
        rss = "n/a (VmHWM not resettable)" if growth is None else _mib(growth * 1024)
        print(
            f"  {file_format:4}  HTTP {plain['status']}  {plain['rows']} rows, {_mib(plain['bytes'])} "
            f"({plain['bytes']} bytes) in {plain['wall']:.2f} s (first byte after {plain['first_byte'] * 1000:.0f} ms)"
            f"; peak RSS growth {rss} (RSS before {_mib(plain['rss_before_kib'] * 1024)}); "
            f"tracemalloc peak {_mib(traced['peak'])} = {traced['peak'] / max(1, plain['bytes']) * 100:.1f} % of "
            f"the output (traced pass {traced['wall']:.2f} s)"
        )


def _mix(year_from: date) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, count(*) FROM analytics_point_facts WHERE sales_date >= %s GROUP BY 1 ORDER BY 2 DESC",
            [year_from],
        )
        verdicts = cursor.fetchall()
        cursor.execute(
            "SELECT niveau, count(*) FROM analytics_audit_facts WHERE sales_date >= %s GROUP BY 1 ORDER BY 2 DESC",
            [year_from],
        )
        niveaux = cursor.fetchall()
    total_v = sum(n for _, n in verdicts) or 1
    total_n = sum(n for _, n in niveaux) or 1
    return (
        "verdicts "
        + ", ".join(f"{k} {n * 100 / total_v:.1f} %" for k, n in verdicts)
        + "; niveaux "
        + ", ".join(f"{k} {n * 100 / total_n:.1f} %" for k, n in niveaux)
    )


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} (1 / 5 min) on {os.cpu_count()} CPUs"


def run(args: Any) -> None:
    warnings.filterwarnings("ignore", message="No directory at")  # whitenoise: no collectstatic in the bench
    _truncate()
    last = timezone.localdate() - timedelta(days=1)
    year_from = last - timedelta(days=364)
    two_from = last - timedelta(days=729)  # 730 days: within the API's 731
    config = config_create(data=CONFIG)
    version = config.current_version
    assert version is not None
    print(
        f"\n== analytics (issue 22): {PER_DAY} audits a working day, 20 points each (5 steps x 4), {AGENTS} agents "
        f"in 5 groups, 3 products; queried: the year {year_from} .. {last}; exported: {two_from} .. {last} =="
    )
    began = time.perf_counter()
    seeded = _seed(two_from, last, config.pk, version.pk)
    print(f"seeded 2 years in {time.perf_counter() - began:.1f} s: " + ", ".join(f"{n} {k}" for k, n in seeded.items()))
    t = time.perf_counter()
    facts = services.rebuild_config(config.pk)
    build = time.perf_counter() - t
    points = PointFact.objects.count()
    print(
        f"rebuild_config (the whole fact build, 2 years): {build:.2f} s for {facts} audit facts and {points} point "
        f"facts ({build * 1e6 / max(1, facts):.0f} us an audit; ~{build / 2:.1f} s a year)"
    )
    _vacuum_facts()
    year_audits = AuditFact.objects.filter(sales_date__gte=year_from).count()
    year_points = PointFact.objects.filter(sales_date__gte=year_from).count()
    superseded = Audit.objects.count() - AuditFact.objects.count()
    print(
        f"the year: {year_audits} audits that count, {year_points} point facts ({superseded} superseded audits over "
        f"the 2 years not counted); {_mix(year_from)}"
    )

    reader, lead = _readers()
    print(
        f"\nlatency over the year ({REQUESTS} requests after {WARMUPS} warm-ups each, Django test Client + JWT, "
        f"in-process; target p95 <= {TARGET_MS:.0f} ms; GROUP reader: {GROUP}, 1 group of 5); {_load()}:"
    )
    results = _queries(reader, lead, year_from, last)
    print(f"({_load()})")
    _exports(reader, two_from, last)

    pairs = list(
        FicheCache.objects.filter(sales_date__gte=year_from)
        .order_by("pk")
        .values_list("pk", flat=True)[: REQUESTS + WARMUPS]
    )
    queue = iter(pairs)
    refresh = _measure(lambda: services.refresh_pairs([(next(queue), config.pk)]))
    print(
        f"\nrefresh_pairs, 1 pair (an audit's end): p50 {refresh['p50']:.1f} ms, p95 {refresh['p95']:.1f} ms, "
        f"max {refresh['max']:.1f} ms"
    )
    missed = [label for label, figures in results if figures is None or figures["p95"] > TARGET_MS]
    print(
        f"\n{len(results) - len(missed)}/{len(results)} queries within p95 <= {TARGET_MS:.0f} ms"
        + (f"; over it: {', '.join(missed)}" if missed else "")
    )
