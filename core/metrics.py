"""The Prometheus metric families the code records into (``prometheus_client``), defined once.

Each process records into its own registry; with ``PROMETHEUS_MULTIPROC_DIR`` set (``make run``, the deploy
layout), every process of a host — gunicorn workers, Celery pool processes — writes its samples to files in that
directory and ``/metrics`` (or ``manage.py metrics_server`` on a host without web) adds them up
(``prometheus_client.multiprocess``). What is read from the database or the broker at scrape time (workflow runs
by state, queue depth) is not here: ``ops.collectors`` computes it when Prometheus scrapes.

HTTP latency and status per route come from ``django_prometheus``
(``django_http_requests_latency_seconds_by_view_method``, ``django_http_responses_total_by_status_view_method``).

Label values are bounded sets (task names, queue names, statuses, services, reasons): never an id.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Histogram

logger = logging.getLogger("core.metrics")

# Durations from a few milliseconds (a CRM page) to tens of minutes (a long transcription, a whole audit).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)

# --- Celery tasks (recorded by ``ops.celery_metrics`` from Celery's signals, in the worker processes) ------------
TASK_RUNTIME = Histogram(
    "celery_task_runtime_seconds",
    "Time a task ran in a worker, by task, queue and how it ended (success, failure, retry).",
    ["task", "queue", "state"],
    buckets=_SECONDS,
)
TASK_RETRIES = Counter("celery_task_retries_total", "Retries a task asked for.", ["task", "queue"])
TASK_FAILURES = Counter(
    "celery_task_failures_total", "Tasks that raised (after their own retries).", ["task", "queue", "exception"]
)

# --- Workflow runs (progressive fetch jobs, transcription runs, audits, automation runs, batches) ---------------
RUN_ENDED = Counter("workflow_runs_ended_total", "Runs ended, by kind and terminal status.", ["kind", "status"])
RUN_DURATION = Histogram(
    "workflow_run_duration_seconds",
    "End-to-end duration of a run (created to ended), by kind and terminal status.",
    ["kind", "status"],
    buckets=_SECONDS,
)
RECONCILER_ACTIONS = Counter(
    "reconciler_actions_total",
    "What the reconcilers did: redrive (a run without progress sent again), timed_out, finished (an end that "
    "was lost), by workflow.",
    ["workflow", "action"],
)

# --- Outside services: the CRM gateway, speech-to-text (ElevenLabs) and the LLM ----------------------------------
OUTBOUND_DURATION = Histogram(
    "outbound_request_duration_seconds",
    "Latency of a call to an outside service, by service (crm, stt, llm) and outcome (ok, error, rate_limited, "
    "timeout).",
    ["service", "outcome"],
    buckets=_SECONDS,
)
OUTBOUND_REQUESTS = Counter(
    "outbound_requests_total",
    "Calls to an outside service, by service, outcome and HTTP status ('none' without a response).",
    ["service", "outcome", "status"],
)
LLM_TOKENS = Counter("llm_tokens_total", "Tokens the LLM server reported, by model and kind.", ["model", "kind"])
STT_AUDIO_SECONDS = Counter("stt_audio_seconds_total", "Seconds of audio transcribed.", ["model"])

# --- The evidence gate and webhooks -----------------------------------------------------------------------------
EVIDENCE_VERDICTS = Counter(
    "evidence_gate_verdicts_total",
    "Quotes checked by the evidence gate, by result (verified or not) and reason.",
    ["verified", "reason"],
)
WEBHOOK_ATTEMPTS = Counter(
    "webhook_attempts_total",
    "Webhook delivery attempts, by outcome (success, retry, failed, refused).",
    ["outcome"],
)


def outcome_of(status: int | None, *, timeout: bool = False) -> str:
    """The ``outcome`` label of a call: ``timeout``, ``rate_limited`` (429), ``error`` (no response, 4xx, 5xx)
    or ``ok``."""
    if timeout:
        return "timeout"
    if status == 429:
        return "rate_limited"
    if status is None or status >= 400:
        return "error"
    return "ok"


def record_outbound(service: str, started: float, *, status: int | None, timeout: bool = False) -> None:
    """One call to an outside service that began at ``started`` (``time.perf_counter()``): its latency and its
    outcome. A metric never fails the call: an error recording it is logged and dropped."""
    try:
        outcome = outcome_of(status, timeout=timeout)
        OUTBOUND_DURATION.labels(service, outcome).observe(time.perf_counter() - started)
        OUTBOUND_REQUESTS.labels(service, outcome, str(status) if status is not None else "none").inc()
    except Exception:
        logger.warning("outbound_metrics_failed", extra={"service": service}, exc_info=True)


# The ``kind`` label of a workflow run, by model (``core.runs.TrackedRun`` subclasses): short and stable.
RUN_KINDS = {
    "progressivefetchjob": "job",
    "transcriptionrun": "transcription_run",
    "audit": "audit",
    "automationrun": "automation_run",
    "evaluation": "evaluation",
}


def run_kind(model: type) -> str:
    """The ``kind`` label of a run model (its model name when not listed)."""
    name = str(model._meta.model_name)  # type: ignore[attr-defined]
    return RUN_KINDS.get(name, name)
