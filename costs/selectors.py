"""Reads of costs: the costs report (grouped by day, week, month, user, audit, run, model or purpose; one
aggregate query for the rows, one for the totals), the budgets a user may see, and the cost blocks other apps
show (an audit's, a fiche's speech-to-text) — each one query.

Nothing through a side door: the report reads only usage whose fiche is in the asker's ``audits`` read scope
(a user never learns what work on a fiche they cannot read cost); the global budget's figures only for a user
whose ``audits`` read scope is ALL. Money is given as decimal strings (6 places) in ``COST_CURRENCY``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.contrib.postgres.aggregates import ArrayAgg
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncMonth, TruncWeek

from accounts.grants import Scope, has_grant, scope_for
from accounts.permissions import scope_queryset
from costs import budgets
from costs.models import UsageKind, UsageRecord
from costs.pricing import MONEY_FIELD, cost_expression, currency, llm_prices, money
from fiches.models import Recording

if TYPE_CHECKING:
    from accounts.models import User

GROUPINGS = ("day", "week", "month", "user", "audit", "transcription_run", "model", "purpose")
TIME_GROUPINGS = ("day", "week", "month")
MAX_ROWS = 1000  # rows of one report (the largest costs first); the totals always cover everything


def usage_in_scope(user: User) -> QuerySet[UsageRecord]:
    """Usage on fiches in the user's ``audits`` read scope (ALL: every row, unattributed ones included)."""
    return scope_queryset(
        UsageRecord.objects.all(), user, "audits", group_field="fiche__groupe", user_field="fiche__crm_user_id"
    )


def _sums() -> dict[str, Any]:
    """The aggregates of a report row (aliases never shadow a column: a later aggregate may read it)."""
    cost = cost_expression()
    zero = Decimal(0)
    return {
        "sum_llm_cost": Coalesce(Sum(cost, filter=Q(kind=UsageKind.LLM)), zero, output_field=MONEY_FIELD),
        "sum_stt_cost": Coalesce(Sum(cost, filter=Q(kind=UsageKind.STT)), zero, output_field=MONEY_FIELD),
        "sum_prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
        "sum_completion_tokens": Coalesce(Sum("completion_tokens"), 0),
        "sum_cached_tokens": Coalesce(Sum("cached_tokens"), 0),
        "sum_audio_seconds": Coalesce(Sum("audio_seconds"), 0.0),
        "sum_calls": Count("id"),
        "sum_models": ArrayAgg("model", distinct=True, filter=Q(kind=UsageKind.LLM), default=[]),
    }


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    llm_cost, stt_cost = money(row["sum_llm_cost"]), money(row["sum_stt_cost"])
    priced = llm_prices()
    models = row["sum_models"] or []
    return {
        "llm_cost": str(llm_cost),
        "stt_cost": str(stt_cost),
        "cost": str(llm_cost + stt_cost),
        "prompt_tokens": int(row["sum_prompt_tokens"]),
        "completion_tokens": int(row["sum_completion_tokens"]),
        "cached_tokens": int(row["sum_cached_tokens"]),
        "audio_seconds": round(float(row["sum_audio_seconds"]), 3),
        "calls": int(row["sum_calls"]),
        "priced_by_default": any(m not in priced for m in models),
        "priced_by_default_models": sorted(m for m in models if m not in priced),
    }


@dataclass(frozen=True)
class _Grouping:
    values: tuple[str, ...]  # what the rows are grouped by (the first is the key)
    annotate: dict[str, Any]


def _grouping(group_by: str) -> _Grouping:
    if group_by == "week":
        return _Grouping(("period",), {"period": TruncWeek("day")})
    if group_by == "month":
        return _Grouping(("period",), {"period": TruncMonth("day")})
    if group_by == "day":
        return _Grouping(("period",), {"period": F("day")})
    return {
        "user": _Grouping(("user_id", "user__email"), {}),
        "audit": _Grouping(("audit_id", "audit__fiche__fiche_id"), {}),
        "transcription_run": _Grouping(("transcription_run_id", "transcription_run__fiche__fiche_id"), {}),
        "model": _Grouping(("model",), {}),
        "purpose": _Grouping(("purpose",), {}),
    }[group_by]


def _key_and_label(group_by: str, row: dict[str, Any], *, viewer: User, sees_users: bool) -> tuple[Any, str]:
    if group_by in TIME_GROUPINGS:
        period: date = row["period"]
        if hasattr(period, "date"):  # a datetime from the Trunc on some backends
            period = period.date()
        if group_by == "week":
            year, week, _ = period.isocalendar()
            return period.isoformat(), f"{year}-W{week:02d}"
        if group_by == "month":
            return period.isoformat(), period.strftime("%Y-%m")
        return period.isoformat(), period.isoformat()
    if group_by == "user":
        user_id = row["user_id"]
        if user_id is None:
            return None, "unattributed (automation)"
        if sees_users or user_id == viewer.pk:
            return user_id, str(row["user__email"])
        return user_id, f"user #{user_id}"
    if group_by == "audit":
        audit_id = row["audit_id"]
        return (str(audit_id), f"audit of fiche {row['audit__fiche__fiche_id']}") if audit_id else (None, "no audit")
    if group_by == "transcription_run":
        run_id = row["transcription_run_id"]
        if run_id is None:
            return None, "no transcription run"
        return str(run_id), f"transcription of fiche {row['transcription_run__fiche__fiche_id']}"
    value = row[group_by]
    return value, str(value)


def costs_report(user: User, *, date_from: date, date_to: date, group_by: str) -> dict[str, Any]:
    """The cost of the usage in the user's scope between ``date_from`` and ``date_to`` (budget days, inclusive),
    grouped by ``group_by``: rows ``{key, label, llm_cost, stt_cost, cost, prompt_tokens, completion_tokens,
    cached_tokens, audio_seconds, calls, priced_by_default}`` (in time order for day/week/month, the largest
    cost first otherwise, at most ``MAX_ROWS``), the totals, and the cost per audited minute of call: the
    period's cost over the minutes of the recordings of the fiches audited (or rerun) in it."""
    usage = usage_in_scope(user).filter(day__gte=date_from, day__lte=date_to)
    grouping = _grouping(group_by)
    rows_qs = usage.annotate(**grouping.annotate).values(*grouping.values).annotate(**_sums())
    if group_by in TIME_GROUPINGS:
        rows_qs = rows_qs.order_by(grouping.values[0])
    else:
        rows_qs = rows_qs.order_by((F("sum_llm_cost") + F("sum_stt_cost")).desc(), *grouping.values)
    rows = list(rows_qs[: MAX_ROWS + 1])
    sees_users = has_grant(user, "users", "read")
    out = []
    for row in rows[:MAX_ROWS]:
        key, label = _key_and_label(group_by, row, viewer=user, sees_users=sees_users)
        out.append({"key": key, "label": label, **_figures(row)})
    totals = _figures(usage.aggregate(**_sums()))
    audited = usage.filter(purpose__in=("audit_step", "rerun"), fiche__isnull=False).values("fiche_id")
    seconds = Recording.objects.filter(fiche_id__in=audited).aggregate(total=Sum("duration_seconds"))["total"] or 0.0
    minutes = Decimal(str(round(float(seconds) / 60, 3)))
    per_minute = money(Decimal(totals["cost"]) / minutes) if minutes > 0 else None
    return {
        "from": date_from.isoformat(),
        "to": date_to.isoformat(),
        "group_by": group_by,
        "currency": currency(),
        "rows": out,
        "truncated": len(rows) > MAX_ROWS,
        "totals": {
            **totals,
            "audited_call_minutes": float(minutes),
            "cost_per_audited_minute": None if per_minute is None else str(per_minute),
        },
    }


# --- Budgets ----------------------------------------------------------------------------------------------


def budgets_for_user(user: User) -> dict[str, Any]:
    """Per kind, the user's own daily budget always; the global one only to a user whose ``audits`` read scope
    is ALL (everyone else gets ``null``: the global spend is everyone's work)."""
    sees_global = scope_for(user, "audits", "read") == Scope.ALL
    return {
        "mode": budgets.budget_mode(),
        "currency": currency(),
        "budgets": [
            {
                "kind": kind,
                "user": budgets.budget_state(kind, user).as_dict(),
                "global": budgets.budget_state(kind).as_dict() if sees_global else None,
            }
            for kind in (UsageKind.LLM.value, UsageKind.STT.value)
        ],
    }


# --- Cost blocks of other apps ----------------------------------------------------------------------------


def cost_per(kind: str, key: str, among: Iterable[Any] | QuerySet[Any]) -> QuerySet[Any]:
    """Rows ``{key, sum_cost, sum_seconds}``: the cost (and audio seconds) of the usage of ``kind`` per ``key``
    (``audit_id``, ``fiche_id``) among ``among`` (ids, or a subquery: the analytics facts update from it in SQL)."""
    return (
        UsageRecord.objects.filter(kind=kind, **{f"{key}__in": among})
        .values(key)
        .annotate(sum_cost=Sum(cost_expression()), sum_seconds=Sum("audio_seconds"))
    )


def audit_costs(audit_ids: Iterable[object]) -> dict[str, Decimal]:
    """The LLM cost of each audit, its reruns included (one query); audits without usage are absent."""
    ids = [str(pk) for pk in audit_ids]
    rows = cost_per(UsageKind.LLM, "audit_id", ids) if ids else []
    return {str(row["audit_id"]): money(row["sum_cost"]) for row in rows}


def fiche_stt_costs(fiche_ids: Iterable[int]) -> dict[int, tuple[Decimal, float]]:
    """``fiche pk → (speech-to-text cost, audio seconds)`` of each fiche's transcriptions (one query)."""
    ids = list(fiche_ids)
    rows = cost_per(UsageKind.STT, "fiche_id", ids) if ids else []
    return {int(row["fiche_id"]): (money(row["sum_cost"]), float(row["sum_seconds"] or 0.0)) for row in rows}


def audit_cost_block(audit_id: uuid.UUID | str) -> dict[str, Any]:
    """What an audit's LLM calls cost (its steps and reruns), for the audit's detail: one query."""
    row = UsageRecord.objects.filter(audit_id=audit_id, kind=UsageKind.LLM).aggregate(**_sums())
    figures = _figures(row)
    return {
        "currency": currency(),
        "llm_cost": figures["llm_cost"],
        "prompt_tokens": figures["prompt_tokens"],
        "completion_tokens": figures["completion_tokens"],
        "cached_tokens": figures["cached_tokens"],
        "calls": figures["calls"],
        "priced_by_default": figures["priced_by_default"],
        "priced_by_default_models": figures["priced_by_default_models"],
    }


def stt_cost_block(*, fiche_id: int, run_id: uuid.UUID | str | None = None) -> dict[str, Any]:
    """What the speech-to-text of a fiche's recordings cost, and of its run ``run_id`` (one query)."""
    cost = cost_expression()
    sums: dict[str, Any] = {
        "sum_cost": Coalesce(Sum(cost), Decimal(0), output_field=MONEY_FIELD),
        "sum_seconds": Coalesce(Sum("audio_seconds"), 0.0),
    }
    if run_id is not None:
        in_run = Q(transcription_run_id=run_id)
        sums["sum_run_cost"] = Coalesce(Sum(cost, filter=in_run), Decimal(0), output_field=MONEY_FIELD)
        sums["sum_run_seconds"] = Coalesce(Sum("audio_seconds", filter=in_run), 0.0)
    row = UsageRecord.objects.filter(fiche_id=fiche_id, kind=UsageKind.STT).aggregate(**sums)
    return {
        "currency": currency(),
        "stt_cost": str(money(row["sum_cost"])),
        "audio_seconds": round(float(row["sum_seconds"]), 3),
        "run_stt_cost": str(money(row["sum_run_cost"])) if run_id is not None else None,
        "run_audio_seconds": round(float(row["sum_run_seconds"]), 3) if run_id is not None else None,
    }
