"""Audits API. Views validate input, call one service or selector, and return."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasGrant, request_user
from audits import selectors
from audits.api import serializers as s
from audits.services import configs, runs
from config.openapi import errors
from config.pagination import LimitOffset

CONFIG_ID = OpenApiParameter("config_id", int, OpenApiParameter.PATH)
AUDIT_ID = OpenApiParameter("audit_id", str, OpenApiParameter.PATH)


class AuditConfigListView(APIView):
    def get_permissions(self):
        return [HasGrant("audit-configs", "read" if self.request.method == "GET" else "write")()]

    @extend_schema(
        tags=["audit-configs"],
        summary="Audit configs with their current version",
        responses={200: s.AuditConfigOutput(many=True), **errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        paginator = LimitOffset()
        page = paginator.page(configs.configs_queryset(), request, view=self)
        return paginator.get_paginated_response([configs.config_dict(c) for c in page])

    @extend_schema(
        tags=["audit-configs"],
        summary="Create an audit config (version 1)",
        request=s.AuditConfigInput,
        responses={201: s.AuditConfigOutput, **errors(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        data = s.AuditConfigInput(data=request.data)
        data.is_valid(raise_exception=True)
        config = configs.config_create(data=data.validated_data, user=request_user(request))
        return Response(configs.config_dict(configs.config_get(config.pk)), status=201)


class AuditConfigDetailView(APIView):
    def get_permissions(self):
        return [HasGrant("audit-configs", "read" if self.request.method == "GET" else "write")()]

    @extend_schema(
        tags=["audit-configs"],
        summary="An audit config",
        parameters=[CONFIG_ID],
        responses={200: s.AuditConfigOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, config_id: int) -> Response:
        return Response(configs.config_dict(configs.config_get(config_id)))

    @extend_schema(
        tags=["audit-configs"],
        summary="Edit an audit config: a changed content makes a new version",
        description="Audits keep the version they ran with. Validation runs on the effective config.",
        parameters=[CONFIG_ID],
        request=s.AuditConfigPatchInput,
        responses={200: s.AuditConfigOutput, **errors(400, 401, 403, 404)},
    )
    def patch(self, request: Request, config_id: int) -> Response:
        data = s.AuditConfigPatchInput(data=request.data)
        data.is_valid(raise_exception=True)
        configs.config_update(config_id=config_id, patch=data.validated_data, user=request_user(request))
        return Response(configs.config_dict(configs.config_get(config_id)))

    @extend_schema(
        tags=["audit-configs"],
        summary="Delete an audit config (deactivated instead while audits use it)",
        parameters=[CONFIG_ID],
        responses={204: OpenApiResponse(description="Deleted."), 200: s.AuditConfigOutput, **errors(401, 403, 404)},
    )
    def delete(self, request: Request, config_id: int) -> Response:
        if configs.config_delete(config_id=config_id):
            return Response(status=204)
        return Response(configs.config_dict(configs.config_get(config_id)))


class AuditRunView(APIView):
    permission_classes = [HasGrant("audits", "write")]

    @extend_schema(
        tags=["audits"],
        summary="Audit a fiche's calls with a config (needs audits.write and the fiche in scope)",
        description=(
            "Missing transcripts are made first. Follow it on private-audit-{audit_id} or GET /api/audits/{id}."
        ),
        request=s.AuditRunInput,
        responses={202: s.AuditRunOutput, **errors(400, 401, 403, 404, 409, 429, 503)},
    )
    def post(self, request: Request) -> Response:
        data = s.AuditRunInput(data=request.data)
        data.is_valid(raise_exception=True)
        runs.require_llm_configured()
        user = request_user(request)
        fiche = runs.fiche_for_audit(user=user, fiche_id=data.validated_data["fiche_id"])
        audit = runs.audit_request(
            fiche=fiche,
            config_id=data.validated_data["audit_config_id"],
            use_rlm=data.validated_data["use_rlm"],
            user=user,
        )
        return Response({"audit_id": str(audit.pk), "status": audit.status}, status=202)


class AuditListView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["audits"],
        summary="Audits of fiches in your scope, newest first",
        parameters=[s.AuditListQuery, OpenApiParameter("limit", int), OpenApiParameter("offset", int)],
        responses={200: s.AuditSummaryOutput(many=True), **errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        query = s.AuditListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        f = query.validated_data
        queryset = selectors.audits_for(request_user(request)).order_by("-created_at", "-id")
        for field, lookup in (
            ("fiche_id", "fiche__fiche_id"),
            ("status", "status"),
            ("niveau", "niveau"),
            ("audit_config_id", "config_id"),
            ("created_from", "created_at__gte"),
            ("created_to", "created_at__lte"),
        ):
            if f.get(field) is not None:
                queryset = queryset.filter(**{lookup: f[field]})
        for flag in ("is_compliant", "needs_review"):
            if f.get(flag) is not None:
                queryset = queryset.filter(**{flag: f[flag]})
        paginator = LimitOffset()
        page = paginator.page(queryset, request, view=self)
        return paginator.get_paginated_response([selectors.audit_summary_dict(a) for a in page])


class AuditDetailView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["audits"],
        summary="An audit with its steps, control points and citations",
        parameters=[AUDIT_ID],
        responses={200: s.AuditOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, audit_id: str) -> Response:
        audit = selectors.audit_for_user(request_user(request), audit_id)
        return Response(selectors.audit_dict(audit))
