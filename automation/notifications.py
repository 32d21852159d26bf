"""What a run's end tells the world, **at least once**: the domain signals, and per the schedule's
``notifyOnComplete`` / ``notifyOnError``, a signed Standard Webhooks POST (recorded as a delivery with
its attempts by ``realtime``, which retries it itself), an email through Django's SMTP backend when
``SMTP_HOST`` is set (else logged and skipped), and a ``notification`` Pusher toast.

The run's end records that its notifications are due (``notify_due_at``, in the transaction that ends
it); ``automation_notify_run`` (queue ``webhooks``) sends them after commit, and the reconciler again
for a run still not notified ``NOTIFY_GRACE_SECONDS`` after they were due (the message was lost, or
the worker died). ``run_notify`` is idempotent, serialized per run (a Redis lock) and fenced per part:

- signals: sent, then ``signalled_at`` set (a crash in between sends them again: receivers must be
  idempotent on the run id);
- webhook: one delivery per run, with the run id as idempotency key (``webhook-id``
  ``msg_automation_<run id>``): a second send, even concurrent, finds the delivery and sends nothing
  more, and the ``webhook-id`` is the same across re-sends and redeliveries;
- email: sent, then ``emailed_at`` set. A crash between the SMTP server's acceptance and that
  update sends it again on the next attempt (at least once, at most once in the normal case);
- ``notified_at`` is set only once the webhook delivery exists and the email was sent (or skipped:
  no recipients, no ``SMTP_HOST``); then the toast is published (best effort, once).

A failure (the SMTP server down, ...) leaves ``notified_at`` unset, records ``notify_error`` and moves
``notify_due_at`` out by a backoff; after ``NOTIFY_MAX_ATTEMPTS`` it gives up (``notify_due_at``
cleared, the error kept, logged at ERROR).

The toast goes to ``private-global``, which every logged-in user receives: it says only that an
automation ended and the run's id (no schedule name, no status, no counts); a client with
``automation.read`` fetches the run.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from automation.models import AutomationRun, AutomationSchedule, RunStatus
from automation.signals import automation_completed, automation_failed
from core.locks import LockNotAcquired, redis_lock
from core.retry import backoff_seconds
from realtime.publisher import publish
from realtime.registry import AttemptReport, register_webhook_source
from realtime.webhooks import webhook_send

logger = logging.getLogger("automation.notifications")

WEBHOOK_SOURCE = "automation"
NOTIFY_LOCK_SECONDS = 120  # more than an SMTP exchange (SMTP_TIMEOUT_SECONDS per step)
NOTIFY_MAX_ATTEMPTS = 8
NOTIFY_RETRY_BASE_SECONDS = 60.0
NOTIFY_RETRY_MAX_SECONDS = 3600.0


def run_link(run: AutomationRun) -> str:
    return f"{settings.API_BASE_URL}/api/automation/runs/{run.pk}"


def run_summary(run: AutomationRun) -> dict[str, Any]:
    """The run's outcome as webhooks and emails carry it."""
    return {
        "runId": str(run.pk),
        "scheduleId": run.schedule_id,
        "scheduleName": run.config.get("name"),
        "trigger": run.trigger,
        "status": run.status,
        "error": run.error,
        "totalFiches": run.total_fiches,
        "successful": run.successful,
        "failed": run.failed,
        "ignored": run.ignored,
        "skipped": run.skipped,
        "dateFrom": run.date_from.isoformat() if run.date_from else None,
        "dateTo": run.date_to.isoformat() if run.date_to else None,
        "startedAt": run.started_at.isoformat() if run.started_at else None,
        "completedAt": run.completed_at.isoformat() if run.completed_at else None,
        "url": run_link(run),
    }


def _wanted(run: AutomationRun) -> bool:
    config = run.config
    if run.status == RunStatus.COMPLETED:
        return bool(config.get("notify_on_complete"))
    if run.status == RunStatus.FAILED:
        return bool(config.get("notify_on_error"))
    return bool(config.get("notify_on_complete") or config.get("notify_on_error"))  # partial


def run_notify(*, run_id: str) -> str:
    """Send what is due for the run's end and not sent yet; returns what happened. Idempotent; one
    sender per run at a time (another one busy: "busy", the reconciler is the net)."""
    try:
        with redis_lock(f"automation-notify:{run_id}", timeout=NOTIFY_LOCK_SECONDS):
            return _notify(run_id)
    except LockNotAcquired:
        return "busy"


def _notify(run_id: str) -> str:
    run = AutomationRun.objects.select_related("schedule").filter(pk=run_id).first()
    if run is None or not run.is_terminal or run.notify_due_at is None or run.notified_at is not None:
        return "nothing due"
    if run.signalled_at is None:
        _signal(run)
        AutomationRun.objects.filter(pk=run.pk, signalled_at__isnull=True).update(signalled_at=timezone.now())
    wanted = _wanted(run)
    if wanted:
        summary = run_summary(run)
        try:
            _send_webhook(run, summary)
            _send_email(run, summary)
        except Exception as exc:  # the SMTP server down, the database gone for a moment...
            return _failed(run, exc)
    claimed = AutomationRun.objects.filter(pk=run.pk, notified_at__isnull=True).update(
        notified_at=timezone.now(), notify_error=None
    )
    if claimed and wanted:
        publish("notification", _toast(run))
    logger.info("automation_run_notified", extra={"run_id": run_id, "sent": wanted, "claimed": bool(claimed)})
    return "notified" if claimed else "nothing due"


def _signal(run: AutomationRun) -> None:
    signal = automation_failed if run.status == RunStatus.FAILED else automation_completed
    for receiver, response in signal.send_robust(sender=AutomationRun, run=run):
        if isinstance(response, Exception):
            logger.error("automation_signal_receiver_failed", extra={"run_id": str(run.pk), "receiver": repr(receiver)})


def _failed(run: AutomationRun, exc: Exception) -> str:
    attempts = run.notify_attempts + 1
    error = f"{type(exc).__name__}: {exc}"[:1000]
    rows = AutomationRun.objects.filter(pk=run.pk, notified_at__isnull=True)
    if attempts >= NOTIFY_MAX_ATTEMPTS:
        rows.update(notify_attempts=attempts, notify_error=error, notify_due_at=None)
        logger.error("automation_notify_gave_up", extra={"run_id": str(run.pk), "attempts": attempts, "error": error})
        return "gave up"
    wait = backoff_seconds(attempts - 1, base=NOTIFY_RETRY_BASE_SECONDS, cap=NOTIFY_RETRY_MAX_SECONDS)
    rows.update(notify_attempts=attempts, notify_error=error, notify_due_at=timezone.now() + timedelta(seconds=wait))
    logger.warning(
        "automation_notify_failed",
        extra={"run_id": str(run.pk), "attempts": attempts, "error": error, "retry_in": round(wait)},
    )
    return "retry later"


def _send_webhook(run: AutomationRun, summary: dict[str, Any]) -> None:
    """One delivery per run (the run id is its idempotency key), then ``realtime`` sends and retries it
    with the same ``webhook-id``."""
    schedule: AutomationSchedule | None = run.schedule
    url = (schedule.webhook_url if schedule else None) or run.config.get("webhook_url")
    if not url:
        return
    event = "automation.run.failed" if run.status == RunStatus.FAILED else "automation.run.completed"
    webhook_send(
        source=WEBHOOK_SOURCE,
        source_id=str(run.pk),
        event=event,
        url=url,
        secret=schedule.webhook_secret if schedule else None,
        data=summary,
        idempotency_key=str(run.pk),  # the webhook-id is msg_automation_<run id>, whoever sends it
    )


def _send_email(run: AutomationRun, summary: dict[str, Any]) -> None:
    """Send the email unless it was (``emailed_at``); an SMTP failure raises (tried again later)."""
    recipients = [e for e in run.config.get("notify_emails") or [] if e]
    if not recipients or run.emailed_at is not None:
        return
    if not settings.SMTP_HOST:
        logger.info("automation_email_skipped", extra={"run_id": str(run.pk), "reason": "SMTP_HOST not set"})
        return
    name = summary["scheduleName"] or "automation"
    subject = f"[Automation] {name}: {run.status} ({run.successful}/{run.total_fiches} fiches)"
    lines = [
        f"Run {run.pk} of « {name} » ended {run.status}.",
        "",
        f"Fiches: {run.total_fiches} — successful {run.successful}, failed {run.failed}, "
        f"ignored {run.ignored}, skipped {run.skipped}.",
    ]
    if summary["dateFrom"]:
        lines.append(f"Sales dates: {summary['dateFrom']} to {summary['dateTo']}.")
    if run.error:
        lines.append(f"Error: {run.error}")
    lines += ["", f"Details: {summary['url']}"]
    send_mail(subject, "\n".join(lines), settings.DEFAULT_FROM_EMAIL, recipients)
    # A crash here, after the server accepted it, sends it again next time (at least once).
    AutomationRun.objects.filter(pk=run.pk, emailed_at__isnull=True).update(emailed_at=timezone.now())
    logger.info("automation_email_sent", extra={"run_id": str(run.pk), "recipients": len(recipients)})


def _toast(run: AutomationRun) -> dict[str, Any]:
    """The ``notification`` event on ``private-global``: every logged-in user receives it, so it
    carries nothing of the run's (no schedule name, status or counts), only its id to fetch it with."""
    return {
        "type": "info",
        "message": "Une automatisation est terminée",
        "description": "Ouvrez l'exécution pour voir son résultat.",
        "duration": 8000,
        "runId": str(run.pk),
    }


def authorize_run_webhooks(user: Any, run_id: str) -> None:
    """Redelivering a run's webhook needs automation.write."""
    from accounts.permissions import HasGrant

    HasGrant("automation", "write").require(user)


def on_run_webhook_attempt(run_id: str, report: AttemptReport) -> None:
    logger.info(
        "automation_webhook_attempt",
        extra={"run_id": run_id, "status_code": report.status_code, "delivered": report.delivered},
    )


def register() -> None:
    register_webhook_source(WEBHOOK_SOURCE, authorize=authorize_run_webhooks, on_attempt=on_run_webhook_attempt)
