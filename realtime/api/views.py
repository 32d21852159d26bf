"""Realtime API: Pusher channel auth, and manual webhook redelivery."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasGrant
from config.openapi import errors
from fiches.selectors import job_for_user
from realtime import webhooks
from realtime.auth import pusher_auth
from realtime.models import WebhookDelivery
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
            "`private-job-{id}`: your job (or any job with fiches scope ALL); `private-fiche-{id}`: fiches.read and "
            "the fiche in your scope; `private-audit-{id}`: not available yet (403); "
            "`private-job-automation-run-{id}`: automation.read; `private-global`: any authenticated user. "
            "Accepts form or JSON bodies."
        ),
        request=PusherAuthInput,
        responses={200: inline_serializer("PusherAuth", {"auth": serializers.CharField()}), **errors(400, 401, 403, 503)},
    )
    def post(self, request):
        data = PusherAuthInput(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(pusher_auth(user=request.user, **data.validated_data))


class DeliveryRetryView(APIView):
    permission_classes = [HasGrant("fiches", "write")]

    @extend_schema(
        tags=["jobs"],
        summary="Redeliver a webhook now (same webhook-id, a new 'manual' attempt)",
        request=None,
        responses={202: inline_serializer("DeliveryRetry", {"delivery": serializers.DictField()}),
                   **errors(401, 403, 404, 409)},
    )
    def post(self, request, delivery_id: int):
        delivery = get_object_or_404(WebhookDelivery.objects.select_related("job"), pk=delivery_id)
        job_for_user(request.user, delivery.job_id)
        webhooks.delivery_redeliver(delivery=delivery)
        delivery.refresh_from_db()
        return Response({"delivery": delivery_dict(delivery)}, status=202)
