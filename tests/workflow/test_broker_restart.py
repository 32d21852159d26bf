"""RabbitMQ restarted in the middle of the work (``rabbitmqctl stop_app`` / ``start_app``): a progressive fetch
job, a transcription run and an audit, with workers consuming quorum queues (publisher confirms, late acks), all
end — completed, nothing lost, nothing counted twice — without the reconcilers' help, and with it. The time each
took to finish after the broker came back is appended to ``.pytest_workers/broker_restart.txt``.

Needs the local RabbitMQ (127.0.0.1:5672, guest/guest; ``.ci/run`` starts it when it is down)."""

from __future__ import annotations

import subprocess
import time
from contextlib import contextmanager, nullcontext
from datetime import date, timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import override_settings
from kombu import Exchange, Queue

from audits.models import Audit
from audits.tasks import reconcile_audits
from fiches.models import FicheCache, ProgressiveFetchJob
from fiches.services.access import fiche_with_details
from fiches.services.jobs import progressive_fetch_request
from fiches.tasks import reconcile_progressive_jobs
from tests.workflow.conftest import wait_for
from tests.workflow.faults import purge_rabbitmq
from tests.workflow.test_audits import COMPLIANT, COMPLIANT_2, run_audit
from tests.workflow.test_faults import reconciler_beat
from transcriptions.models import TranscriptionRun
from transcriptions.services.runs import transcription_request
from transcriptions.tasks import reconcile_transcription_runs

pytestmark = [pytest.mark.workflow, pytest.mark.faults, pytest.mark.django_db(transaction=True)]

AMQP = "amqp://guest:guest@127.0.0.1:5672//"
RESULTS = Path(__file__).resolve().parents[2] / ".pytest_workers" / "broker_restart.txt"
OUTAGE_SECONDS = 3.0


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def quorum_queues() -> tuple[Queue, ...]:
    return tuple(
        Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments={"x-queue-type": "quorum"})
        for name in django_settings.CELERY_QUEUE_NAMES
    )


@contextmanager
def on_rabbitmq():
    """This process publishes to RabbitMQ's quorum queues, as the workers started with the amqp URL consume."""
    from config.celery import app

    def reset() -> None:
        app._pool = None
        app.amqp._producer_pool = None
        app.amqp._rtable = None
        for cached in ("queues", "default_queue", "router", "default_exchange"):
            app.amqp.__dict__.pop(cached, None)

    names = ("broker_url", "task_queues", "broker_transport_options", "task_default_exchange_type")
    old = {name: app.conf[name] for name in names}
    purge_rabbitmq(AMQP)
    app.conf.update(
        broker_url=AMQP,
        task_queues=quorum_queues(),
        broker_transport_options={"confirm_publish": True},
        task_default_exchange_type="topic",
    )
    reset()
    try:
        with override_settings(CELERY_BROKER_URL=AMQP, CELERY_BROKER_IS_AMQP=True):
            yield
    finally:
        app.conf.update(old)
        reset()


def reconcilers(every: float | None):
    """Beat's reconcilers every ``every`` seconds (None: never: the work must end without them)."""
    if every is None:
        return nullcontext()
    return reconciler_beat(every, (reconcile_progressive_jobs, reconcile_transcription_runs, reconcile_audits))


@pytest.mark.parametrize("reconciler_every", [None, 1.0], ids=["without-reconciler", "with-reconciler"])
def test_a_rabbitmq_restart_mid_work_loses_no_task(audit_stack, make_role, make_user, settings, reconciler_every):
    crm, stt, llm, pusher, start = audit_stack
    settings.CRM_RATE_LIMIT = "off"
    with on_rabbitmq():
        start(
            "rmq",
            CELERY_BROKER_URL=AMQP,
            PROGRESSIVE_FETCH_STALL_SECONDS="2",
            TRANSCRIPTION_STALL_SECONDS="2",
            AUDIT_STALL_SECONDS="2",
        )
        user = make_user(make_role("rmq-all", fiches=("rw", "ALL"), audits=("rw", "ALL"), transcriptions=("rw", "ALL")))
        crm.config.latency_ms, stt.config.latency_ms, llm.config.latency_ms = 1500, 4000, 700

        days = [date(2026, 3, 2) + timedelta(days=i) for i in range(16)]
        job_id = progressive_fetch_request(user=user, start=days[0], end=days[-1]).meta["backgroundJobId"]
        audit_id = run_audit(user, COMPLIANT)  # transcribes its call first, then its steps on the llm queue
        run_id = transcription_request(fiche=fiche_with_details(fiche_id=COMPLIANT_2), user=user).run_id

        wait_for(
            lambda: 1 <= len(ProgressiveFetchJob.objects.get(pk=job_id).dates_already_fetched) < len(days),
            timeout=60,
            interval=0.05,
            message="the job half-way",
        )
        assert not TranscriptionRun.objects.get(pk=run_id).is_terminal  # its recordings are with the vendor
        assert not Audit.objects.get(pk=audit_id).is_terminal
        rabbitmqctl("stop_app")
        try:
            time.sleep(OUTAGE_SECONDS)
        finally:
            rabbitmqctl("start_app")  # whatever happens, the broker is back for the tests after this one
        back = time.monotonic()
        crm.config.latency_ms, stt.config.latency_ms, llm.config.latency_ms = 0, 200, 50

        ended: dict[str, float] = {}
        with reconcilers(reconciler_every):

            def all_ended() -> bool:
                rows = {
                    "job": ProgressiveFetchJob.objects.get(pk=job_id),
                    "transcription_run": TranscriptionRun.objects.get(pk=run_id),
                    "audit": Audit.objects.get(pk=audit_id),
                }
                for name, row in rows.items():
                    if row.is_terminal and name not in ended:
                        ended[name] = time.monotonic() - back
                return len(ended) == len(rows)

            try:
                wait_for(all_ended, timeout=180, interval=0.2, message="every run to end after the restart")
            except AssertionError:
                raise AssertionError(
                    f"ended {ended}; job {ProgressiveFetchJob.objects.get(pk=job_id).status}, run "
                    f"{TranscriptionRun.objects.get(pk=run_id).status}, audit {Audit.objects.get(pk=audit_id).status}"
                ) from None

    job = ProgressiveFetchJob.objects.get(pk=job_id)
    assert job.status == "complete" and sorted(job.dates_already_fetched) == days
    assert job.total_fiches == FicheCache.objects.filter(sales_date__range=(days[0], days[-1])).count()
    run = TranscriptionRun.objects.get(pk=run_id)
    assert run.status == "completed" and sorted(run.done_call_ids) == sorted(run.call_ids)
    audit = Audit.objects.get(pk=audit_id)
    assert audit.status == "completed", audit.error
    assert audit.step_results.filter(status="completed").count() == audit.step_results.count()
    label = "without the reconcilers" if reconciler_every is None else f"reconcilers every {reconciler_every:g} s"
    timings = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(ended.items(), key=lambda i: i[1]))
    line = f"RabbitMQ down {OUTAGE_SECONDS:g} s, {label}: ended after the restart in {timings}\n"
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as results:  # the figures (the issue's measurement), kept beside the workers' logs
        results.write(line)
