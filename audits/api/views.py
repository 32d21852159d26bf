"""Audits API. Views validate input, call one service or selector, and return."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.grants import has_grant
from accounts.permissions import HasGrant, request_user
from audits import selectors
from audits.api import serializers as s
from audits.services import configs, disputes, evaluations, reaudit, reviews
from audits.services import request as audit_requests
from batches import services as batches
from core.limits import spending
from core.openapi import errors
from core.pagination import LimitOffset
from core.redis import require_redis
from costs import budgets
from privacy.access import sees_personal_data

CONFIG_ID = OpenApiParameter("config_id", int, OpenApiParameter.PATH)
AUDIT_ID = OpenApiParameter("audit_id", str, OpenApiParameter.PATH)
POSITION = OpenApiParameter("position", int, OpenApiParameter.PATH)
INDEX = OpenApiParameter("index", int, OpenApiParameter.PATH)


class AuditConfigListView(APIView):
    pagination_class = LimitOffset  # so the schema documents the {count, next, previous, results} page

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
            "Missing transcripts are made first. Follow it on private-audit-{audit_id} or GET /api/audits/{id}. "
            "An identical audit (same fiche, config version and use_rlm) still pending, waiting for transcripts "
            "or running is returned instead of a second one, with `reused: true`. Counts against the user's "
            "AUDIT_USER_RATE (429 `audit_requests_throttled` with Retry-After beyond it; refused requests do not "
            "count). At the daily LLM budget (global or yours), BUDGET_MODE=wait queues it (status "
            "`waiting_budget` until the budget allows, e.g. the next day); BUDGET_MODE=refuse answers 429 "
            "`budget_exhausted` with Retry-After (seconds to the reset at local midnight)."
        ),
        request=s.AuditRunInput,
        responses={202: s.AuditRunOutput, **errors(400, 401, 403, 404, 409, 429, 503)},
    )
    def post(self, request: Request) -> Response:
        data = s.AuditRunInput(data=request.data)
        data.is_valid(raise_exception=True)
        audit_requests.require_llm_configured()
        user = request_user(request)
        budgets.check_new_work("llm", user)  # refuse mode: 429 budget_exhausted before anything is created
        with spending(user, "audit"):
            fiche = audit_requests.fiche_for_audit(user=user, fiche_id=data.validated_data["fiche_id"])
            requested = audit_requests.audit_request_or_reuse(
                fiche=fiche,
                config_id=data.validated_data["audit_config_id"],
                tools_mode=data.validated_data["use_rlm"],
                user=user,
            )
        audit = requested.audit
        return Response({"audit_id": str(audit.pk), "status": audit.status, "reused": requested.reused}, status=202)


class AuditListView(APIView):
    pagination_class = LimitOffset  # so the schema documents the {count, next, previous, results} page
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
        queryset = selectors.audits_for(request_user(request), purpose=f["purpose"]).order_by("-created_at", "-id")
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
        if f.get("counts") is not None:
            counting = selectors.counting_audit_ids(list(queryset.filter(status="completed")))
            queryset = queryset.filter(pk__in=counting) if f["counts"] else queryset.exclude(pk__in=counting)
        paginator = LimitOffset()
        page = paginator.page(queryset, request, view=self)
        counting = selectors.counting_audit_ids(list(page))
        return paginator.get_paginated_response(
            [selectors.audit_summary_dict(a, counts=str(a.pk) in counting) for a in page]
        )


class AuditDetailView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["audits"],
        summary="An audit with its steps, control points and citations",
        parameters=[AUDIT_ID],
        responses={200: s.AuditOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, audit_id: str) -> Response:
        user = request_user(request)
        audit = selectors.audit_for_user(user, audit_id)
        return Response(selectors.audit_dict(audit, redacted=not sees_personal_data(user)))


class StepRerunView(APIView):
    permission_classes = [HasGrant("audits", "write")]

    @extend_schema(
        tags=["audits"],
        summary="Rerun one step of a completed audit (its result is replaced, compliance recomputed)",
        description=(
            "Async on the LLM queue, through the same prompt, client and evidence gate as a first run. Optional "
            "reviewer guidance (instructions) and mode (use_rlm). One rerun of a step at a time (409 otherwise). "
            "Follow it on private-audit-{audit_id} (audit.step_started / audit.step_completed with rerun_id) or "
            "GET /api/audits/{id}/history. At the daily LLM budget (global or yours): 429 `budget_exhausted` with "
            "Retry-After, whatever BUDGET_MODE (nobody waits a day for a rerun)."
        ),
        parameters=[AUDIT_ID, POSITION],
        request=s.RerunInput,
        responses={202: s.RerunOutput, **errors(400, 401, 403, 404, 409, 429, 503)},
    )
    def post(self, request: Request, audit_id: str, position: int, index: int | None = None) -> Response:
        data = s.RerunInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = request_user(request)
        audit = selectors.audit_for_user(user, audit_id, action="write")
        budgets.check("llm", user)  # interactive: refused at the daily LLM budget whatever the mode
        with spending(user, "rerun"):  # RERUN_USER_RATE; a refused rerun (404, 409, 503) does not count
            event = reviews.rerun_request(
                audit=audit,
                position=position,
                control_point_index=index,
                instructions=data.validated_data["instructions"],
                tools_mode=data.validated_data["use_rlm"],
                user=user,
            )
        return Response({"rerun_id": str(event.pk), "status": event.status}, status=202)


class ControlPointRerunView(StepRerunView):
    @extend_schema(
        tags=["audits"],
        summary="Rerun one control point of a step (the other points stay; the step is rescored)",
        parameters=[AUDIT_ID, POSITION, INDEX],
        request=s.RerunInput,
        responses={202: s.RerunOutput, **errors(400, 401, 403, 404, 409, 429, 503)},
    )
    def post(self, request: Request, audit_id: str, position: int, index: int | None = None) -> Response:
        return super().post(request, audit_id, position, index)


class StepReviewView(APIView):
    permission_classes = [HasGrant("audits", "write")]

    @extend_schema(
        tags=["audits"],
        summary="A reviewer's verdict on a control point (or on every point of the step), with a comment",
        description="The AI's verdict is kept beside it; the reviewer's counts; the step and the audit are rescored.",
        parameters=[AUDIT_ID, POSITION],
        request=s.ReviewInput,
        responses={201: s.ReviewCreated, **errors(400, 401, 403, 404, 409)},
    )
    def post(self, request: Request, audit_id: str, position: int) -> Response:
        data = s.ReviewInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = request_user(request)
        audit = selectors.audit_for_user(user, audit_id, action="write")
        result = reviews.review_create(
            audit=audit,
            position=position,
            control_point_index=data.validated_data["control_point_index"],
            status=data.validated_data["status"],
            comment=data.validated_data["comment"],
            user=user,
        )
        return Response(selectors.review_created_dict(result.audit, result.step, result.reviews), status=201)


class AuditHistoryView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["audits"],
        summary="An audit's reruns and reviews, oldest first",
        parameters=[AUDIT_ID],
        responses={200: s.HistoryOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, audit_id: str) -> Response:
        audit = selectors.audit_for_user(request_user(request), audit_id)
        return Response({"audit_id": str(audit.pk), "entries": selectors.audit_history(audit)})


class CalibrationView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["audits"],
        summary="AI vs reviewers per control point of a config: agreement, Cohen's kappa, confusion (lowest first)",
        description=(
            "Over the reviewed audits in your audits scope. Each point: kappa with a 95 % confidence interval; for "
            "audit-configs readers also its trust (state, rolling kappa over the last AUDIT_TRUST_WINDOW reviews, "
            "sample size, changes of state)."
        ),
        parameters=[
            OpenApiParameter("audit_config_id", int, required=True),
            OpenApiParameter("from", str, description="audits created from (ISO datetime)"),
            OpenApiParameter("to", str, description="audits created until (ISO datetime)"),
        ],
        responses={200: s.CalibrationOutput, **errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        query = s.CalibrationQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        f = query.validated_data
        user = request_user(request)
        return Response(
            selectors.calibration(
                selectors.audits_for(user),
                config_id=f["audit_config_id"],
                date_from=f["date_from"],
                date_to=f["date_to"],
                with_trust=has_grant(user, "audit-configs", "read"),
            )
        )


class AuditBatchView(APIView):
    permission_classes = [HasGrant("audits", "write")]

    @extend_schema(
        tags=["audits"],
        summary="Audit many fiches in the background (at most AUDIT_BATCH_MAX)",
        description=(
            "Each fiche must be in your audits scope (checked now for cached fiches, and when its turn comes for "
            "the others). Without audit_config_id, each fiche's product picks its config. Needs Redis (503 at once "
            "otherwise). Follow it with GET /api/batches/{batch_id} or batch.* events on your private-user-{id} "
            "channel. Counts its fiches against the user's BATCH_USER_RATE (shared with transcription batches; 429 "
            "`batch_requests_throttled`). A fiche whose identical audit is already going follows that audit. "
            "BUDGET_MODE=refuse at the daily LLM budget: 429 `budget_exhausted` (wait mode: its audits wait)."
        ),
        request=s.AuditBatchInput,
        responses={202: s.AuditBatchCreated, **errors(400, 401, 403, 409, 429, 503)},
    )
    def post(self, request: Request) -> Response:
        data = s.AuditBatchInput(data=request.data)
        data.is_valid(raise_exception=True)
        require_redis("Batch audits")
        audit_requests.require_llm_configured()
        user = request_user(request)
        budgets.check_new_work("llm", user)
        f = data.validated_data
        if f["audit_config_id"] is not None:
            audit_requests.runnable_config(
                f["audit_config_id"]
            )  # 400/409 now (as /run) rather than one failed item a fiche
        batch = batches.batch_create(
            user=user,
            operation_type="audit",
            fiche_ids=f["fiche_ids"],
            options={"audit_config_id": f["audit_config_id"], "tools_mode": f["use_rlm"]},
            max_items=settings.AUDIT_BATCH_MAX,
            permission="audits",
            spend_kind="batch",
        )
        return Response({"batch_id": str(batch.pk)}, status=202)


# --- Disputes and trust ------------------------------------------------------------------------------------

DISPUTE_ID = OpenApiParameter("dispute_id", str, OpenApiParameter.PATH)


class DisputeCreateView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["disputes"],
        summary="The sale's agent disputes a control point's verdict (within AUDIT_DISPUTE_WINDOW_DAYS)",
        description=(
            "Only the agent whose sale it is (their crm_user_id is the fiche's) with the audit in their audits "
            "scope, on a verdict held against them (fail, uncertain; 422 `verdict_not_disputable` otherwise). One "
            "open dispute per point (409 `dispute_open`); none again on a verdict whose dispute was resolved and has "
            "not changed since (409 `dispute_already_resolved`); after the window, 422 `dispute_window_closed`."
        ),
        parameters=[AUDIT_ID, POSITION, INDEX],
        request=s.DisputeInput,
        responses={201: s.DisputeOutput, **errors(400, 401, 403, 404, 409, 422)},
    )
    def post(self, request: Request, audit_id: str, position: int, index: int) -> Response:
        data = s.DisputeInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = request_user(request)
        audit = selectors.audit_for_user(user, audit_id)
        dispute = disputes.dispute_open(
            audit=audit,
            position=position,
            index=index,
            comment=data.validated_data["comment"],
            proposed_status=data.validated_data["proposed_status"],
            user=user,
        )
        return Response(selectors.dispute_dict(selectors.dispute_for_user(user, dispute.pk)), status=201)


class AuditDisputesView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["disputes"],
        summary="An audit's disputes, oldest first, with their outcome",
        parameters=[AUDIT_ID],
        responses={200: s.DisputeOutput(many=True), **errors(401, 403, 404)},
    )
    def get(self, request: Request, audit_id: str) -> Response:
        user = request_user(request)
        audit = selectors.audit_for_user(user, audit_id)
        rows = selectors.disputes_for(user).filter(audit=audit).order_by("created_at", "id")
        return Response([selectors.dispute_dict(d) for d in rows])


class DisputeListView(APIView):
    pagination_class = LimitOffset
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["disputes"],
        summary="Disputes on audits in your audits scope, oldest first (reviewers: ?status=open)",
        parameters=[s.DisputeListQuery, OpenApiParameter("limit", int), OpenApiParameter("offset", int)],
        responses={200: s.DisputeOutput(many=True), **errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        query = s.DisputeListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        f = query.validated_data
        rows = selectors.disputes_for(request_user(request)).order_by("created_at", "id")
        if f.get("status"):
            rows = rows.filter(status=f["status"])
        if f.get("audit_config_id"):
            rows = rows.filter(audit__config_id=f["audit_config_id"])
        if f.get("audit_id"):
            rows = rows.filter(audit_id=f["audit_id"])
        paginator = LimitOffset()
        page = paginator.page(rows, request, view=self)
        return paginator.get_paginated_response([selectors.dispute_dict(d) for d in page])


class DisputeDetailView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["disputes"],
        summary="A dispute and its outcome",
        parameters=[DISPUTE_ID],
        responses={200: s.DisputeOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, dispute_id: str) -> Response:
        return Response(selectors.dispute_dict(selectors.dispute_for_user(request_user(request), dispute_id)))


class DisputeAcceptView(APIView):
    permission_classes = [HasGrant("audits", "write")]
    accept = True

    @extend_schema(
        tags=["disputes"],
        summary="Accept a dispute: the verdict changes through the review path (rescored, history, events)",
        parameters=[DISPUTE_ID],
        request=s.DisputeAcceptInput,
        responses={200: s.DisputeOutput, **errors(400, 401, 403, 404, 409)},
    )
    def post(self, request: Request, dispute_id: str) -> Response:
        data = (s.DisputeAcceptInput if self.accept else s.DisputeResolveInput)(data=request.data)
        data.is_valid(raise_exception=True)
        user = request_user(request)
        dispute = selectors.dispute_for_user(user, dispute_id, action="write")
        disputes.dispute_resolve(
            dispute_id=str(dispute.pk),
            accept=self.accept,
            comment=data.validated_data["comment"],
            status=data.validated_data.get("status"),
            user=user,
        )
        return Response(selectors.dispute_dict(selectors.dispute_for_user(user, dispute.pk)))


class DisputeRejectView(DisputeAcceptView):
    accept = False

    @extend_schema(
        tags=["disputes"],
        summary="Reject a dispute: the verdict stays; the agent sees the comment",
        parameters=[DISPUTE_ID],
        request=s.DisputeResolveInput,
        responses={200: s.DisputeOutput, **errors(400, 401, 403, 404, 409)},
    )
    def post(self, request: Request, dispute_id: str) -> Response:
        return super().post(request, dispute_id)


class DisputeMetricsView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["disputes"],
        summary="Disputes per control point of a config: acceptance rate, median days to resolve",
        description="Over the disputes on audits in your audits scope.",
        parameters=[OpenApiParameter("audit_config_id", int, required=True)],
        responses={200: s.DisputeMetricsOutput, **errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        query = s.DisputeMetricsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = selectors.disputes_for(request_user(request))
        return Response(selectors.dispute_metrics(rows, config_id=query.validated_data["audit_config_id"]))


class ConfigTrustView(APIView):
    permission_classes = [HasGrant("audit-configs", "read")]

    @extend_schema(
        tags=["audit-configs"],
        summary="Trust per control point of a config: state, rolling kappa and agreement, every change",
        parameters=[CONFIG_ID],
        responses={200: s.ConfigTrustOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, config_id: int) -> Response:
        return Response(selectors.config_trust(config_id))


# --- Config versions and evaluations ------------------------------------------------------------------------

VERSION = OpenApiParameter("version", int, OpenApiParameter.PATH)
EVALUATION_ID = OpenApiParameter("evaluation_id", str, OpenApiParameter.PATH)


class ConfigVersionsView(APIView):
    permission_classes = [HasGrant("audit-configs", "read")]

    @extend_schema(
        tags=["audit-configs"],
        summary="A config's versions, newest first: drafts, the active one, who activated each and from what",
        parameters=[CONFIG_ID],
        responses={200: s.VersionOutput(many=True), **errors(401, 403, 404)},
    )
    def get(self, request: Request, config_id: int) -> Response:
        return Response([configs.version_dict(v) for v in configs.versions_of(config_id)])


class ConfigVersionActivateView(APIView):
    permission_classes = [HasGrant("audit-configs", "write")]

    @extend_schema(
        tags=["audit-configs"],
        summary="Activate a version (a draft stops being one); records who and the evaluation it was based on",
        parameters=[CONFIG_ID, VERSION],
        request=s.ActivateInput,
        responses={200: s.VersionOutput, **errors(400, 401, 403, 404)},
    )
    def post(self, request: Request, config_id: int, version: int) -> Response:
        data = s.ActivateInput(data=request.data)
        data.is_valid(raise_exception=True)
        evaluation_id = data.validated_data["evaluation_id"]
        activated = configs.version_activate(
            config_id=config_id,
            number=version,
            user=request_user(request),
            evaluation_id=str(evaluation_id) if evaluation_id else None,
        )
        return Response(configs.version_dict(configs.version_get(config_id, activated.version)))


class ConfigEvaluationsView(APIView):
    def get_permissions(self):
        if self.request.method == "GET":
            return [HasGrant("audit-configs", "read")()]
        return [HasGrant("audit-configs", "write")(), HasGrant("audits", "write")()]

    @extend_schema(
        tags=["evaluations"],
        summary="A config's evaluations whose fiches all lie in your audits scope, newest first",
        parameters=[CONFIG_ID],
        responses={200: s.EvaluationOutput(many=True), **errors(401, 403, 404)},
    )
    def get(self, request: Request, config_id: int) -> Response:
        configs.config_get(config_id)
        user = request_user(request)
        rows = selectors.evaluations_for(user, config_id=config_id)
        redacted = not sees_personal_data(user)
        return Response([selectors.evaluation_dict(e, redacted=redacted) for e in rows])

    @extend_schema(
        tags=["evaluations"],
        summary="Evaluate a version (a draft, or any) beside the active one against reviewers' verdicts",
        description=(
            "Runs the version and the active one over the evaluation set — by default the most recent fiches "
            "reviewers judged for this config (AUDIT_EVALUATION_FICHES), or `fiche_ids` — as audits marked "
            "`purpose: evaluation` (never in compliance figures, queues, calibration or trust). Follow it with "
            "GET /api/evaluations/{id} or audit.evaluation_* events on your private-user-{id} channel. Its audits "
            "count against your batch budget (BATCH_USER_RATE)."
        ),
        parameters=[CONFIG_ID],
        request=s.EvaluationInput,
        responses={202: s.EvaluationCreated, **errors(400, 401, 403, 404, 409, 429, 503)},
    )
    def post(self, request: Request, config_id: int) -> Response:
        data = s.EvaluationInput(data=request.data)
        data.is_valid(raise_exception=True)
        budgets.check_new_work("llm", request_user(request))  # refuse mode: 429 budget_exhausted
        f = data.validated_data
        evaluation = evaluations.evaluation_create(
            config_id=config_id,
            version_number=f["version"],
            fiche_ids=f["fiche_ids"] or None,
            tools_mode=f["use_rlm"],
            user=request_user(request),
        )
        return Response(
            {"evaluation_id": str(evaluation.pk), "status": evaluation.status, "fiches": len(evaluation.fiche_ids)},
            status=202,
        )


class EvaluationDetailView(APIView):
    permission_classes = [HasGrant("audit-configs", "read")]

    @extend_schema(
        tags=["evaluations"],
        summary="An evaluation: progress, then its result per control point and overall beside the active version",
        description="Readable when every fiche of its set lies in your audits read scope.",
        parameters=[EVALUATION_ID],
        responses={200: s.EvaluationOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, evaluation_id: str) -> Response:
        user = request_user(request)
        evaluation = selectors.evaluation_for_user(user, evaluation_id)
        return Response(selectors.evaluation_dict(evaluation, redacted=not sees_personal_data(user)))


# --- Re-audits -----------------------------------------------------------------------------------------------


class ReauditView(APIView):
    permission_classes = [HasGrant("audits", "write")]

    @extend_schema(
        tags=["audits"],
        summary="Re-audit past sales with a config version: new audits beside the old ones (never overwritten)",
        description=(
            "Every selected fiche (`fiche_ids`, or the fiches sold between `date_from` and `date_to` that have a "
            "completed audit of the config, in your audits write scope) gets a new audit with the version "
            "(default: the active one; a draft is refused, 409 `version_is_draft`), linked to the fiche's last "
            "audit as `predecessor_id`. An audit batch: GET /api/batches/{batch_id}, batch.* events, each fiche "
            "started once; counts against BATCH_USER_RATE; at most AUDIT_BATCH_MAX fiches. "
            "GET /api/audits/reaudit/{batch_id} summarizes it, GET /api/audits/{id}/diff shows each fiche's diff."
        ),
        request=s.ReauditInput,
        responses={202: s.ReauditCreated, **errors(400, 401, 403, 404, 409, 429, 503)},
    )
    def post(self, request: Request) -> Response:
        data = s.ReauditInput(data=request.data)
        data.is_valid(raise_exception=True)
        require_redis("Re-audits")
        budgets.check_new_work("llm", request_user(request))  # refuse mode: 429 budget_exhausted
        f = data.validated_data
        batch, total = reaudit.reaudit_create(
            user=request_user(request),
            config_id=f["audit_config_id"],
            version_number=f["version"],
            fiche_ids=f["fiche_ids"] or None,
            date_from=f["date_from"],
            date_to=f["date_to"],
            tools_mode=f["use_rlm"],
        )
        return Response({"batch_id": str(batch.pk), "fiches": total}, status=202)


class ReauditSummaryView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["audits"],
        summary="A re-audit's summary: fiches whose niveau changed, the points that moved most (your scope)",
        parameters=[OpenApiParameter("batch_id", str, OpenApiParameter.PATH)],
        responses={200: s.ReauditSummaryOutput, **errors(401, 403)},
    )
    def get(self, request: Request, batch_id: str) -> Response:
        return Response(selectors.reaudit_summary(selectors.audits_for(request_user(request)), batch_id=batch_id))


class AuditDiffView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["audits"],
        summary="A re-audit beside its predecessor: niveau, score, and each control point whose verdict changed",
        description="404 `no_predecessor` for an audit that is not a re-audit; 409 until the re-audit completed.",
        parameters=[AUDIT_ID],
        responses={200: s.DiffOutput, **errors(401, 403, 404, 409)},
    )
    def get(self, request: Request, audit_id: str) -> Response:
        user = request_user(request)
        audit = selectors.audit_for_user(user, audit_id)
        if audit.predecessor_id is not None:
            selectors.audit_for_user(user, audit.predecessor_id)  # the same fiche: the same scope, checked anyway
        return Response(selectors.audit_diff(audit, redacted=not sees_personal_data(user)))


class AuditPinView(APIView):
    permission_classes = [HasGrant("audits", "write")]

    @extend_schema(
        tags=["audits"],
        summary="Pin this audit as the one that counts for its fiche and config",
        parameters=[AUDIT_ID],
        request=None,
        responses={200: s.AuditSummaryOutput, **errors(401, 403, 404, 409)},
    )
    def post(self, request: Request, audit_id: str) -> Response:
        user = request_user(request)
        audit = reaudit.audit_pin(audit=selectors.audit_for_user(user, audit_id, action="write"), user=user, pin=True)
        return Response(selectors.audit_summary_dict(audit))

    @extend_schema(
        tags=["audits"],
        summary="Unpin: the latest completed audit of the active version counts again",
        parameters=[AUDIT_ID],
        responses={200: s.AuditSummaryOutput, **errors(401, 403, 404)},
    )
    def delete(self, request: Request, audit_id: str) -> Response:
        user = request_user(request)
        audit = reaudit.audit_pin(audit=selectors.audit_for_user(user, audit_id, action="write"), user=user, pin=False)
        return Response(selectors.audit_summary_dict(audit))
