"""Automation API: schedules (CRUD and the manual trigger) and their runs. Views validate input, call
one service or selector, and return. GET needs automation.read, everything else automation.write;
what a response shows of fiches and notification targets follows the reader's own grants
(``automation.selectors``).

The views speak the front end's camelCase and everything behind them snake_case: their parsers, their
renderer and ``handle_exception`` convert (``automation.api.camel``)."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasGrant, request_user
from automation import selectors
from automation.api import serializers as s
from automation.api.camel import PARSER_CLASSES, CamelCaseJSONRenderer, api_named_errors, snake_case_query
from automation.services import schedules
from core.openapi import errors
from core.pagination import LimitOffset

SCHEDULE_ID = OpenApiParameter("schedule_id", int, OpenApiParameter.PATH)
RUN_ID = OpenApiParameter("run_id", str, OpenApiParameter.PATH, description="The run's UUID.")
PAGE = [OpenApiParameter("limit", int), OpenApiParameter("offset", int)]
VALIDATION = (
    "Validation runs on the effective config (the stored schedule with the input on top): DAILY needs "
    "`timeOfDay`, WEEKLY also `dayOfWeek`, MONTHLY `dayOfMonth`; a `relative` selection covers at most "
    "REFRESH_MAX_RANGE_DAYS days, a `dateRange` needs ordered dates within that cap, `manual` needs `ficheIds`. "
    'Errors name the field with dotted keys (`details: {"ficheSelection.relativeDays": [...]}`). '
    "`webhookUrl` goes through the SSRF guard (400 `unsafe_webhook_url`); `webhookSecret` is never returned. "
    "`ficheSelection.maxFiches` may lower AUTOMATION_MAX_FICHES, never raise it (400 naming the field). "
    "The creator owns the schedule: its runs act within the owner's grants as they are at run time. "
    "`ficheIds` and `groupes` must be within the scope of the owner and of the user making the change for every "
    "key the run uses (`fiches` read, `transcriptions` write when it transcribes, `audits` write when it audits): "
    "else 403 `scope_denied` naming the field, never a fiche (an unknown id gets the same answer; an id not "
    "cached is accepted only when every needed grant has scope ALL)."
)
VISIBILITY = (
    "`webhookUrl` and `notifyEmails` are null unless you hold automation.write; `ficheSelection.ficheIds` lists "
    "only the fiches you may read (a PATCH that sends `ficheIds` replaces the whole list)."
)


# The snake_case names of every input field (body and query): an error naming one shows its API name.
INPUT_FIELDS = frozenset([*s.ScheduleInput().fields, *s.ScheduleListQuery().fields, *s.RunListQuery().fields])


# camelCase on the wire, snake_case inside: request bodies (JSON, form, multipart) are read with snake_case
# keys, responses rendered with camelCase keys (the error envelope as built, its field names put in the API's
# names by ``handle_exception``). The rest of the API keeps the default classes. (No docstring: drf-spectacular
# would make it the description of every operation of the subclasses.)
class AutomationView(APIView):
    parser_classes = PARSER_CLASSES
    # Ours for JSON, and the browsable API under DEBUG as everywhere (config.settings).
    renderer_classes: list[type[BaseRenderer]] = [
        CamelCaseJSONRenderer,
        *([BrowsableAPIRenderer] if settings.DEBUG else []),
    ]

    def handle_exception(self, exc: Exception) -> Response:
        return super().handle_exception(api_named_errors(exc, INPUT_FIELDS))

    def get_permissions(self) -> list[BasePermission]:
        return [HasGrant("automation", "read" if self.request.method == "GET" else "write")()]


class ScheduleListView(AutomationView):
    pagination_class = LimitOffset  # so the schema documents the {count, next, previous, results} page

    @extend_schema(
        tags=["automation"],
        summary="Automation schedules by name",
        description=VISIBILITY,
        parameters=[s.ScheduleListQuery, *PAGE],
        responses={200: s.ScheduleOutput(many=True), **errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        query = s.ScheduleListQuery(data=snake_case_query(request.query_params))
        query.is_valid(raise_exception=True)
        paginator = LimitOffset()
        page = paginator.page(selectors.schedules_queryset(is_active=query.validated_data["is_active"]), request, self)
        return paginator.get_paginated_response(selectors.schedule_dicts(page, request_user(request)))

    @extend_schema(
        tags=["automation"],
        summary="Create a schedule",
        description=VALIDATION,
        request=s.ScheduleInput,
        responses={201: s.ScheduleOutput, **errors(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        data = s.ScheduleInput(data=request.data)
        data.is_valid(raise_exception=True)
        schedule = schedules.schedule_create(data=data.validated_data, user=request_user(request))
        return Response(selectors.schedule_dict(schedule, request_user(request)), status=201)


class ScheduleDetailView(AutomationView):
    @extend_schema(
        tags=["automation"],
        summary="A schedule",
        description=VISIBILITY,
        parameters=[SCHEDULE_ID],
        responses={200: s.ScheduleOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, schedule_id: int) -> Response:
        return Response(selectors.schedule_dict(selectors.schedule_get(schedule_id), request_user(request)))

    @extend_schema(
        tags=["automation"],
        summary="Edit a schedule: any subset of its fields (`ficheSelection` keys merge into the stored ones)",
        description=VALIDATION,
        parameters=[SCHEDULE_ID],
        request=s.ScheduleInput(partial=True),
        responses={200: s.ScheduleOutput, **errors(400, 401, 403, 404)},
    )
    def patch(self, request: Request, schedule_id: int) -> Response:
        data = s.ScheduleInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        schedule = schedules.schedule_update(
            schedule_id=schedule_id, patch=data.validated_data, user=request_user(request)
        )
        return Response(selectors.schedule_dict(schedule, request_user(request)))

    @extend_schema(
        tags=["automation"],
        summary="Delete a schedule (its runs keep their history)",
        parameters=[SCHEDULE_ID],
        responses={204: OpenApiResponse(description="Deleted."), **errors(401, 403, 404)},
    )
    def delete(self, request: Request, schedule_id: int) -> Response:
        schedules.schedule_delete(schedule_id=schedule_id, user=request_user(request))
        return Response(status=204)


class ScheduleRunView(AutomationView):
    @extend_schema(
        tags=["automation"],
        summary="Run a schedule now (an inactive one too)",
        description="The run starts in the background; follow it on `private-job-automation-run-{runId}` "
        "or with GET /api/automation/runs/{runId}.",
        parameters=[SCHEDULE_ID],
        request=None,
        responses={202: s.RunStartedOutput, **errors(401, 403, 404)},
    )
    def post(self, request: Request, schedule_id: int) -> Response:
        run = schedules.schedule_run_now(schedule_id=schedule_id, user=request_user(request))
        return Response({"run_id": str(run.pk)}, status=202)


class ScheduleRunsView(AutomationView):
    pagination_class = LimitOffset  # so the schema documents the {count, next, previous, results} page

    @extend_schema(
        tags=["automation"],
        summary="A schedule's runs, newest first",
        parameters=[SCHEDULE_ID, s.RunListQuery, *PAGE],
        responses={200: s.RunOutput(many=True), **errors(400, 401, 403, 404)},
    )
    def get(self, request: Request, schedule_id: int) -> Response:
        query = s.RunListQuery(data=snake_case_query(request.query_params))
        query.is_valid(raise_exception=True)
        queryset = selectors.schedule_runs_queryset(schedule_id=schedule_id, status=query.validated_data.get("status"))
        paginator = LimitOffset()
        page = paginator.page(queryset, request, self)
        return paginator.get_paginated_response([selectors.run_dict(row) for row in page])


class RunListView(AutomationView):
    pagination_class = LimitOffset

    @extend_schema(
        tags=["automation"],
        summary="Runs of every schedule, newest first",
        parameters=[s.RunListQuery, *PAGE],
        responses={200: s.RunOutput(many=True), **errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        query = s.RunListQuery(data=snake_case_query(request.query_params))
        query.is_valid(raise_exception=True)
        paginator = LimitOffset()
        page = paginator.page(selectors.runs_queryset(status=query.validated_data.get("status")), request, self)
        return paginator.get_paginated_response([selectors.run_dict(row) for row in page])


class RunDetailView(AutomationView):
    @extend_schema(
        tags=["automation"],
        summary="A run with its settings snapshot, its per-fiche results and `resultSummary`",
        description="The counts are the run's; `fiches` and `resultSummary` list only the fiches you may read "
        "(`fiches` read scope; `auditIds` only where you may read the fiche's audits). In `config`, "
        "`webhookUrl` and `notifyEmails` are null unless you hold automation.write.",
        parameters=[RUN_ID],
        responses={200: s.RunDetailOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, run_id: str) -> Response:
        return Response(selectors.run_detail(run_id, request_user(request)))
