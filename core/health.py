"""``GET /api/health``: database, Redis and Celery broker reachability (no auth)."""

import logging

import redis
from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from kombu import Connection
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

logger = logging.getLogger("core.health")
TIMEOUT_SECONDS = 2


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_redis() -> None:
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=TIMEOUT_SECONDS, socket_timeout=TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()


def check_broker() -> None:
    with Connection(
        settings.CELERY_BROKER_URL,
        connect_timeout=TIMEOUT_SECONDS,
        transport_options={"socket_timeout": TIMEOUT_SECONDS, "socket_connect_timeout": TIMEOUT_SECONDS},
    ) as conn:
        conn.ensure_connection(max_retries=1, timeout=TIMEOUT_SECONDS)
        # For Redis the connection is lazy: touching the channel proves the broker answers.
        conn.default_channel.client.ping() if hasattr(conn.default_channel, "client") else None


CHECKS = {"database": check_database, "redis": check_redis, "broker": check_broker}

HealthOutput = inline_serializer(
    name="Health",
    fields={
        "status": serializers.ChoiceField(choices=["ok", "error"]),
        "checks": serializers.DictField(child=serializers.ChoiceField(choices=["ok", "unavailable"])),
    },
)


class HealthView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["ops"],
        summary="Liveness of the database, Redis and the Celery broker",
        responses={200: HealthOutput, 503: HealthOutput},
        auth=[],
    )
    def get(self, request):
        checks = {}
        for name, check in CHECKS.items():
            try:
                check()
                checks[name] = "ok"
            except Exception as exc:  # any failure makes the check unavailable
                logger.warning("health_check_failed", extra={"check": name, "error": f"{type(exc).__name__}: {exc}"})
                checks[name] = "unavailable"
        healthy = all(v == "ok" for v in checks.values())
        return Response({"status": "ok" if healthy else "error", "checks": checks}, status=200 if healthy else 503)
