"""The ops console for analytics: the facts the figures are read from (read-only) and the **compliance
dashboard** (``auditfact/dashboard/``), charts a manager looks at: compliance over time per group, the ten
worst control points with their change against the previous period, and the niveau distribution, each with
a table of its numbers under it (readable without JavaScript).

Both read inside the admin user's own ``audits`` read scope (``analytics.selectors`` with ``request.user``):
a staff user who manages one group sees that group's figures only, and a staff user without the ``audits``
read grant gets a 403 (the "Analytics" section is not even listed for them). This is unlike the other admin
pages, which are governed by Django's model permissions: these figures are the ones the API serves, under
the same rule.

The charts are drawn by ``analytics/static/analytics/dashboard.js`` with Chart.js, vendored in
``analytics/static/analytics/vendor`` (no CDN: the admin works offline); the page embeds its data with
``json_script`` and runs no inline script.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts.grants import Scope, scope_for
from accounts.models import User
from accounts.permissions import scope_queryset
from analytics import selectors
from analytics.models import AuditFact
from audits.models import AuditConfig
from core.admin_views import ReadOnlyAdminMixin
from core.exceptions import InvalidInput

DASHBOARD_DAYS = 90
DASHBOARD_PERIODS = ("week", "month")
WORST_LIMIT = 10
WORST_MIN_COUNT = 5
# Lines drawn on the trend chart (the groups with the most audits); every group is in the table.
MAX_SERIES = 8
LABEL_CHARS = 60


def _reader(request: HttpRequest) -> User | None:
    """The request's user when they may read audits (at any scope), else ``None``."""
    user = request.user
    if isinstance(user, User) and scope_for(user, "audits", "read") is not None:
        return user
    return None


@admin.register(AuditFact)
class AuditFactAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The audits that count, one row per (fiche, config), inside the user's audits read scope: written by
    ``analytics.services`` only. The "Compliance dashboard" (``dashboard/``) charts them."""

    change_list_template = "admin/analytics/auditfact/change_list.html"
    list_display = (
        "sales_date",
        "fiche_link",
        "groupe",
        "agent",
        "produit",
        "config",
        "score_percentage",
        "niveau",
        "is_compliant",
        "critical_misses",
        "needs_review",
    )
    list_filter = ("niveau", "is_compliant", "needs_review", ("config", admin.RelatedOnlyFieldListFilter))
    search_fields = ("fiche__fiche_id", "crm_user_id", "agent_name", "groupe", "produit")
    list_select_related = ("fiche", "config")
    date_hierarchy = "sales_date"
    ordering = ("-sales_date", "audit_id")

    # The audits read grant governs this section, not Django's model permissions (see the module).
    def has_module_permission(self, request: HttpRequest) -> bool:
        return _reader(request) is not None

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return _reader(request) is not None

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditFact]:
        rows = super().get_queryset(request)
        user = _reader(request)
        if user is None:
            return rows.none()
        return scope_queryset(rows, user, "audits", action="read", group_field="groupe", user_field="crm_user_id")

    @admin.display(description="fiche", ordering="fiche__fiche_id")
    def fiche_link(self, obj: AuditFact) -> str:
        url = reverse("admin:audits_audit_change", args=[obj.audit_id])
        return format_html('<a href="{}" title="the audit that counts">{}</a>', url, obj.fiche.fiche_id)

    @admin.display(description="agent", ordering="agent_name")
    def agent(self, obj: AuditFact) -> str:
        return obj.agent_name or obj.crm_user_id or "—"

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {"dashboard_url": reverse("admin:analytics_dashboard"), **(extra_context or {})}
        return super().changelist_view(request, extra)

    def get_urls(self) -> list[URLPattern]:
        dashboard = path("dashboard/", self.admin_site.admin_view(self.dashboard_view), name="analytics_dashboard")
        return [dashboard, *super().get_urls()]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Compliance dashboard",
            "changelist_url": reverse("admin:analytics_auditfact_changelist"),
        }
        user = _reader(request)
        if user is None:
            return TemplateResponse(request, "admin/analytics/auditfact/dashboard.html", context, status=403)
        today = timezone.localdate()
        q, min_count, errors = _dashboard_query(request.GET, today=today)
        context.update(
            {
                "reader": True,
                "scope": _scope_text(user),
                "errors": errors,
                "q": q,
                "min_count": min_count,
                "periods": DASHBOARD_PERIODS,
                "configs": list(AuditConfig.objects.order_by("name", "pk").values("pk", "name", "is_active")),
                "default_days": DASHBOARD_DAYS,
                **dashboard_figures(user, q, min_count=min_count),
            }
        )
        return TemplateResponse(request, "admin/analytics/auditfact/dashboard.html", context)


# --- The dashboard's figures ---------------------------------------------------------------------------------


def _dashboard_query(params: Any, *, today: date) -> tuple[selectors.Query, int, dict[str, list[str]]]:
    """The query of the filter form (``from``, ``to``, ``config_id``, ``period`` week or month, ``min_count``),
    by default the last 90 days per week; with the errors of the bad fields (the defaults then apply)."""
    wanted = {k: params.get(k, "").strip() for k in ("from", "to", "config_id", "period")}
    errors: dict[str, list[str]] = {}
    if wanted["period"] and wanted["period"] not in DASHBOARD_PERIODS:
        errors["period"] = [f"One of {', '.join(DASHBOARD_PERIODS)}."]
    wanted["period"] = wanted["period"] if wanted["period"] in DASHBOARD_PERIODS else "week"
    if not wanted["from"]:
        try:
            until = date.fromisoformat(wanted["to"]) if wanted["to"] else today
        except ValueError:
            until = today  # parse_query names the bad 'to'
        wanted["from"] = (until - timedelta(days=DASHBOARD_DAYS - 1)).isoformat()
    try:
        q = selectors.parse_query(wanted, today=today)
    except InvalidInput as error:
        errors.update(error.details or {})
        q = selectors.parse_query(
            {"from": (today - timedelta(days=DASHBOARD_DAYS - 1)).isoformat(), "period": wanted["period"]},
            today=today,
        )
    min_count = WORST_MIN_COUNT
    raw = params.get("min_count", "").strip()
    if raw:
        try:
            min_count = int(raw)
            if min_count < 1:
                raise ValueError
        except ValueError:
            errors["min_count"] = ["A positive integer."]
            min_count = WORST_MIN_COUNT
    return q, min_count, errors


def _scope_text(user: User) -> str:
    scope = scope_for(user, "audits", "read")
    if scope == Scope.ALL:
        return "every group"
    if scope == Scope.GROUP:
        return f"your groups ({', '.join(user.groupes)})" if user.groupes else "your groups (none set: nothing)"
    return f"your own audits ({user.crm_user_id})" if user.crm_user_id else "your own audits (no CRM id: nothing)"


def _periods(q: selectors.Query) -> list[date]:
    """Every period of the range (the first and last may be partial): Mondays or firsts of the month."""
    if q.period == "week":
        start = q.date_from - timedelta(days=q.date_from.weekday())
        return [start + timedelta(weeks=n) for n in range((q.date_to - start).days // 7 + 1)]
    out, month = [], q.date_from.replace(day=1)
    while month <= q.date_to:
        out.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return out


def _period_label(day: date, period: str, *, with_year: bool) -> str:
    if period == "month":
        return f"{day:%b %Y}"
    return f"{day.day} {day:%b}" + (f" {day:%Y}" if with_year else "")


def _percent(rate: float | None) -> float | None:
    return None if rate is None else round(rate * 100, 1)


def _truncate(text: str, size: int = LABEL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1].rstrip() + "…"


def dashboard_figures(user: User, q: selectors.Query, *, min_count: int = WORST_MIN_COUNT) -> dict[str, Any]:
    """Everything the dashboard shows, read with ``user``'s audits scope: ``summary`` (the range against the
    previous one), ``trend`` (compliance per group and overall per period), ``worst`` (control points) and
    ``niveaux`` (per period); ``data`` is what the charts read (``json_script``)."""
    periods = _periods(q)
    keys = [p.isoformat() for p in periods]
    with_year = periods[0].year != periods[-1].year if periods else False
    labels = [_period_label(p, q.period, with_year=with_year) for p in periods]
    column = {k: n for n, k in enumerate(keys)}

    def cells() -> list[dict[str, Any] | None]:
        return [None] * len(keys)

    # Compliance over time: one line per group (the most audited drawn), the overall line on top.
    series: dict[str, dict[str, Any]] = {}
    for row in selectors.compliance_table(user, replace(q, by="group")):
        line = series.setdefault(row["key"] or "", {"key": row["key"], "label": row["label"], "cells": cells()})
        line["cells"][column[row["period"]]] = row
    overall_rows = selectors.compliance_table(user, replace(q, by="overall"))
    overall: dict[str, Any] = {"key": None, "label": "Overall", "cells": cells()}
    for row in overall_rows:
        overall["cells"][column[row["period"]]] = row
    lines = sorted(series.values(), key=lambda s: (-sum(c["audits"] for c in s["cells"] if c), s["label"]))
    for line in [*lines, overall]:
        line["audits"] = sum(c["audits"] for c in line["cells"] if c)
        line["compliant"] = sum(c["compliant"] for c in line["cells"] if c)
        line["percent"] = _percent(line["compliant"] / line["audits"]) if line["audits"] else None
        line["points"] = [
            {"percent": _percent(c["compliance_rate"]), "audits": c["audits"], "compliant": c["compliant"]}
            if c
            else None
            for c in line["cells"]
        ]

    # The niveau distribution: audits per niveau per period.
    niveaux = {n: [c["niveaux"][n] if c else 0 for c in overall["cells"]] for n in selectors.NIVEAUX}
    niveau_rows = [
        {"label": label, "audits": c["audits"] if c else 0, "counts": [c["niveaux"][n] if c else 0 for n in niveaux]}
        for label, c in zip(labels, overall["cells"], strict=True)
    ]

    # The worst control points over the whole range, with their change against the period just before.
    worst = selectors.worst(user, replace(q, by="control_point"), limit=WORST_LIMIT, min_count=min_count)
    worst_rows = [
        {
            "key": r["key"],
            "point": f"{r['step_position']}.{r['control_point_index']}",
            "label": _truncate(r["label"]),
            "question": r["label"],
            "step": r["step_name"],
            "config": r["config_name"],
            "critical": r["is_critical"],
            "percent": _percent(r["compliance_rate"]),
            "passed": r["passed"],
            "applicable": r["applicable"],
            "previous_percent": _percent(r["previous"]["compliance_rate"]),
            "previous_applicable": r["previous"]["applicable"],
            "change": None if r["change"] is None else round(r["change"] * 100, 1),
        }
        for r in worst["rows"]
    ]

    # The range at a glance, against the same-length range just before.
    now = selectors.compliance_table(user, replace(q, by="overall", period="all"))
    before = selectors.compliance_table(user, replace(q, by="overall", period="all").previous())
    summary = _summary(now[0] if now else None, before[0] if before else None)

    data = {
        "period": q.period,
        "periods": keys,
        "labels": labels,
        "trend": {
            "series": [
                {"key": s["key"], "label": s["label"], "audits": s["audits"], "points": s["points"]}
                for s in lines[:MAX_SERIES]
            ],
            "overall": {"label": overall["label"], "audits": overall["audits"], "points": overall["points"]},
        },
        "worst": worst_rows,
        "niveaux": {"names": list(niveaux), "counts": niveaux},
    }
    return {
        "summary": summary,
        "labels": labels,
        "trend_lines": lines,
        "trend_overall": overall,
        "drawn_series": min(len(lines), MAX_SERIES),
        "worst_rows": worst_rows,
        "worst_range": worst,
        "niveau_names": list(niveaux),
        "niveau_rows": niveau_rows,
        "has_data": bool(now),
        "data": data,
    }


def _summary(now: dict[str, Any] | None, before: dict[str, Any] | None) -> dict[str, Any]:
    def figures(row: dict[str, Any] | None) -> dict[str, Any]:
        if row is None:
            return {"audits": 0, "percent": None, "average_score": None, "with_critical": 0, "critical_percent": None}
        return {
            "audits": row["audits"],
            "percent": _percent(row["compliance_rate"]),
            "average_score": row["average_score"],
            "with_critical": row["audits_with_critical_miss"],
            "critical_percent": _percent(row["audits_with_critical_miss"] / row["audits"]),
        }

    current, previous = figures(now), figures(before)

    def change(name: str) -> float | None:
        a, b = current[name], previous[name]
        return None if a is None or b is None else round(a - b, 1)

    return {
        **current,
        "previous": previous,
        "percent_change": change("percent"),
        "score_change": change("average_score"),
        "critical_change": change("critical_percent"),
    }
