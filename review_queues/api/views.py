"""Review queues API. Reviewers (audits.write) list queues, pull their next item and renew or release it;
queue definitions are edited by audit-configs writers (the people who own the scorecards)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasGrant, request_user
from audits.selectors import counting_audit_ids
from core.openapi import errors
from core.pagination import LimitOffset
from review_queues import selectors, services
from review_queues.api import serializers as s
from review_queues.models import QueueItem, ReviewQueue

QUEUE_ID = OpenApiParameter("queue_id", int, OpenApiParameter.PATH)
ITEM_ID = OpenApiParameter("item_id", int, OpenApiParameter.PATH)


def _queue_out(request: Request, queue: ReviewQueue) -> dict:
    figures, whole = selectors.queue_progress_for(request_user(request), queue)
    return selectors.queue_dict(queue, figures=figures, whole=whole)


class QueueListView(APIView):
    pagination_class = LimitOffset

    def get_permissions(self):
        return [HasGrant("audits" if self.request.method == "GET" else "audit-configs", "write")()]

    @extend_schema(
        tags=["review-queues"],
        summary="Review queues with their progress (whole queue when it lies in your scope, else your part)",
        parameters=[OpenApiParameter("limit", int), OpenApiParameter("offset", int)],
        responses={200: s.QueueOutput(many=True), **errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        paginator = LimitOffset()
        page = paginator.page(
            ReviewQueue.objects.prefetch_related("configs").order_by("name", "id"), request, view=self
        )
        return paginator.get_paginated_response([_queue_out(request, q) for q in page])

    @extend_schema(
        tags=["review-queues"],
        summary="Create a review queue (needs audit-configs.write)",
        description=(
            "Rules: every REJET, every needs_review, every audit with an uncertain point, every audit with a point "
            "whose AI trust is withdrawn, and sample_percent % of the other completed audits (per agent per week of "
            "the sale; every agent's closed week gets one), reproducible from the stored seed. Audits enter as they "
            "complete; POST /backfill (or manage.py review_queue_backfill) enters a past range."
        ),
        request=s.QueueInput,
        responses={201: s.QueueOutput, **errors(400, 401, 403)},
    )
    def post(self, request: Request) -> Response:
        data = s.QueueInput(data=request.data)
        data.is_valid(raise_exception=True)
        queue = services.queue_save(data=data.validated_data, user=request_user(request))
        return Response(_queue_out(request, queue), status=201)


class QueueDetailView(APIView):
    def get_permissions(self):
        return [HasGrant("audits" if self.request.method == "GET" else "audit-configs", "write")()]

    @extend_schema(
        tags=["review-queues"],
        summary="A review queue and its progress",
        parameters=[QUEUE_ID],
        responses={200: s.QueueOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, queue_id: int) -> Response:
        return Response(_queue_out(request, services.queue_get(queue_id)))

    @extend_schema(
        tags=["review-queues"],
        summary="Edit a review queue (rules apply to audits entering from now on)",
        parameters=[QUEUE_ID],
        request=s.QueuePatchInput,
        responses={200: s.QueueOutput, **errors(400, 401, 403, 404)},
    )
    def patch(self, request: Request, queue_id: int) -> Response:
        queue = services.queue_get(queue_id)
        data = s.QueuePatchInput(data=request.data)
        data.is_valid(raise_exception=True)
        queue = services.queue_save(data=data.validated_data, user=request_user(request), queue=queue)
        return Response(_queue_out(request, queue))

    @extend_schema(
        tags=["review-queues"],
        summary="Delete a review queue and its items (reviews already made stay on the audits)",
        parameters=[QUEUE_ID],
        responses={204: OpenApiResponse(description="Deleted."), **errors(401, 403, 404)},
    )
    def delete(self, request: Request, queue_id: int) -> Response:
        services.queue_delete(queue=services.queue_get(queue_id))
        return Response(status=204)


class QueueNextView(APIView):
    permission_classes = [HasGrant("audits", "write")]

    @extend_schema(
        tags=["review-queues"],
        summary="Claim your next item (rules first, oldest first), inside your audits write scope",
        description=(
            "The claim lasts REVIEW_QUEUE_LEASE_SECONDS unless renewed; then the item returns to the queue. Two "
            "reviewers pulling at once never get the same item. Holding a live claim in this queue, you get it "
            "again (resumed: true). Review the audit with POST /api/audits/{id}/steps/{position}/reviews: the item "
            "is then done. 204 when nothing is left for you."
        ),
        parameters=[QUEUE_ID],
        request=None,
        responses={200: s.ClaimOutput, 204: OpenApiResponse(description="Nothing left."), **errors(401, 403, 404, 409)},
    )
    def post(self, request: Request, queue_id: int) -> Response:
        claim = services.item_claim_next(queue=services.queue_get(queue_id), user=request_user(request))
        if claim is None:
            return Response(status=204)
        item = selectors.items_with_audits(QueueItem.objects.filter(pk=claim.item.pk)).get()
        return Response({**selectors.item_dict(item), "resumed": claim.resumed})


class QueueItemsView(APIView):
    pagination_class = LimitOffset
    permission_classes = [HasGrant("audits", "write")]

    @extend_schema(
        tags=["review-queues"],
        summary="A queue's items inside your audits write scope, in pull order",
        parameters=[QUEUE_ID, s.ItemListQuery, OpenApiParameter("limit", int), OpenApiParameter("offset", int)],
        responses={200: s.ItemOutput(many=True), **errors(400, 401, 403, 404)},
    )
    def get(self, request: Request, queue_id: int) -> Response:
        query = s.ItemListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        queue = services.queue_get(queue_id)
        items = selectors.items_in_scope(request_user(request), QueueItem.objects.filter(queue=queue))
        if query.validated_data.get("state"):
            items = items.filter(state=query.validated_data["state"])
        paginator = LimitOffset()
        page = paginator.page(
            selectors.items_with_audits(items).order_by("priority", "entered_at", "id"), request, view=self
        )
        counting = counting_audit_ids([i.audit for i in page])
        return paginator.get_paginated_response(
            [selectors.item_dict(i, counts=str(i.audit_id) in counting) for i in page]
        )


class ItemRenewView(APIView):
    permission_classes = [HasGrant("audits", "write")]

    @extend_schema(
        tags=["review-queues"],
        summary="Renew your claim on an item for a full lease",
        parameters=[QUEUE_ID, ITEM_ID],
        request=None,
        responses={200: s.ItemOutput, **errors(401, 403, 404, 409)},
    )
    def post(self, request: Request, queue_id: int, item_id: int) -> Response:
        item = services.item_renew(queue=services.queue_get(queue_id), item_id=item_id, user=request_user(request))
        return Response(selectors.item_dict(selectors.items_with_audits(QueueItem.objects.filter(pk=item.pk)).get()))


class ItemReleaseView(APIView):
    permission_classes = [HasGrant("audits", "write")]

    @extend_schema(
        tags=["review-queues"],
        summary="Give an item you claimed back to the queue",
        parameters=[QUEUE_ID, ITEM_ID],
        request=None,
        responses={200: s.ItemOutput, **errors(401, 403, 404, 409)},
    )
    def post(self, request: Request, queue_id: int, item_id: int) -> Response:
        item = services.item_release(queue=services.queue_get(queue_id), item_id=item_id, user=request_user(request))
        return Response(selectors.item_dict(selectors.items_with_audits(QueueItem.objects.filter(pk=item.pk)).get()))


class QueueBackfillView(APIView):
    permission_classes = [HasGrant("audit-configs", "write")]

    @extend_schema(
        tags=["review-queues"],
        summary="Enter the audits completed in a range of days (idempotent; closed weeks topped up)",
        parameters=[QUEUE_ID],
        request=s.BackfillInput,
        responses={200: s.BackfillOutput, **errors(400, 401, 403, 404, 409)},
    )
    def post(self, request: Request, queue_id: int) -> Response:
        data = s.BackfillInput(data=request.data)
        data.is_valid(raise_exception=True)
        queue = services.queue_get(queue_id)
        services.require_active(queue)
        return Response(
            services.backfill(queue, date_from=data.validated_data["date_from"], date_to=data.validated_data["date_to"])
        )
