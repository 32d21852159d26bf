"""Analytics API: compliance figures over time, the worst points and agents, and their exports. Every figure
is read inside the caller's ``audits`` read scope: a user never gets a count built from an audit they could not
read through ``/api/audits``."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponseBase
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasGrant, request_user
from analytics import export, selectors
from analytics.api import serializers as s
from core.exceptions import InvalidInput
from core.openapi import errors

_RANGE = [
    OpenApiParameter("from", str, description="First sale date (YYYY-MM-DD; default: 30 days before `to`)."),
    OpenApiParameter("to", str, description="Last sale date (YYYY-MM-DD; default: today)."),
    OpenApiParameter("config_id", int, description="Only this audit config."),
    OpenApiParameter("group", str, description="Only this CRM group."),
    OpenApiParameter("agent", str, description="Only this agent (CRM user id)."),
    OpenApiParameter("product", str, description="Only this product (the fiche's produit)."),
]
_BY = OpenApiParameter("by", str, enum=list(selectors.DIMENSIONS), description="Rows per … (default overall).")
_PERIOD = OpenApiParameter(
    "period", str, enum=list(selectors.PERIODS), description="Columns per day, week (ISO, from Monday) or month."
)


def _query(request: Request, **kwargs: Any) -> selectors.Query:
    return selectors.parse_query(request.query_params, today=timezone.localdate(), **kwargs)


def _int(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidInput(
            f"{name} must be an integer from {low} to {high}.",
            code="invalid_analytics_query",
            details={name: [f"An integer from {low} to {high}."]},
        )
    return value


class ComplianceView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["analytics"],
        summary="Compliance figures per agent, group, control point, product or config version, over time",
        description=(
            "Only the audit that counts per fiche and config (the pinned one, else the latest completed production "
            "audit of the active version; never evaluation audits), inside your audits read scope, by the fiche's "
            "sale date. Per audit: audits, compliant, compliance_rate, the niveau distribution, average_score, "
            "critical misses, audited minutes and cost (LLM + speech-to-text, cost_per_audited_minute). Per "
            "control point: verdicts by status and compliance_rate = passed / applicable."
        ),
        parameters=[_BY, _PERIOD, *_RANGE],
        responses={200: s.ComplianceOutput, **errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        return Response(selectors.compliance_report(request_user(request), _query(request)))


class WorstView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["analytics"],
        summary="The worst control points or agents first, with the change against the previous period",
        description=(
            "Lowest compliance_rate first over the range, among rows with at least min_count applicable verdicts "
            "(control points) or audits (agents); previous = the same-length period just before; change = now - "
            "before (rate points), null without a rate before."
        ),
        parameters=[
            OpenApiParameter("by", str, enum=list(selectors.WORST_DIMENSIONS), description="Default control_point."),
            OpenApiParameter("limit", int, description="1-100 (default 10)."),
            OpenApiParameter("min_count", int, description="Default 5."),
            *_RANGE,
        ],
        responses={200: s.WorstOutput, **errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        q = _query(request, dimensions=selectors.WORST_DIMENSIONS)
        limit = _int(request, "limit", 10, low=1, high=100)
        min_count = _int(request, "min_count", 5, low=1, high=1_000_000)
        return Response(selectors.worst(request_user(request), q, limit=limit, min_count=min_count))


EXPORT_TABLES = ("compliance", "audits")


class ComplianceExportView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["analytics"],
        summary="Export a table as CSV or XLSX (streamed)",
        description=(
            "table=compliance: the rows of GET /api/analytics/compliance for the same parameters; table=audits: one "
            "row per audit that counts (sale date, group, agent, product, config version, score, niveau, "
            "compliance, critical misses, audited minutes, costs). Rows are read in chunks and streamed: a "
            "100k-row export never sits in memory."
        ),
        parameters=[
            OpenApiParameter("table", str, enum=list(EXPORT_TABLES), description="Default compliance."),
            OpenApiParameter("file_format", str, enum=list(export.FORMATS), description="Default csv."),
            _BY,
            _PERIOD,
            *_RANGE,
        ],
        responses={
            (200, export.CSV_CONTENT_TYPE): OpenApiResponse(OpenApiTypes.STR, description="CSV (UTF-8, a BOM)."),
            (200, export.XLSX_CONTENT_TYPE): OpenApiResponse(OpenApiTypes.BINARY, description="An XLSX workbook."),
            **errors(400, 401, 403),
        },
    )
    def get(self, request: Request) -> HttpResponseBase:
        table = request.query_params.get("table") or "compliance"
        file_format = request.query_params.get("file_format") or "csv"
        bad: dict[str, list[str]] = {}
        if table not in EXPORT_TABLES:
            bad["table"] = [f"One of {', '.join(EXPORT_TABLES)}."]
        if file_format not in export.FORMATS:
            bad["file_format"] = [f"One of {', '.join(export.FORMATS)}."]
        if bad:
            raise InvalidInput("Invalid export.", code="invalid_analytics_query", details=bad)
        user = request_user(request)
        q = _query(request)
        if table == "audits":
            columns, rows = list(selectors.AUDIT_EXPORT_COLUMNS), selectors.audit_export_rows(user, q)
            name = f"audits-{q.date_from}-{q.date_to}"
        else:
            table_rows = selectors.compliance_table(user, q)
            columns, rows = selectors.table_columns(table_rows), (selectors.table_values(r) for r in table_rows)
            name = f"compliance-{q.by}-{q.period}-{q.date_from}-{q.date_to}"
        if file_format == "csv":
            return export.csv_response(columns, rows, filename=name)
        return export.xlsx_response(columns, rows, filename=name, sheet=table)
