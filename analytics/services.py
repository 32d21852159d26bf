"""Keeping the facts (``analytics.models``) true to the audits.

- ``refresh_pairs(pairs)``: for each (fiche pk, config id), the audit that counts now is found in SQL (the
  pinned one, else the latest completed production audit of the config's active version, as
  ``audits.selectors.counting_audit_ids``) and its facts replace the pair's old ones, in one transaction per
  call. Pairs are locked in a fixed order (a transaction-scoped advisory lock each) and under a shared lock of
  their config, so two refreshes of one pair never interleave and a config rebuild excludes them.
- ``rebuild_config(config_id)``: every pair of the config at once (its active version changed: which audit
  counts changed for every fiche), under the config's exclusive lock; ``rebuild_all`` for the command.
- The audits' ``audit_counting_changed`` hook sends the refresh (or rebuild) as a task after their commit;
  ``reconcile`` (beat) repairs what a lost message missed: a pair whose counting audit differs from its fact,
  a fact older than its audit's last review, rerun or pin.
- A trigger on ``fiche_cache`` (migration 0002) copies a fiche's group, agent, product and sale date into
  its facts in the transaction that changes them.

Costs: the LLM cost of the audit (its steps and reruns) and the speech-to-text cost of its fiche's calls,
from the usage ledger at the prices in settings (``costs``); ``manage.py analytics_rebuild`` after a price
change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet

from analytics.models import AuditFact
from audits.services.counting import CountingChange
from core.dispatch import send

logger = logging.getLogger("analytics.services")

Pair = tuple[int, int]  # (fiche pk, config id)

# Advisory lock namespaces (pg_advisory_xact_lock(int, int)).
_CONFIG_LOCK = 22_001
_PAIR_LOCK = 22_002

# The audits that count: one per (fiche, config) among the audits matching {where}.
_COUNTING = """
SELECT DISTINCT ON (a.fiche_id, a.config_id) a.id, a.fiche_id, a.config_id
FROM audits a JOIN audit_configs c ON c.id = a.config_id
WHERE a.purpose = 'production' AND a.status = 'completed'
  AND (a.pinned_at IS NOT NULL OR a.config_version_id = c.current_version_id)
  AND ({where})
ORDER BY a.fiche_id, a.config_id, a.pinned_at DESC NULLS LAST, a.completed_at DESC NULLS LAST, a.created_at DESC
"""

_INSERT_AUDIT_FACTS = """
INSERT INTO analytics_audit_facts (
    audit_id, fiche_id, config_id, config_version_id, sales_date, week, month, groupe, crm_user_id, agent_name,
    produit, score_percentage, niveau, is_compliant, needs_review, critical_misses, audited_seconds, llm_cost,
    stt_cost, completed_at, refreshed_at)
SELECT a.id, a.fiche_id, a.config_id, a.config_version_id, f.sales_date,
       date_trunc('week', f.sales_date)::date, date_trunc('month', f.sales_date)::date,
       f.groupe, f.crm_user_id, f.agent_name, f.produit, a.score_percentage, a.niveau, a.is_compliant,
       a.needs_review,
       CASE WHEN jsonb_typeof(a.critical_issues) = 'array' THEN jsonb_array_length(a.critical_issues) ELSE 0 END,
       COALESCE((SELECT sum(COALESCE(t.duration_seconds, r.duration_seconds, 0))
                 FROM transcriptions t JOIN recordings r ON r.id = t.recording_id
                 WHERE t.fiche_id = a.fiche_id AND t.status = 'completed'), 0),
       0, 0, a.completed_at, clock_timestamp()
FROM ({counting}) counting
JOIN audits a ON a.id = counting.id
JOIN fiche_cache f ON f.id = a.fiche_id
RETURNING audit_id
"""

# The effective verdict: the reviewer's, else pending for an advisory AI verdict, else the AI's after the gate.
_INSERT_POINT_FACTS = """
INSERT INTO analytics_point_facts (
    audit_id, config_id, config_version_id, step_position, control_point_index, is_critical, status,
    sales_date, week, month, groupe, crm_user_id, produit)
SELECT af.audit_id, af.config_id, af.config_version_id, sr.position, cp.index, COALESCE(d.is_critical, false),
       CASE WHEN cp.human_status IS NOT NULL THEN cp.human_status
            WHEN cp.advisory THEN 'pending' ELSE cp.status END,
       af.sales_date, af.week, af.month, af.groupe, af.crm_user_id, af.produit
FROM analytics_audit_facts af
JOIN audit_step_results sr ON sr.audit_id = af.audit_id AND sr.status = 'completed'
JOIN audit_control_point_results cp ON cp.step_result_id = sr.id
LEFT JOIN audit_control_points d ON d.step_id = sr.step_id AND d.index = cp.index
WHERE af.audit_id = ANY(%s::uuid[])
"""

_INSERT_POINT_DAYS = """
INSERT INTO analytics_point_days (
    config_id, step_position, control_point_index, is_critical, status, sales_date, week, month, groupe, produit, n)
SELECT config_id, step_position, control_point_index, is_critical, status, sales_date, week, month, groupe, produit,
       count(*)
FROM analytics_point_facts WHERE config_id = %s
GROUP BY config_id, step_position, control_point_index, is_critical, status, sales_date, week, month, groupe, produit
"""

_IN_PAIRS = "({table}fiche_id, {table}config_id) IN (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))"


def _insert(cursor: Any, where: str, params: list[Any], *, config_id: int | None = None) -> list[Any]:
    """Insert the facts of the audits that count among those matching ``where`` (on ``audits a``), with their
    costs; the rollup is the caller's."""
    cursor.execute(_INSERT_AUDIT_FACTS.format(counting=_COUNTING.format(where=where)), params)
    audit_ids = [row[0] for row in cursor.fetchall()]
    if audit_ids:
        cursor.execute(_INSERT_POINT_FACTS, [audit_ids])
        facts = (
            AuditFact.objects.filter(config_id=config_id)
            if config_id
            else AuditFact.objects.filter(audit_id__in=audit_ids)
        )
        _fill_costs(cursor, facts)
    return audit_ids


def _days(cursor: Any, in_pairs: str, params: list[Any]) -> set[tuple[int, Any]]:
    cursor.execute(f"SELECT DISTINCT config_id, sales_date FROM analytics_audit_facts WHERE {in_pairs}", params)
    return {(int(c), d) for c, d in cursor.fetchall()}


def refresh_pairs(pairs: Iterable[Pair]) -> int:
    """Replace the facts of these (fiche pk, config id) pairs by those of the audit that counts now (none when
    none does). Returns the audit facts written."""
    wanted = sorted({(int(f), int(c)) for f, c in pairs})
    if not wanted:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        for config_id in sorted({c for _, c in wanted}):
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", [_CONFIG_LOCK, config_id])
        for fiche_id, config_id in wanted:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_PAIR_LOCK, f"{fiche_id}:{config_id}"])
        params = [[f for f, _ in wanted], [c for _, c in wanted]]
        in_pairs = _IN_PAIRS.format(table="")
        days = _days(cursor, in_pairs, params)
        cursor.execute(
            f"DELETE FROM analytics_point_facts WHERE audit_id IN (SELECT audit_id FROM analytics_audit_facts "
            f"WHERE {in_pairs})",
            params,
        )
        cursor.execute(f"DELETE FROM analytics_audit_facts WHERE {in_pairs}", params)
        written = len(_insert(cursor, _IN_PAIRS.format(table="a."), params))
        # The rollup of every (config, day) whose facts changed, in a fixed order (day locks never cross).
        for day_config, day in sorted(days | _days(cursor, in_pairs, params)):
            cursor.execute("SELECT analytics_point_day_refresh(%s, %s)", [day_config, day])
        return written


def rebuild_config(config_id: int) -> int:
    """Every fact of the config anew (its active version changed). Returns the audit facts written."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_CONFIG_LOCK, config_id])
        cursor.execute("DELETE FROM analytics_point_days WHERE config_id = %s", [config_id])
        cursor.execute("DELETE FROM analytics_point_facts WHERE config_id = %s", [config_id])
        cursor.execute("DELETE FROM analytics_audit_facts WHERE config_id = %s", [config_id])
        written = len(_insert(cursor, "a.config_id = %s", [config_id], config_id=config_id))
        cursor.execute(_INSERT_POINT_DAYS, [config_id])
    logger.info("analytics_config_rebuilt", extra={"config_id": config_id, "audits": written})
    return written


def rebuild_all() -> int:
    from audits.models import AuditConfig

    return sum(rebuild_config(pk) for pk in AuditConfig.objects.order_by("pk").values_list("pk", flat=True))


def _fill_costs(cursor: Any, facts: QuerySet[AuditFact]) -> None:
    """The facts' LLM cost (the audit's steps and reruns) and speech-to-text cost (its fiche's calls), from the
    usage ledger at the configured prices (``costs.pricing.cost_expression``): one set-based UPDATE each."""
    from costs.models import UsageKind
    from costs.selectors import cost_per

    chosen, chosen_params = facts.values("audit_id").query.sql_with_params()
    for kind, key, column in ((UsageKind.LLM, "audit_id", "llm_cost"), (UsageKind.STT, "fiche_id", "stt_cost")):
        sql, params = cost_per(kind, key, facts.values(key)).query.sql_with_params()
        cursor.execute(
            f"UPDATE analytics_audit_facts f SET {column} = COALESCE(c.sum_cost, 0) FROM ({sql}) c "
            f"WHERE f.{key} = c.{key} AND f.audit_id IN ({chosen})",
            [*params, *chosen_params],
        )


# --- Hooks and reconciliation -------------------------------------------------------------------------------


def counting_changed(change: CountingChange) -> None:
    """The audits' hook (after their commit): refresh the pair, or rebuild the config, through a task (a broker
    down: the reconciler repairs it)."""
    from analytics.tasks import analytics_rebuild_config, analytics_refresh

    if change.fiche_id is None:
        send(analytics_rebuild_config, change.config_id)
    else:
        send(analytics_refresh, [[change.fiche_id, change.config_id]])


# Pairs whose fact is wrong: the counting audit differs (or one side is missing), the fact is older than its
# audit's last change (score or niveau moved, a review, a rerun or a pin since), or its copy of the fiche's
# dimensions differs (a refresh that raced the fiche's change).
_STALE = """
WITH counting AS ({counting})
SELECT COALESCE(c.fiche_id, f.fiche_id), COALESCE(c.config_id, f.config_id)
FROM counting c FULL OUTER JOIN analytics_audit_facts f ON f.fiche_id = c.fiche_id AND f.config_id = c.config_id
WHERE c.id IS DISTINCT FROM f.audit_id
UNION
SELECT f.fiche_id, f.config_id
FROM analytics_audit_facts f JOIN audits a ON a.id = f.audit_id JOIN fiche_cache fc ON fc.id = f.fiche_id
WHERE a.score_percentage IS DISTINCT FROM f.score_percentage OR a.niveau IS DISTINCT FROM f.niveau
   OR fc.groupe IS DISTINCT FROM f.groupe OR fc.crm_user_id IS DISTINCT FROM f.crm_user_id
   OR fc.produit IS DISTINCT FROM f.produit OR fc.sales_date <> f.sales_date
   OR fc.agent_name IS DISTINCT FROM f.agent_name
   OR a.pinned_at > f.refreshed_at
   OR EXISTS (SELECT 1 FROM audit_step_results sr
              JOIN audit_step_result_human_reviews h ON h.step_result_id = sr.id
              WHERE sr.audit_id = a.id AND h.created_at > f.refreshed_at)
   OR EXISTS (SELECT 1 FROM audit_step_result_rerun_events e
              WHERE e.audit_id = a.id AND e.completed_at > f.refreshed_at)
"""

RECONCILE_BATCH = 500


def stale_pairs() -> list[Pair]:
    with connection.cursor() as cursor:
        cursor.execute(_STALE.format(counting=_COUNTING.format(where="true")))
        return [(int(f), int(c)) for f, c in cursor.fetchall()]


def reconcile() -> dict[str, int]:
    """Beat: refresh every pair whose facts went stale (a lost hook message, a crash between commit and hook).
    A fact refreshed while the check ran is simply refreshed again (idempotent)."""
    pairs = stale_pairs()
    for start in range(0, len(pairs), RECONCILE_BATCH):
        refresh_pairs(pairs[start : start + RECONCILE_BATCH])
    if pairs:
        logger.warning("analytics_reconciled", extra={"pairs": len(pairs)})
    return {"refreshed": len(pairs)}
