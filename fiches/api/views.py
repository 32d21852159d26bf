"""Fiches API. Views validate input, call one service or selector, and return."""

import orjson
from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasGrant
from core.openapi import errors
from core.pagination import LimitOffset
from core.responses import orjson_response
from fiches import job_snapshots, selectors
from fiches.api import serializers as s
from fiches.exceptions import FicheNotFound
from fiches.notifications import JOB_WEBHOOK_SOURCE
from fiches.services import jobs
from fiches.services.details import fiche_get_for_user
from fiches.services.revalidation import cache_warm_request
from realtime.selectors import deliveries_of
from realtime.url_safety import validate_webhook_url
from realtime.webhooks import validate_secret

FICHE_ID = OpenApiParameter("fiche_id", str, OpenApiParameter.PATH, description="The CRM fiche id.")


class FicheDetailView(APIView):
    permission_classes = [HasGrant("fiches", "read")]

    @extend_schema(
        tags=["fiches"],
        summary="One fiche's full details (cache first, CRM on a miss)",
        description=(
            "Served from the cache when its full details are cached; otherwise fetched from the CRM by id, "
            "persisted and returned. `refresh=true` (needs fiches.write) refetches at most once per "
            "FICHE_FORCE_REFRESH_COOLDOWN_MS per fiche. CRM down: the cached copy with `meta.stale`, or 503."
        ),
        parameters=[FICHE_ID, s.FicheDetailQuery],
        responses={200: s.FicheDetailOutput, **errors(400, 401, 403, 404, 429, 503)},
    )
    def get(self, request, fiche_id: str):
        query = s.FicheDetailQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        if query.validated_data["refresh"]:
            HasGrant("fiches", "write").require(request.user)
        return Response(fiche_get_for_user(user=request.user, fiche_id=fiche_id, **query.validated_data))


class RecordingsView(APIView):
    permission_classes = [HasGrant("recordings", "read")]

    @extend_schema(
        tags=["fiches"],
        summary="The cached recordings of a fiche (needs recordings.read and the fiche in scope)",
        parameters=[FICHE_ID],
        responses={200: s.RecordingsOutput, **errors(401, 403, 404)},
    )
    def get(self, request, fiche_id: str):
        row = selectors.fiche_in_scope(request.user, "recordings", fiche_id)
        if row is None:
            raise FicheNotFound(f"Fiche {fiche_id} is not cached.", details={"fiche_id": fiche_id})
        recordings = selectors.recordings_for(row)
        return Response({"fiche_id": row.fiche_id, "count": len(recordings), "recordings": recordings})


# --- Progressive date-range fetch ----------------------------------------------------------


def _range_response(request, query: dict, *, start, end):
    """The shared body of the range endpoints (``query``: validated WebhookQueryMixin fields)."""
    refresh, webhook_url, webhook_secret = query["refresh"], query.get("webhookUrl"), query.get("webhookSecret")
    if refresh:
        HasGrant("fiches", "write").require(request.user)
    if webhook_url:
        validate_webhook_url(webhook_url)
    validate_secret(webhook_secret)  # an unusable secret is a 400 now, not a failed delivery later
    result = jobs.progressive_fetch_request(
        user=request.user,
        start=start,
        end=end,
        refresh=refresh,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
    )
    return HttpResponse(result.render(), content_type="application/json")


class ByDateRangeView(APIView):
    permission_classes = [HasGrant("fiches", "read")]

    @extend_schema(
        tags=["fiches"],
        summary="Cached fiches of a date range at once; missing dates fill in the background",
        description=(
            "Never calls the CRM and never waits. Returns the cached fiches of the range visible to the "
            "caller, and `meta.backgroundJobId` when dates are missing (or with `refresh=true`, which needs "
            "fiches.write and refetches every date). The same range again within 5 minutes reuses the job. "
            "Follow the job on Pusher channel `private-job-{id}`, by polling "
            "`/api/fiches/webhooks/fiches?jobId=`, or with a webhook."
        ),
        parameters=[s.ByDateRangeQuery],
        responses={200: s.RangeOutput, **errors(400, 401, 403, 429, 503)},
    )
    def get(self, request):
        query = s.ByDateRangeQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        return _range_response(request, data, start=data["startDate"], end=data["endDate"])


class ByDateView(APIView):
    permission_classes = [HasGrant("fiches", "read")]

    @extend_schema(
        tags=["fiches"],
        summary="Cached fiches of one date; the same as by-date-range for a single day",
        parameters=[s.ByDateQuery],
        responses={200: s.RangeOutput, **errors(400, 401, 403, 429, 503)},
    )
    def get(self, request):
        query = s.ByDateQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        return _range_response(request, data, start=data["date"], end=data["date"])


class JobPollView(APIView):
    permission_classes = [HasGrant("fiches", "read")]

    @extend_schema(
        tags=["jobs"],
        summary="Poll a job: its state plus the cached fiches of its range (filtered by your scope)",
        description=(
            "`partialData` holds at most `limit` fiches (default POLL_PARTIAL_DATA_LIMIT, in (sales date, fiche id) "
            "order). When more are cached, `partialDataTruncated` is true and `partialDataNextCursor` is the "
            "`cursor` to pass for the next page; it is null on the last page."
        ),
        parameters=[s.JobPollQuery],
        responses={200: s.JobPollOutput, **errors(400, 401, 403, 404)},
    )
    def get(self, request):
        query = s.JobPollQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        job = selectors.job_view_for_user(request.user, data["jobId"])
        page = selectors.fiches_for_range_json(
            request.user,
            job.start_date,
            job.end_date,
            limit=data.get("limit") or settings.POLL_PARTIAL_DATA_LIMIT,
            after=data.get("cursor"),
        )
        body = orjson.dumps(
            {
                **job.data,
                "partialDataTruncated": page.next_cursor is not None,
                "partialDataNextCursor": page.next_cursor,
            }
        )
        return HttpResponse(body[:-1] + b',"partialData":' + page.body + b"}", content_type="application/json")


class JobDetailView(APIView):
    permission_classes = [HasGrant("fiches", "read")]

    @extend_schema(
        tags=["jobs"],
        summary="A job with its dates, counters, error, refresh marker and last 10 webhook deliveries",
        parameters=[OpenApiParameter("job_id", str, OpenApiParameter.PATH)],
        responses={200: s.JobDetailOutput, **errors(401, 403, 404)},
    )
    def get(self, request, job_id):
        job = selectors.job_view_for_user(request.user, job_id)
        return orjson_response(
            {
                **job.data,
                "webhookConfigured": job.webhook_configured,
                "webhookDeliveries": (
                    deliveries_of(source=JOB_WEBHOOK_SOURCE, source_id=str(job_id), limit=10)
                    if job.webhook_configured
                    else []
                ),
            }
        )


class JobListView(APIView):
    pagination_class = LimitOffset  # so the schema documents the {count, next, previous, results} page
    permission_classes = [HasGrant("fiches", "read")]

    @extend_schema(
        tags=["jobs"],
        summary="Jobs you may see (all of them with fiches scope ALL), newest first",
        parameters=[s.JobListQuery, OpenApiParameter("limit", int), OpenApiParameter("offset", int)],
        responses={200: s.JobOutput(many=True), **errors(400, 401, 403)},
    )
    def get(self, request):
        query = s.JobListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        queryset = selectors.visible_jobs(request.user).order_by("-created_at")
        if "status" in query.validated_data:
            queryset = selectors.filter_jobs_by_status(queryset, query.validated_data["status"])
        paginator = LimitOffset()
        page = paginator.page(queryset, request, view=self)
        return paginator.get_paginated_response([job_snapshots.job_dict(job) for job in page])


class CacheWarmView(APIView):
    permission_classes = [HasGrant("fiches", "write")]

    @extend_schema(
        tags=["fiches"],
        summary="Warm the cache for a range in the background (one CRM call, 5-day chunks on failure)",
        request=s.WarmInput,
        responses={202: s.WarmOutput, **errors(400, 401, 403, 429, 503)},
    )
    def post(self, request):
        data = s.WarmInput(data=request.data)
        data.is_valid(raise_exception=True)
        start, end = data.validated_data["startDate"], data.validated_data["endDate"]
        jobs.validate_range(start, end)
        task_id = cache_warm_request(user=request.user, start=start, end=end)
        return Response({"taskId": task_id, "startDate": start.isoformat(), "endDate": end.isoformat()}, status=202)
