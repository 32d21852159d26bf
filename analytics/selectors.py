"""Compliance figures read from the facts (``analytics.models``), always inside the reader's ``audits`` read
scope (the facts carry the fiche's group and agent: the same rule as every audit read).

Per audit (dimensions ``overall``, ``agent``, ``group``, ``product``, ``config_version``): the audits that
count, how many are compliant (``compliance_rate`` = compliant / audits), the niveau distribution, the average
score, the critical misses (critical points or steps not passed, summed) and the audits with one, the audited
call minutes and the cost (LLM + speech-to-text; ``cost_per_audited_minute``).
Per control point (``control_point``, keyed like calibration by config, step position and point index): the
verdicts by status, ``compliance_rate`` = passed / applicable (``not_applicable`` excluded; ``uncertain`` and
``pending`` count as not passed), the critical misses.
Every rate comes with the counts behind it; a rate over nothing is ``null``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Avg, Count, Max, Q, QuerySet, Sum, Value

from accounts.grants import Scope, scope_for
from accounts.models import User
from accounts.permissions import scope_queryset
from analytics.models import AuditFact, PointDay, PointFact
from core.exceptions import InvalidInput

DIMENSIONS = ("overall", "agent", "group", "control_point", "product", "config_version")
PERIODS = ("day", "week", "month", "all")
NIVEAUX = ("EXCELLENT", "BON", "ACCEPTABLE", "INSUFFISANT", "REJET")
STATUSES = ("pass", "fail", "uncertain", "pending", "not_applicable")
MISSED = ("fail", "uncertain", "pending")
MAX_RANGE_DAYS = 731
DEFAULT_RANGE_DAYS = 30
WORST_DIMENSIONS = ("control_point", "agent")

_PERIOD_FIELD = {"day": "sales_date", "week": "week", "month": "month"}
_AUDIT_KEY = {"agent": "crm_user_id", "group": "groupe", "product": "produit", "config_version": "config_version_id"}


@dataclass(frozen=True)
class Query:
    date_from: date
    date_to: date
    by: str = "overall"
    period: str = "all"
    config_id: int | None = None
    group: str | None = None
    agent: str | None = None
    product: str | None = None

    @property
    def days(self) -> int:
        return (self.date_to - self.date_from).days + 1

    def previous(self) -> Query:
        """The period of the same length just before."""
        return replace(
            self, date_from=self.date_from - timedelta(days=self.days), date_to=self.date_from - timedelta(1)
        )


def _date(value: str, name: str, errors: dict[str, list[str]]) -> date | None:
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors[name] = [f"Not a date (YYYY-MM-DD): {value!r}."]
        return None


def parse_query(params: Mapping[str, str], *, dimensions: tuple[str, ...] = DIMENSIONS, today: date) -> Query:
    """The query of the request's parameters (``from``, ``to``, ``by``, ``period``, ``config_id``, ``group``,
    ``agent``, ``product``); ``InvalidInput`` (400) naming each bad one."""
    errors: dict[str, list[str]] = {}
    date_to = _date(params["to"], "to", errors) if params.get("to") else today
    date_from = (
        _date(params["from"], "from", errors)
        if params.get("from")
        else (date_to - timedelta(days=DEFAULT_RANGE_DAYS - 1) if date_to else None)
    )
    by = params.get("by") or dimensions[0]
    if by not in dimensions:
        errors["by"] = [f"One of {', '.join(dimensions)}."]
    period = params.get("period") or "all"
    if period not in PERIODS:
        errors["period"] = [f"One of {', '.join(PERIODS)}."]
    config_id = None
    if params.get("config_id"):
        try:
            config_id = int(params["config_id"])
        except ValueError:
            errors["config_id"] = ["An integer."]
    if date_from and date_to:
        if date_from > date_to:
            errors["from"] = ["Must not be after 'to'."]
        elif (date_to - date_from).days + 1 > MAX_RANGE_DAYS:
            errors["to"] = [f"The range is at most {MAX_RANGE_DAYS} days."]
    if errors:
        raise InvalidInput("Invalid analytics query.", code="invalid_analytics_query", details=errors)
    assert date_from is not None and date_to is not None
    return Query(
        date_from=date_from,
        date_to=date_to,
        by=by,
        period=period,
        config_id=config_id,
        group=params.get("group") or None,
        agent=params.get("agent") or None,
        product=params.get("product") or None,
    )


def _scoped(queryset: QuerySet, user: User) -> QuerySet:
    return scope_queryset(queryset, user, "audits", action="read", group_field="groupe", user_field="crm_user_id")


def _filtered(queryset: QuerySet, user: User, q: Query) -> QuerySet:
    rows = _scoped(queryset, user).filter(sales_date__gte=q.date_from, sales_date__lte=q.date_to)
    if q.config_id is not None:
        rows = rows.filter(config_id=q.config_id)
    if q.group is not None:
        rows = rows.filter(groupe=q.group)
    if q.agent is not None:
        rows = rows.filter(crm_user_id=q.agent)
    if q.product is not None:
        rows = rows.filter(produit=q.product)
    return rows


def audit_facts_for(user: User, q: Query) -> QuerySet[AuditFact]:
    return _filtered(AuditFact.objects.all(), user, q)


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _money(value: Any) -> str:
    return str((Decimal(value or 0)).quantize(Decimal("0.000001")))


def _period_value(row: dict[str, Any], period: str) -> str | None:
    if period == "all":
        return None
    value = row[_PERIOD_FIELD[period]]
    return value.isoformat() if value else None


# --- Per audit ----------------------------------------------------------------------------------------------


def _audit_rows(user: User, q: Query) -> list[dict[str, Any]]:
    keys = [_AUDIT_KEY[q.by]] if q.by in _AUDIT_KEY else []
    if q.period != "all":
        keys.append(_PERIOD_FIELD[q.period])
    niveau_counts = {f"n_{n}": Count("pk", filter=Q(niveau=n)) for n in NIVEAUX}
    facts = audit_facts_for(user, q)
    # ``values()`` without a key would group by every column: the overall row groups by a constant instead.
    grouped: Any = facts.values(*keys) if keys else facts.annotate(overall=Value(1)).values("overall")
    rows: list[dict[str, Any]] = list(
        grouped.annotate(
            audits=Count("pk"),
            compliant=Count("pk", filter=Q(is_compliant=True)),
            average_score=Avg("score_percentage"),
            misses=Sum("critical_misses"),
            with_critical=Count("pk", filter=Q(critical_misses__gt=0)),
            to_review=Count("pk", filter=Q(needs_review=True)),
            seconds=Sum("audited_seconds"),
            llm=Sum("llm_cost"),
            stt=Sum("stt_cost"),
            agent=Max("agent_name"),
            **niveau_counts,
        ).order_by(*keys)
    )
    labels = _version_labels({r["config_version_id"] for r in rows}) if q.by == "config_version" else {}
    out = []
    for r in rows:
        if not r["audits"]:
            continue  # the overall row of an empty selection
        key = r[keys[0]] if q.by in _AUDIT_KEY else None
        cost = Decimal(r["llm"] or 0) + Decimal(r["stt"] or 0)
        seconds = float(r["seconds"] or 0)
        out.append(
            {
                "key": None if key is None else str(key),
                "label": _audit_label(q.by, key, r, labels),
                "period": _period_value(r, q.period),
                "audits": r["audits"],
                "compliant": r["compliant"],
                "compliance_rate": _rate(r["compliant"], r["audits"]),
                "average_score": None if r["average_score"] is None else round(r["average_score"], 2),
                "niveaux": {n: r[f"n_{n}"] for n in NIVEAUX},
                "critical_misses": r["misses"] or 0,
                "audits_with_critical_miss": r["with_critical"],
                "needs_review": r["to_review"],
                "audited_minutes": round(seconds / 60, 2),
                "llm_cost": _money(r["llm"]),
                "stt_cost": _money(r["stt"]),
                "cost": _money(cost),
                "cost_per_audit": _money(cost / r["audits"]) if r["audits"] else None,
                "cost_per_audited_minute": _money(cost / Decimal(seconds / 60)) if seconds else None,
            }
        )
    return out


def _audit_label(by: str, key: Any, row: dict[str, Any], versions: dict[int, str]) -> str:
    if by == "overall":
        return "all"
    if by == "agent":
        return row["agent"] or (key or "(no agent)")
    if by == "config_version":
        return versions.get(key, str(key))
    return key or f"(no {by})"


def _version_labels(ids: set[int]) -> dict[int, str]:
    from audits.models import AuditConfigVersion

    return {v.pk: f"{v.name} v{v.version}" for v in AuditConfigVersion.objects.filter(pk__in=ids)}


# --- Per control point ------------------------------------------------------------------------------------


def point_facts_for(user: User, q: Query) -> QuerySet[PointFact]:
    return _filtered(PointFact.objects.all(), user, q)


def _point_rows(user: User, q: Query) -> list[dict[str, Any]]:
    keys = ["config_id", "step_position", "control_point_index"]
    if q.period != "all":
        keys.append(_PERIOD_FIELD[q.period])
    # One count per (point, period, status): far cheaper than a filtered count per status over a year of rows.
    # Without an agent in the question (the reader's scope is not SELF, no agent filter), the per-day rollup
    # answers (~7 times fewer rows than the facts); otherwise the facts, through their agent index.
    if q.agent is None and scope_for(user, "audits", "read") in (Scope.ALL, Scope.GROUP):
        grouped = (
            _filtered(PointDay.objects.all(), user, q)
            .values(*keys, "status", "is_critical")
            .annotate(n=Sum("n"))
            .order_by()
        )
    else:
        grouped = point_facts_for(user, q).values(*keys, "status", "is_critical").annotate(n=Count("pk")).order_by()
    cells: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in grouped:
        cell_key = tuple(r[k] for k in keys)
        cell = cells.setdefault(
            cell_key, {"row": r, "counts": defaultdict(int), "critical_misses": 0, "critical": False}
        )
        cell["counts"][r["status"]] += r["n"]
        if r["is_critical"]:
            cell["critical"] = True
            if r["status"] in MISSED:
                cell["critical_misses"] += r["n"]
    labels = point_labels({k[0] for k in cells})
    out = []
    for cell_key in sorted(cells, key=lambda k: tuple("" if v is None else v for v in k)):
        cell = cells[cell_key]
        counts = cell["counts"]
        config_id, position, index = cell_key[:3]
        applicable = sum(counts[s] for s in STATUSES if s != "not_applicable")
        label = labels.get((config_id, position, index))
        out.append(
            {
                "key": f"{config_id}:{position}:{index}",
                "label": label["question"] if label else f"{position}.{index}",
                "period": _period_value(cell["row"], q.period),
                "config_id": config_id,
                "config_name": label["config_name"] if label else None,
                "step_position": position,
                "step_name": label["step_name"] if label else None,
                "control_point_index": index,
                "is_critical": cell["critical"],
                "verdicts": sum(counts.values()),
                "applicable": applicable,
                "passed": counts["pass"],
                "failed": counts["fail"],
                "uncertain": counts["uncertain"],
                "pending": counts["pending"],
                "not_applicable": counts["not_applicable"],
                "compliance_rate": _rate(counts["pass"], applicable),
                "critical_misses": cell["critical_misses"],
            }
        )
    return out


def point_labels(config_ids: set[int]) -> dict[tuple[int, int, int], dict[str, str]]:
    """(config, step position, point index) → its question, step and config names: from the config's active
    version, else the latest version that had the point."""
    from audits.models import AuditControlPointDefinition

    rows = (
        AuditControlPointDefinition.objects.filter(step__config_version__config_id__in=config_ids)
        .order_by("step__config_version__version")
        .values(
            "question",
            "index",
            "step__position",
            "step__name",
            "step__config_version_id",
            "step__config_version__config_id",
            "step__config_version__config__name",
            "step__config_version__config__current_version_id",
        )
    )
    labels: dict[tuple[int, int, int], dict[str, str]] = {}
    active: set[tuple[int, int, int]] = set()
    for r in rows:
        key = (r["step__config_version__config_id"], r["step__position"], r["index"])
        is_active = r["step__config_version_id"] == r["step__config_version__config__current_version_id"]
        if key in active and not is_active:
            continue
        labels[key] = {
            "question": r["question"],
            "step_name": r["step__name"],
            "config_name": r["step__config_version__config__name"],
        }
        if is_active:
            active.add(key)
    return labels


# --- The tables -------------------------------------------------------------------------------------------


def compliance_table(user: User, q: Query) -> list[dict[str, Any]]:
    return _point_rows(user, q) if q.by == "control_point" else _audit_rows(user, q)


def compliance_report(user: User, q: Query) -> dict[str, Any]:
    return {
        "from": q.date_from.isoformat(),
        "to": q.date_to.isoformat(),
        "by": q.by,
        "period": q.period,
        "filters": {"config_id": q.config_id, "group": q.group, "agent": q.agent, "product": q.product},
        "rows": compliance_table(user, q),
    }


def _worst_sort(row: dict[str, Any]) -> tuple[Any, ...]:
    rate = row["compliance_rate"]
    return (rate is None, rate if rate is not None else 0.0, -(row.get("applicable") or row.get("audits") or 0))


def worst(user: User, q: Query, *, limit: int = 10, min_count: int = 5) -> dict[str, Any]:
    """The control points or agents with the lowest compliance rate over the range (at least ``min_count``
    applicable verdicts / audits behind the rate), each with its rate over the period of the same length just
    before and the change in points (``change`` = now - before, ``null`` without a rate before)."""
    whole = replace(q, period="all")
    now_rows = compliance_table(user, whole)
    before = {r["key"]: r for r in compliance_table(user, whole.previous())}
    size = "applicable" if q.by == "control_point" else "audits"
    chosen = sorted((r for r in now_rows if r[size] >= min_count and r["compliance_rate"] is not None), key=_worst_sort)
    out = []
    for r in chosen[:limit]:
        prev = before.get(r["key"])
        prev_rate = prev["compliance_rate"] if prev else None
        out.append(
            {
                **r,
                "previous": {"compliance_rate": prev_rate, size: prev[size] if prev else 0},
                "change": None if prev_rate is None else round(r["compliance_rate"] - prev_rate, 4),
            }
        )
    previous = whole.previous()
    return {
        "from": q.date_from.isoformat(),
        "to": q.date_to.isoformat(),
        "previous_from": previous.date_from.isoformat(),
        "previous_to": previous.date_to.isoformat(),
        "by": q.by,
        "min_count": min_count,
        "rows": out,
    }


# --- Export ---------------------------------------------------------------------------------------------------

# (column, fact field): one row per audit that counts.
_AUDIT_EXPORT = (
    ("audit_id", "audit_id"),
    ("fiche_id", "fiche__fiche_id"),
    ("sales_date", "sales_date"),
    ("group", "groupe"),
    ("agent_id", "crm_user_id"),
    ("agent_name", "agent_name"),
    ("product", "produit"),
    ("config_id", "config_id"),
    ("config_version_id", "config_version_id"),
    ("score_percentage", "score_percentage"),
    ("niveau", "niveau"),
    ("is_compliant", "is_compliant"),
    ("critical_misses", "critical_misses"),
    ("needs_review", "needs_review"),
    ("audited_minutes", "audited_seconds"),
    ("llm_cost", "llm_cost"),
    ("stt_cost", "stt_cost"),
    ("completed_at", "completed_at"),
)
AUDIT_EXPORT_COLUMNS = tuple(column for column, _ in _AUDIT_EXPORT)
EXPORT_CHUNK = 2000


def audit_export_rows(user: User, q: Query) -> Iterator[list[Any]]:
    """One row per audit that counts, read from the database in chunks (a server-side cursor): never the
    whole export in memory."""
    rows = audit_facts_for(user, q).order_by("sales_date", "audit_id").values_list(*(f for _, f in _AUDIT_EXPORT))
    for r in rows.iterator(chunk_size=EXPORT_CHUNK):
        out: list[Any] = list(r)
        out[0] = str(out[0])
        out[14] = round((out[14] or 0) / 60, 2)
        out[15], out[16] = _money(out[15]), _money(out[16])
        yield out


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The flat columns of a compliance table (the niveau distribution spread into ``niveau_*`` columns)."""
    if not rows:
        return ["key", "label", "period"]
    columns = []
    for name, value in rows[0].items():
        if isinstance(value, dict):
            columns += [f"niveau_{k}" for k in value]
        else:
            columns.append(name)
    return columns


def table_values(row: dict[str, Any]) -> list[Any]:
    values: list[Any] = []
    for value in row.values():
        values += list(value.values()) if isinstance(value, dict) else [value]
    return values
