"""``/metrics`` scraped during a real workflow (worker processes recording into a shared multiprocess directory,
the three simulators over HTTP, a webhook receiver): a progressive fetch job with a webhook, then an audit of a
sale (its transcription first). Scraped while the audit runs (it shows as active) and after: every family the
on-call engineer reads is there, with samples from the workers (tasks, calls to the CRM, speech-to-text and the
LLM, tokens, evidence verdicts, webhook attempts, run durations), from this web process (HTTP per route) and
read at scrape time (queue depth, runs by state)."""

from __future__ import annotations

import re
from datetime import date

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from tests.workflow.conftest import wait_for
from tests.workflow.faults import Recorder
from tests.workflow.test_audits import COMPLIANT, audit_ended, client_for, run_audit

pytestmark = [pytest.mark.workflow, pytest.mark.django_db(transaction=True)]

TOKEN = "metrics-test-token"
RANGE_URL = "/api/fiches/status/by-date-range"
# family → a label that must have been seen with the given value (None: any sample at all).
EXPECTED: dict[str, tuple[str, str] | None] = {
    "django_http_requests_latency_seconds_by_view_method": ("view", "audit-run"),
    "django_http_responses_total_by_status_view_method": ("status", "202"),
    "celery_task_runtime_seconds": ("queue", "llm"),
    "celery_queue_depth": ("queue", "default"),
    "celery_broker_up": None,
    "workflow_run_oldest_active_seconds": ("kind", "audit"),
    "workflow_runs_ended": ("kind", "audit"),
    "workflow_run_duration_seconds": ("kind", "transcription_run"),
    "outbound_request_duration_seconds": ("service", "llm"),
    "outbound_requests": ("service", "stt"),
    "llm_tokens": ("kind", "prompt"),
    "stt_audio_seconds": None,
    "evidence_gate_verdicts": ("verified", "true"),
    "webhook_attempts": ("outcome", "success"),
}


def scrape() -> dict[str, list]:
    response = APIClient().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.content.decode())}


def has(families: dict[str, list], name: str, label: tuple[str, str] | None) -> bool:
    samples = families.get(name, [])
    if label is None:
        return bool(samples)
    key, value = label
    return any(sample.labels.get(key) == value for sample in samples)


@pytest.fixture
def receiver():
    server = Recorder()
    yield server
    server.stop()


def test_metrics_are_scraped_during_a_fetch_job_and_an_audit(
    audit_stack, make_role, make_user, receiver, settings, tmp_path
):
    crm, stt, llm, pusher, start = audit_stack
    directory = tmp_path / "prometheus"
    directory.mkdir()
    settings.METRICS_TOKEN, settings.METRICS_MULTIPROC_DIR = TOKEN, str(directory)
    settings.WEBHOOK_ALLOWED_ORIGINS = [receiver.origin]
    start("metrics", PROMETHEUS_MULTIPROC_DIR=str(directory), WEBHOOK_ALLOWED_ORIGINS=receiver.origin)
    auditor = make_user(make_role("metrics-auditor", audits=("rw", "ALL"), fiches=("r", "ALL")))

    # Without the token, nothing.
    assert APIClient().get("/metrics").status_code == 401
    assert APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401

    # A progressive fetch job with a webhook.
    day = date(2026, 2, 2).isoformat()
    meta = client_for(auditor).get(RANGE_URL, {"startDate": day, "endDate": day, "webhookUrl": f"{receiver.origin}/h"})
    assert meta.status_code == 200, meta.content
    wait_for(lambda: receiver.records, timeout=45, message="the job's webhook")

    # An audit (its transcription first), scraped while it runs.
    audit_id = run_audit(auditor, COMPLIANT)
    during = wait_for(
        lambda: (f := scrape()) and has(f, "workflow_runs_active", ("kind", "audit")) and f,
        timeout=30,
        message="the running audit in /metrics",
    )
    assert audit_ended(audit_id).status == "completed"
    after = scrape()

    missing = [name for name, label in EXPECTED.items() if not has(after, name, label)]
    assert missing == [], missing
    assert has(during, "workflow_runs_active", ("kind", "audit"))
    assert "workflow_runs_active" in after  # declared, empty now: nothing is left running
    # The run's duration was observed once, in a worker, and reached this scrape through the shared directory.
    counts = [s for s in after["workflow_run_duration_seconds"] if s.name.endswith("_count")]
    assert any(s.labels == {"kind": "audit", "status": "completed"} and s.value >= 1 for s in counts)
    # No id in any label value: bounded label sets only.
    uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-")
    assert not [s for samples in after.values() for s in samples if any(uuid.search(v) for v in s.labels.values())]
