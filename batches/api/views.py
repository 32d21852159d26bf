"""Batches API: a batch's progress. Batches are made by ``POST /api/transcriptions/batch`` and
``POST /api/audits/batch`` (their apps' views)."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import request_user
from batches import services
from batches.api import serializers as s
from core.openapi import errors


class BatchView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=["batches"],
        summary="A batch's progress (yours, or any with scope ALL on its permission)",
        parameters=[OpenApiParameter("batch_id", str, OpenApiParameter.PATH)],
        responses={200: s.BatchOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, batch_id: str) -> Response:
        return Response(services.batch_for_user(request_user(request), batch_id))
