"""What ``/metrics`` reads at scrape time rather than from counters: the broker's queue depth per queue and the
workflow runs not ended, by kind and state, with the age of the oldest one's last progress (what "stuck" means
here; a run waiting for a daily budget to allow it waits as designed, is not stuck, and is left out of it). One
query per run kind (``GROUP BY status`` over the non-terminal rows: the ``status`` indexes), one round trip per
queue."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.db.models import Count, Min, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from audits.models import Audit, AuditStatus, Evaluation
from automation.models import AutomationRun
from core import dispatch
from core.metrics import run_kind
from fiches.models import ProgressiveFetchJob
from transcriptions.models import TranscriptionRun

logger = logging.getLogger("ops.collectors")

RUN_MODELS: tuple[Any, ...] = (ProgressiveFetchJob, TranscriptionRun, Audit, AutomationRun, Evaluation)
# Runs that wait for a budget to allow them (costs.budgets): they make no progress on purpose.
WAITING_ON_BUDGET: dict[Any, Q] = {
    Audit: Q(status=AuditStatus.WAITING_BUDGET),
    TranscriptionRun: Q(waiting_budget_since__isnull=False),
}


class WorkflowCollector(Collector):
    """``workflow_runs_active{kind,status}`` and ``workflow_run_oldest_active_seconds{kind}``."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active = GaugeMetricFamily(
            "workflow_runs_active",
            "Runs not ended, by kind and state (read at scrape time).",
            labels=["kind", "status"],
        )
        oldest = GaugeMetricFamily(
            "workflow_run_oldest_active_seconds",
            "Seconds since the last progress of the run not ended that progressed least recently, by kind (runs "
            "waiting for a budget left out).",
            labels=["kind"],
        )
        now = timezone.now()
        for model in RUN_MODELS:
            kind = run_kind(model)
            rows = model._default_manager.exclude(status__in=model.TERMINAL_STATUSES)
            try:
                for row in rows.values("status").annotate(n=Count("pk")).order_by():
                    active.add_metric([kind, str(row["status"])], row["n"])
                moving = rows.exclude(WAITING_ON_BUDGET[model]) if model in WAITING_ON_BUDGET else rows
                stalest = moving.aggregate(at=Min(Coalesce("last_progress_at", "dispatched_at", "created_at")))["at"]
            except Exception:  # a scrape never fails on one kind
                logger.exception("workflow_collector_failed", extra={"kind": kind})
                continue
            oldest.add_metric([kind], (now - stalest).total_seconds() if stalest else 0.0)
        yield active
        yield oldest


class QueueDepthCollector(Collector):
    """``celery_queue_depth{queue}``: messages waiting in each of our queues, from the broker (Redis lists or
    RabbitMQ queues); ``celery_broker_up`` 0 when the broker cannot be read."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("celery_queue_depth", "Messages waiting in a Celery queue.", labels=["queue"])
        up = GaugeMetricFamily("celery_broker_up", "Whether the broker could be read at this scrape.")
        try:
            for queue, n in queue_depths().items():
                depth.add_metric([queue], n)
            up.add_metric([], 1)
        except Exception:
            logger.warning("queue_depth_unavailable", exc_info=True)
            up.add_metric([], 0)
        yield depth
        yield up


def queue_depths() -> dict[str, int]:
    """Messages waiting per queue of ``CELERY_QUEUE_NAMES``, read from the broker (raises when it is down)."""
    depths = dispatch.queue_depths(settings.CELERY_QUEUE_NAMES)
    if any(n is None for n in depths.values()):
        raise ConnectionError("the broker cannot be read")
    return {name: int(n or 0) for name, n in depths.items()}
