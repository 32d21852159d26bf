"""``GET /metrics``: the Prometheus exposition, behind a bearer token (``METRICS_TOKEN``; unset: 404, metrics
are off). With ``PROMETHEUS_MULTIPROC_DIR`` (``make run``, the deploy layout) it adds up what every process of
this host recorded (gunicorn workers, Celery pools: ``prometheus_client.multiprocess``); without it, this
process's own registry. Then what is read at scrape time (``ops.collectors``: queue depth, workflow runs by
state), which are global: scrape one web instance for them."""

from __future__ import annotations

import hmac
import os

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from ops.collectors import QueueDepthCollector, WorkflowCollector


def multiproc_dir() -> str:
    """The directory every process of this host records into ("" when each process keeps its own)."""
    return str(settings.METRICS_MULTIPROC_DIR or "")


def recorded() -> bytes:
    """What the processes recorded: this host's multiprocess directory, or this process's registry (plus the
    directory when this process is not itself in multiprocess mode, e.g. tests)."""
    directory = multiproc_dir()
    if not directory:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    own = b"" if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else generate_latest(REGISTRY)
    return own + generate_latest(registry)


def scraped() -> bytes:
    registry = CollectorRegistry()
    registry.register(WorkflowCollector())
    registry.register(QueueDepthCollector())
    return generate_latest(registry)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = str(settings.METRICS_TOKEN or "")
    if not token:
        return HttpResponse("Metrics are off: set METRICS_TOKEN.\n", status=404, content_type="text/plain")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        response = HttpResponse("A bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(recorded() + scraped(), content_type=CONTENT_TYPE_LATEST)
