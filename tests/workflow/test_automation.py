"""Automation runs with real worker processes, the CRM, speech-to-text and LLM simulators, a Pusher
stub, a webhook receiver and a real SMTP sink (aiosmtpd): a run selects, fetches, transcribes and
audits for the schedule's owner (who is recorded as requesting them), with guardrails giving
per-fiche results; it ends with one terminal event, one signed webhook (verified with the
standardwebhooks library), one email and one notification naming nothing of the run's; a second run
within the cooldown does not revalidate; a failing transcription is retried up to maxRetries;
continueOnError both ways; a worker killed mid-run still ends the run."""

from __future__ import annotations

import base64
import os
import signal
import threading
from collections import Counter
from datetime import date

import pytest
from standardwebhooks.webhooks import Webhook

from accounts.grants import Scope
from accounts.models import Role, RolePermission, User
from audits.defaults import DEFAULT_CONFIG_NAME
from audits.models import Audit, AuditConfig
from automation.models import AutomationRun, AutomationRunFicheResult, AutomationSchedule
from automation.services.runs import run_create
from tests.support import Mailbox
from tests.workflow.conftest import wait_for
from tests.workflow.faults import Recorder

pytestmark = [pytest.mark.workflow, pytest.mark.django_db(transaction=True)]

DAY = date(2026, 2, 4)  # the CRM simulator's sales of that day (seed 42, 6 a day): 2227000..2227005
SECRET = "whsec_" + base64.b64encode(b"automation-test-secret-0123456789").decode()


@pytest.fixture(scope="module")
def outside():
    receiver, mailbox = Recorder(), Mailbox()
    yield receiver, mailbox
    receiver.stop()
    mailbox.stop()


@pytest.fixture
def automation(audit_stack, outside, settings):
    crm, stt, llm, pusher, start = audit_stack
    receiver, mailbox = outside
    with receiver.lock:
        receiver.records.clear()
    mailbox.messages.clear()
    settings.WEBHOOK_ALLOWED_ORIGINS = [receiver.origin]
    env = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(mailbox.port),
        "SMTP_USE_TLS": "false",
        "WEBHOOK_ALLOWED_ORIGINS": receiver.origin,
        "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        "TRANSCRIPTION_MAX_ERRORS": "1",
    }

    def start_worker(name: str, **overrides: str):
        return start(name, **{**env, **overrides})

    return crm, stt, llm, pusher, receiver, mailbox, start_worker


def config_id() -> int:
    return AuditConfig.objects.get(name=DEFAULT_CONFIG_NAME).pk


def owner() -> User:
    """A schedule owner with every grant a run uses, scope ALL."""
    user = User.objects.filter(email="automation-owner@example.com").first()
    if user is not None:
        return user
    role = Role.objects.create(key="automation-owner", name="Automation owner")
    RolePermission.objects.bulk_create(
        RolePermission(role=role, permission_key=key, can_read=True, can_write=True, scope=Scope.ALL)
        for key in ("automation", "fiches", "transcriptions", "audits")
    )
    user = User.objects.create_user(email="automation-owner@example.com", password="owner-pass-2026")
    user.roles.set([role])
    return user


def schedule(**fields) -> AutomationSchedule:
    selection = {"mode": "dateRange", "start_date": DAY.isoformat(), "end_date": DAY.isoformat()}
    selection.update(fields.pop("selection", {}))
    defaults = {
        "name": "Audit du jour",
        "schedule_type": "MANUAL",
        "fiche_selection": selection,
        "audit_config_ids": [config_id()],
        "notify_on_complete": False,
        "notify_on_error": False,
        "owner": owner(),
    }
    return AutomationSchedule.objects.create(**{**defaults, **fields})


def run_ended(run_id, timeout: float = 180) -> AutomationRun:
    try:
        return wait_for(
            lambda: (r := AutomationRun.objects.get(pk=run_id)).is_terminal and r,
            timeout=timeout,
            interval=0.25,
            message=f"automation run {run_id} to end",
        )
    except AssertionError:
        rows = AutomationRunFicheResult.objects.filter(run_id=run_id).values_list(
            "fiche_id", "status", "step", "transcription_attempts", "error"
        )
        raise AssertionError(f"run {run_id} did not end; its fiches: {list(rows)}") from None


def results(run: AutomationRun) -> dict[str, AutomationRunFicheResult]:
    return {r.fiche_id: r for r in AutomationRunFicheResult.objects.filter(run=run)}


def run_events(pusher: Recorder, run: AutomationRun) -> list[tuple[str, dict]]:
    return pusher.channel_events(f"private-job-automation-run-{run.pk}")


def sales_list_calls(crm) -> int:
    return sum(1 for r in crm.requests() if r["path"] == "/api/fiches/sales-with-calls")


def test_a_run_fetches_transcribes_and_audits_then_notifies_once_by_pusher_webhook_and_email(automation):
    crm, stt, llm, pusher, receiver, mailbox, start = automation
    start("auto1")
    plan = schedule(
        selection={"max_recordings_per_fiche": 2},
        notify_on_complete=True,
        webhook_url=f"{receiver.origin}/hook",
        webhook_secret=SECRET,
        notify_emails=["qa@example.com"],
    )
    run = run_create(schedule=plan)
    run = run_ended(run.pk)
    rows = results(run)
    assert run.status == "completed", (run.error, {f: (r.status, r.reason, r.error) for f, r in rows.items()})
    assert set(rows) == {f"22270{n:02d}" for n in range(6)} and run.total_fiches == 6
    assert (rows["2227003"].status, rows["2227003"].reason) == ("ignored", "3 recordings, more than the limit of 2")
    assert {f for f, r in rows.items() if r.status == "successful"} == set(rows) - {"2227003"}
    assert (run.successful, run.failed, run.ignored, run.skipped) == (5, 0, 1, 0)
    for fiche_id, row in rows.items():
        if row.status == "successful":
            assert row.transcription_attempts == 1 and len(row.audit_ids) == 1, fiche_id
            audit = Audit.objects.get(pk=row.audit_ids[0])
            assert audit.status == "completed" and audit.requested_by == plan.owner
    assert run.revalidation == "done" and sales_list_calls(crm) == 1

    events = run_events(pusher, run)
    names = [n for n, _ in events]
    assert names[0] == "automation.run.started" and names[-1] == "automation.run.completed"
    assert names.count("automation.run.completed") == 1 and "automation.run.failed" not in names
    assert names.count("automation.run.progress") == 6 and events[-1][1]["progress"] == 100
    notifications = wait_for(lambda: pusher.channel_events("private-global", "notification"), message="the toast")
    assert len(notifications) == 1
    assert notifications[0][1] == {
        "type": "info",
        "message": "Une automatisation est terminée",
        "description": "Ouvrez l'exécution pour voir son résultat.",
        "duration": 8000,
        "runId": str(run.pk),
    }
    assert "ficheId" not in str([data for _, data in events])  # the run's channel: counts only

    hooks = wait_for(lambda: [r for r in receiver.records if r["path"] == "/hook"], message="the webhook")
    mail = wait_for(lambda: mailbox.messages, message="the email")
    stop_wait = threading.Event()
    stop_wait.wait(1.0)  # nothing else comes
    hooks = [r for r in receiver.records if r["path"] == "/hook"]
    assert len(hooks) == 1 and len(mailbox.messages) == 1
    body = Webhook(SECRET).verify(hooks[0]["body"], {k.lower(): v for k, v in hooks[0]["headers"].items()})
    assert body["type"] == "automation.run.completed" and body["data"]["runId"] == str(run.pk)
    run.refresh_from_db()
    assert run.notified_at is not None and run.emailed_at is not None  # by the task on the webhooks queue
    assert (body["data"]["successful"], body["data"]["ignored"]) == (5, 1)
    assert mail[0].rcpt_tos == ["qa@example.com"]
    text = mail[0].content.decode()
    assert "completed" in text and str(run.pk) in text

    # Again at once, for the fiches not audited yet: the cooldown spares the CRM a second sales search.
    plan.fiche_selection = {**plan.fiche_selection, "only_unaudited": True}
    plan.notify_on_complete = False
    plan.save()
    again = run_ended(run_create(schedule=plan).pk)
    assert again.revalidation == "skipped (cooldown)" and sales_list_calls(crm) == 1
    assert set(results(again)) == {"2227003"} and again.status == "completed" and again.ignored == 1
    assert len([r for r in receiver.records if r["path"] == "/hook"]) == 1  # not asked this time


def test_a_failing_transcription_is_retried_up_to_max_retries_and_continue_on_error_both_ways(automation):
    crm, stt, llm, pusher, receiver, mailbox, start = automation
    start("auto2")
    stt.config.fail_call_ids = frozenset({"c-2227002-1"})  # 2227002's only recording always fails

    plan = schedule(
        selection={"mode": "manual", "fiche_ids": ["2227002", "2227004"]},
        retry_failed=True,
        max_retries=2,
        notify_on_error=True,
        notify_emails=["qa@example.com"],
    )
    run = run_ended(run_create(schedule=plan).pk)
    rows = results(run)
    assert run.status == "partial" and (run.successful, run.failed) == (1, 1)
    assert rows["2227004"].status == "successful"
    failed = rows["2227002"]
    assert failed.status == "failed" and failed.error.startswith("transcription:")
    assert failed.transcription_attempts == 3  # the first run and maxRetries=2 more
    calls = Counter(r["call_id"] for r in stt.requests() if r["path"] == "/v1/speech-to-text")
    assert calls["c-2227002-1"] == 3 * 2  # each run: one call and TRANSCRIPTION_MAX_ERRORS=1 retry
    assert len(wait_for(lambda: mailbox.messages, message="the email")) == 1  # partial: notifyOnError

    # continueOnError=false: the first failure ends the run failed; what was not done is skipped.
    stt.clear_requests()
    stop = schedule(
        name="Arrêt à la première erreur",
        selection={"mode": "manual", "fiche_ids": ["2227002", "2227004", "2227005", "2227000"]},
        continue_on_error=False,
    )
    run = run_ended(run_create(schedule=stop).pk)
    rows = results(run)
    assert run.status == "failed" and run.dispatch_stopped and "2227002" not in run.error  # the row says which
    assert rows["2227002"].status == "failed" and run.failed == 1
    assert run.successful + run.failed + run.skipped + run.ignored == 4 and run.skipped >= 1
    assert all(r.reason == "stopped after a failure" for r in rows.values() if r.status == "skipped")
    names = wait_for(  # published after the commit that ended the run: it may land just after the status
        lambda: (seen := [n for n, _ in run_events(pusher, run)]).count("automation.run.failed") and seen,
        message="the run's failed event",
    )
    assert names.count("automation.run.failed") == 1 and "automation.run.completed" not in names


def test_a_worker_killed_mid_run_still_ends_the_run_once(automation):
    from automation.tasks import reconcile_automation_runs
    from transcriptions.tasks import reconcile_transcription_runs

    crm, stt, llm, pusher, receiver, mailbox, start = automation
    timing = {
        "CLAIM_LEASE_SECONDS": "3",
        "CLAIM_HEARTBEAT_SECONDS": "1",
        "TRANSCRIPTION_STALL_SECONDS": "2",
        "AUTOMATION_STALL_SECONDS": "2",
        "AUDIT_STALL_SECONDS": "2",
    }
    first = start("auto3a", **timing)
    stt.config.latency_ms = 2000
    plan = schedule(selection={"mode": "manual", "fiche_ids": ["2227000", "2227002", "2227004"]})
    run = run_create(schedule=plan)
    wait_for(lambda: stt.current_in_flight() >= 2, message="transcriptions in flight", interval=0.05)
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait()
    stt.config.latency_ms = 0
    start("auto3b", **timing)
    stop = threading.Event()

    def beat():
        from audits.tasks import reconcile_audits

        while not stop.wait(1.0):
            reconcile_transcription_runs.delay()
            reconcile_audits.delay()
            reconcile_automation_runs.delay()

    beat_thread = threading.Thread(target=beat, daemon=True)
    beat_thread.start()
    try:
        run = run_ended(run.pk, timeout=180)
    finally:
        stop.set()
        beat_thread.join()
    assert run.status == "completed", {f: (r.status, r.error) for f, r in results(run).items()}
    assert run.successful == 3
    threading.Event().wait(1.0)
    names = [n for n, _ in run_events(pusher, run)]
    assert names.count("automation.run.completed") == 1 and "automation.run.failed" not in names
