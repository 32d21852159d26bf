"""Realtime API: Pusher channel auth, and manual webhook redelivery."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import NotFoundError
from core.openapi import errors
from realtime import webhooks
from realtime.auth import pusher_auth
from realtime.models import WebhookDelivery
from realtime.registry import webhook_source
from realtime.selectors import delivery_dict


class PusherAuthInput(serializers.Serializer):
    socket_id = serializers.CharField(max_length=64)
    channel_name = serializers.CharField(max_length=200)


class PusherAuthView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=["realtime"],
        summary="Authorize a Pusher private-channel subscription",
        description=(
            "Each app decides for the channels it owns, with the rules of its HTTP APIs: "
            "`private-job-{id}`: fiches.read and your job (or any job with fiches scope ALL); "
            "`private-fiche-{id}`: fiches.read and the fiche in your scope; "
            "`private-job-automation-run-{id}`: automation.read; `private-global`: any authenticated user. "
            "Unknown channels are refused (403). Accepts form or JSON bodies."
        ),
        request=PusherAuthInput,
        responses={
            200: inline_serializer("PusherAuth", {"auth": serializers.CharField()}),
            **errors(400, 401, 403, 503),
        },
    )
    def post(self, request):
        data = PusherAuthInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(pusher_auth(user=request.user, **data.validated_data))


class DeliveryRetryView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=["jobs"],
        summary="Redeliver a webhook now (same webhook-id, a new 'manual' attempt)",
        description="Who may redeliver is decided by the delivery's source, e.g. for a job's webhooks: "
        "fiches.write and the job is yours (or fiches scope ALL).",
        request=None,
        responses={
            202: inline_serializer("DeliveryRetry", {"delivery": serializers.DictField()}),
            **errors(401, 403, 404, 409),
        },
    )
    def post(self, request, delivery_id: int):
        delivery = get_object_or_404(WebhookDelivery, pk=delivery_id)
        authorize = webhook_source(delivery.source).authorize
        if authorize is None:
            raise NotFoundError(f"No delivery {delivery_id}.", details={"delivery_id": delivery_id})
        authorize(request.user, delivery.source_id)
        webhooks.delivery_redeliver(delivery=delivery)
        delivery.refresh_from_db()
        return Response({"delivery": delivery_dict(delivery)}, status=202)
