"""A run's notifications are sent at least once: the run's end only records them as due; a worker that
dies before sending them loses nothing, because the reconciler sends them later. Real outside systems:
a webhook receiver on 127.0.0.1 (signatures verified with the ``standardwebhooks`` library) and an
SMTP server (aiosmtpd). One delivery per run (its ``webhook-id`` the same on every re-send), one
email in the normal case, ``notified_at`` set only once both are done, a failed attempt retried
later and given up after ``NOTIFY_MAX_ATTEMPTS``; the Pusher toast every logged-in user receives
carries nothing of the run's but its id."""

from __future__ import annotations

import base64
from datetime import date, timedelta

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from automation import notifications
from automation.models import AutomationRun, AutomationSchedule
from automation.services import runs
from automation.tasks import automation_notify_run, reconcile_automation_runs
from core.locks import redis_lock
from fiches.models import FicheCache
from realtime.models import WebhookDelivery
from realtime.tasks import deliver_webhook
from realtime.webhooks import delivery_redeliver
from tests.automation.conftest import published, take_queued
from tests.realtime.conftest import Receiver
from tests.support import Mailbox, free_port, queued_tasks

pytestmark = pytest.mark.django_db

SECRET = "whsec_" + base64.b64encode(b"automation-notify-secret-0123456789").decode()
NOTIFY_TASK = "automation.tasks.webhooks.automation_notify_run"


@pytest.fixture
def mailbox(settings):
    box = Mailbox()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"  # pytest-django's is in memory
    settings.SMTP_HOST = settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = box.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 5
    yield box
    box.stop()


@pytest.fixture
def receiver(settings):
    server = Receiver().start()
    settings.WEBHOOK_ALLOWED_ORIGINS = [server.origin]
    settings.WEBHOOK_TIMEOUT_SECONDS = 5.0
    yield server
    server.stop()


@pytest.fixture
def ended(boss, receiver, monkeypatch) -> AutomationRun:
    """A run that ended (completed) in a process that died before anything was sent: its
    after-commit callbacks never run (this test's transaction never commits)."""
    FicheCache.objects.create(fiche_id="F1", sales_date=date(2026, 2, 4), groupe="Lyon-1")
    plan = AutomationSchedule.objects.create(
        name="Nightly QA (secret name)",
        fiche_selection={"mode": "manual", "fiche_ids": ["F1"]},
        owner=boss,
        notify_on_complete=True,
        webhook_url=receiver.url("/hook"),
        webhook_secret=SECRET,
        notify_emails=["qa@example.com"],
    )
    run = runs.run_create(schedule=plan)
    assert run is not None
    runs.run_start(run_id=str(run.pk))
    assert runs.fiche_done(run_id=str(run.pk), fiche_id="F1", status="successful")
    run.refresh_from_db()
    assert run.status == "completed"
    return run


def due_since(run: AutomationRun, seconds: float) -> None:
    AutomationRun.objects.filter(pk=run.pk).update(notify_due_at=timezone.now() - timedelta(seconds=seconds))


def reconcile_and_send(django_capture_on_commit_callbacks) -> list[str]:
    """The beat's reconciler, then what it queued on the ``webhooks`` queue, as a worker would."""
    actions = reconcile_automation_runs.apply().get()
    for task in take_queued("webhooks"):
        if task.name == NOTIFY_TASK:
            with django_capture_on_commit_callbacks(execute=True):
                automation_notify_run.apply(args=task.args, task_id=task.id).get()
    return actions["notify"]


def deliver_queued_webhooks() -> int:
    delivered = 0
    for task in take_queued("webhooks"):
        if task.name == "realtime.tasks.webhooks.deliver":
            deliver_webhook.apply(args=task.args, kwargs=task.kwargs).get()
            delivered += 1
    return delivered


def test_notifications_lost_with_a_worker_are_sent_once_by_the_reconciler(
    ended, receiver, mailbox, settings, pusher_on, django_capture_on_commit_callbacks
):
    run_id = str(ended.pk)
    assert ended.notify_due_at is not None and ended.notified_at is None
    assert not WebhookDelivery.objects.exists() and mailbox.messages == []

    # Within the grace period the reconciler leaves it to the message that should send it.
    assert runs.run_reconcile(now=timezone.now())["notify"] == []

    # First re-send: the SMTP server is down. The webhook delivery is recorded; the run stays unnotified.
    due_since(ended, 120)
    settings.EMAIL_PORT = free_port()  # nothing listens there
    assert reconcile_and_send(django_capture_on_commit_callbacks) == [run_id]
    ended.refresh_from_db()
    assert ended.notified_at is None and ended.emailed_at is None and ended.notify_attempts == 1
    assert "ConnectionRefused" in ended.notify_error
    assert ended.notify_due_at > timezone.now()  # tried again after a backoff
    assert WebhookDelivery.objects.filter(source="automation", source_id=run_id).count() == 1
    assert deliver_queued_webhooks() == 1

    # Second re-send: the SMTP server is back. No second delivery; the email goes; the run is notified.
    settings.EMAIL_PORT = mailbox.port
    due_since(ended, 120)
    with redis_lock(f"automation-notify:{run_id}", timeout=10):  # another sender busy: this one steps back
        assert notifications.run_notify(run_id=run_id) == "busy"
    assert reconcile_and_send(django_capture_on_commit_callbacks) == [run_id]
    ended.refresh_from_db()
    assert ended.notified_at is not None and ended.emailed_at is not None and ended.notify_error is None
    delivery = WebhookDelivery.objects.get(source="automation", source_id=run_id)
    assert len(mailbox.messages) == 1 and mailbox.messages[0].rcpt_tos == ["qa@example.com"]
    assert run_id in mailbox.messages[0].content.decode()
    assert deliver_queued_webhooks() == 0  # no new delivery, no new attempt

    # Nothing is due any more: the reconciler and a duplicate message are no-ops.
    due_since(ended, 3600)
    assert runs.run_reconcile()["notify"] == []
    assert notifications.run_notify(run_id=run_id) == "nothing due"

    # The receiver: one message, signed, re-sent (redelivered) with the same webhook-id.
    with django_capture_on_commit_callbacks(execute=True):
        delivery_redeliver(delivery=delivery)
    assert deliver_queued_webhooks() == 1
    posts = receiver.at("/hook")
    assert len(posts) == 2
    ids = {post.headers["webhook-id"] for post in posts}
    assert ids == {delivery.webhook_id} == {f"msg_automation_{run_id}"}  # the run id is the idempotency key
    for post in posts:
        body = Webhook(SECRET).verify(post.body, post.headers)
        assert body["type"] == "automation.run.completed" and body["data"]["runId"] == run_id
        assert (body["data"]["successful"], body["data"]["totalFiches"]) == (1, 1)
    assert WebhookDelivery.objects.count() == 1 and len(mailbox.messages) == 1

    # The toast, once, to every logged-in user: nothing of the run's but its id.
    toasts = [data for channel, name, data in published() if name == "notification"]
    assert toasts == [
        {
            "type": "info",
            "message": "Une automatisation est terminée",
            "description": "Ouvrez l'exécution pour voir son résultat.",
            "duration": 8000,
            "runId": run_id,
        }
    ]


def test_the_run_end_hands_the_notifications_to_a_task_on_the_webhooks_queue(boss, django_capture_on_commit_callbacks):
    FicheCache.objects.create(fiche_id="F1", sales_date=date(2026, 2, 4), groupe="Lyon-1")
    plan = AutomationSchedule.objects.create(
        name="s", fiche_selection={"mode": "manual", "fiche_ids": ["F1"]}, owner=boss
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = runs.run_create(schedule=plan)
        runs.run_start(run_id=str(run.pk))
        runs.fiche_done(run_id=str(run.pk), fiche_id="F1", status="failed", error="boom")
    assert [t.name for t in queued_tasks("webhooks")] == []  # nothing before the end is committed
    for callback in callbacks:
        callback()
    assert [(t.name, t.args) for t in queued_tasks("webhooks")] == [(NOTIFY_TASK, [str(run.pk)])]


def test_a_run_that_asked_for_nothing_is_marked_notified_and_sends_nothing(boss, receiver, mailbox):
    FicheCache.objects.create(fiche_id="F1", sales_date=date(2026, 2, 4), groupe="Lyon-1")
    plan = AutomationSchedule.objects.create(
        name="quiet",
        fiche_selection={"mode": "manual", "fiche_ids": ["F1"]},
        owner=boss,
        notify_on_complete=False,
        webhook_url=receiver.url("/hook"),
        notify_emails=["qa@example.com"],
    )
    run = runs.run_create(schedule=plan)
    runs.run_start(run_id=str(run.pk))
    runs.fiche_done(run_id=str(run.pk), fiche_id="F1", status="successful")
    assert notifications.run_notify(run_id=str(run.pk)) == "notified"
    run.refresh_from_db()
    assert run.notified_at is not None and run.signalled_at is not None
    assert not WebhookDelivery.objects.exists() and mailbox.messages == []


def test_notifications_are_given_up_after_the_last_attempt(ended, settings, receiver):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.SMTP_HOST = settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = free_port()
    settings.EMAIL_USE_TLS = False
    AutomationRun.objects.filter(pk=ended.pk).update(notify_attempts=notifications.NOTIFY_MAX_ATTEMPTS - 1)
    assert notifications.run_notify(run_id=str(ended.pk)) == "gave up"
    ended.refresh_from_db()
    assert ended.notified_at is None and ended.notify_due_at is None and ended.notify_error
    assert runs.run_reconcile(now=timezone.now() + timedelta(days=1))["notify"] == []
