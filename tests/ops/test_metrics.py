"""``/metrics``: off without ``METRICS_TOKEN`` (404), 401 without the right bearer token; what other processes of
the host recorded (the multiprocess directory) added up; queue depth read from the broker; workflow runs by
state; Celery task metrics from its signals; ``manage.py metrics_server`` for a worker host."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from core.tasks import apply_outcome
from fiches.models import FicheCache, ProgressiveFetchJob
from tests.support import queued_tasks
from transcriptions.models import TranscriptionRun

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "unit-metrics-token"


def scrape(settings) -> dict[str, list]:
    settings.METRICS_TOKEN = TOKEN
    response = APIClient().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    return {family.name: family.samples for family in text_string_to_metric_families(response.content.decode())}


def value(families: dict[str, list], name: str, sample: str, **labels: str) -> float | None:
    for s in families.get(name, []):
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


@pytest.mark.django_db
def test_metrics_are_off_without_a_token_and_need_the_right_one(settings):
    settings.METRICS_TOKEN = ""
    assert APIClient().get("/metrics").status_code == 404
    settings.METRICS_TOKEN = TOKEN
    refused = APIClient().get("/metrics", HTTP_AUTHORIZATION="Bearer not-it")
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
    assert APIClient().get("/metrics", HTTP_AUTHORIZATION=TOKEN).status_code == 401  # the scheme is required
    assert APIClient().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


@pytest.mark.django_db
def test_what_other_processes_recorded_is_added_up(settings, tmp_path):
    """Two processes of the host (e.g. two Celery pool processes) record into the directory; the scrape adds."""
    probe = "from prometheus_client import Counter; Counter('probe_things', 'x', ['pool']).labels('llm').inc({n})"
    for n in (2, 3):
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
        subprocess.run([sys.executable, "-c", probe.format(n=n)], env=env, check=True)
    settings.METRICS_MULTIPROC_DIR = str(tmp_path)
    families = scrape(settings)
    assert value(families, "probe_things", "probe_things_total", pool="llm") == 5
    assert "django_http_requests_latency_seconds_by_view_method" in families  # and this process's own


@pytest.mark.django_db
def test_queue_depth_and_runs_by_state_are_read_at_scrape_time(settings, django_capture_on_commit_callbacks):
    now = timezone.now()
    job = ProgressiveFetchJob.objects.create(start_date=date(2026, 2, 2), end_date=date(2026, 2, 3), total_days=2)
    ProgressiveFetchJob.objects.filter(pk=job.pk).update(
        status="processing", last_progress_at=now - timedelta(minutes=20)
    )
    ProgressiveFetchJob.objects.create(
        start_date=date(2026, 2, 2), end_date=date(2026, 2, 2), total_days=1, status="complete"
    )
    before = len(queued_tasks("default"))
    apply_outcome.apply_async(args=["nothing", "x", {}], queue="default")  # no worker here: it waits
    families = scrape(settings)
    assert value(families, "celery_queue_depth", "celery_queue_depth", queue="default") == before + 1
    assert value(families, "celery_queue_depth", "celery_queue_depth", queue="llm") == 0
    assert value(families, "celery_broker_up", "celery_broker_up") == 1
    assert value(families, "workflow_runs_active", "workflow_runs_active", kind="job", status="processing") == 1
    assert value(families, "workflow_runs_active", "workflow_runs_active", kind="job", status="complete") is None
    oldest = value(families, "workflow_run_oldest_active_seconds", "workflow_run_oldest_active_seconds", kind="job")
    assert oldest is not None and 1190 < oldest < 1300


@pytest.mark.django_db
def test_a_run_waiting_for_its_budget_is_not_the_stalest(settings):
    """Waiting for the daily budget is waiting as designed: it counts as active, not as stuck."""
    now = timezone.now()
    fiche = FicheCache.objects.create(fiche_id="m-1", sales_date=date(2026, 2, 2))
    waiting = TranscriptionRun.objects.create(fiche=fiche, waiting_budget_since=now - timedelta(hours=3))
    moving = TranscriptionRun.objects.create(fiche=fiche, status="processing")
    TranscriptionRun.objects.filter(pk=waiting.pk).update(created_at=now - timedelta(hours=3))
    TranscriptionRun.objects.filter(pk=moving.pk).update(last_progress_at=now - timedelta(minutes=10))
    families = scrape(settings)
    for status in ("pending", "processing"):
        assert value(families, "workflow_runs_active", "workflow_runs_active", kind="transcription_run", status=status)
    name = "workflow_run_oldest_active_seconds"
    assert 590 < value(families, name, name, kind="transcription_run") < 700


@pytest.mark.django_db
def test_a_broker_down_is_reported_not_raised(settings):
    from celery import current_app

    old = current_app.conf.broker_url
    current_app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        families = scrape(settings)
    finally:
        current_app.conf.broker_url = old
    assert value(families, "celery_broker_up", "celery_broker_up") == 0


@pytest.mark.django_db
def test_celery_task_runtime_and_failures_are_recorded_from_its_signals(settings):
    from celery import shared_task

    @shared_task(name="tests.ops.boom")
    def boom() -> None:
        raise ValueError("boom")

    @shared_task(name="tests.ops.fine")
    def fine() -> int:
        return 1

    fine.apply()
    boom.apply()
    families = scrape(settings)
    ok = value(families, "celery_task_runtime_seconds", "celery_task_runtime_seconds_count", task="tests.ops.fine")
    assert ok is not None and ok >= 1
    failed = value(families, "celery_task_failures", "celery_task_failures_total", task="tests.ops.boom")
    assert failed is not None and failed >= 1
    labels = next(s.labels for s in families["celery_task_failures"] if s.labels.get("task") == "tests.ops.boom")
    assert labels["exception"] == "ValueError"


def test_a_worker_host_serves_its_metrics_on_a_port_of_its_own(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.test_settings"}
    probe = "from prometheus_client import Counter; Counter('probe_worker', 'x').inc(4)"
    subprocess.run([sys.executable, "-c", probe], env=env, check=True)
    server = subprocess.Popen(
        [sys.executable, "manage.py", "metrics_server", "--port", "0"],
        cwd=ROOT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        url = line.split(" on ")[-1].strip()
        assert url.startswith("http://127.0.0.1:"), line
        body = httpx.get(url, timeout=5).text
        assert "probe_worker_total 4.0" in body
    finally:
        server.terminate()
        assert server.wait(timeout=10) == 0


def test_metrics_server_refuses_without_a_directory():
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    result = subprocess.run(
        [sys.executable, "manage.py", "metrics_server"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.test_settings"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "PROMETHEUS_MULTIPROC_DIR is not set" in result.stderr
