"""What a run's end tells the world, once (``AutomationRun.notified_at`` decides): the domain signals,
and per the schedule's ``notifyOnComplete`` / ``notifyOnError``, a signed Standard Webhooks POST
(recorded as a delivery with its attempts by ``realtime``), an email through Django's SMTP backend
when ``SMTP_HOST`` is set (else logged and skipped), and a ``notification`` Pusher event."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from automation.models import AutomationRun, AutomationSchedule, RunStatus
from automation.signals import automation_completed, automation_failed
from realtime.publisher import publish
from realtime.registry import AttemptReport, register_webhook_source
from realtime.webhooks import webhook_send

logger = logging.getLogger("automation.notifications")

WEBHOOK_SOURCE = "automation"


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
        return bool(config.get("notifyOnComplete"))
    if run.status == RunStatus.FAILED:
        return bool(config.get("notifyOnError"))
    return bool(config.get("notifyOnComplete") or config.get("notifyOnError"))  # partial


def run_ended(run_id: str) -> None:
    """After the commit that ended a run: signals, then the notifications it asked for (once)."""
    claimed = AutomationRun.objects.filter(pk=run_id, notified_at__isnull=True).update(notified_at=timezone.now())
    if not claimed:
        return
    run = AutomationRun.objects.select_related("schedule").get(pk=run_id)
    signal = automation_failed if run.status == RunStatus.FAILED else automation_completed
    for receiver, response in signal.send_robust(sender=AutomationRun, run=run):
        if isinstance(response, Exception):
            logger.error("automation_signal_receiver_failed", extra={"run_id": run_id, "receiver": repr(receiver)})
    if not _wanted(run):
        return
    summary = run_summary(run)
    _send_webhook(run, summary)
    _send_email(run, summary)
    publish("notification", _toast(run))


def _send_webhook(run: AutomationRun, summary: dict[str, Any]) -> None:
    schedule: AutomationSchedule | None = run.schedule
    url = (schedule.webhook_url if schedule else None) or run.config.get("webhookUrl")
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
    )


def _send_email(run: AutomationRun, summary: dict[str, Any]) -> None:
    recipients = [e for e in run.config.get("notifyEmails") or [] if e]
    if not recipients:
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
    try:
        send_mail(subject, "\n".join(lines), settings.DEFAULT_FROM_EMAIL, recipients)
        logger.info("automation_email_sent", extra={"run_id": str(run.pk), "recipients": len(recipients)})
    except Exception as exc:  # an unreachable SMTP server must not undo the run's end
        logger.error("automation_email_failed", extra={"run_id": str(run.pk), "error": str(exc)})


def _toast(run: AutomationRun) -> dict[str, Any]:
    name = run.config.get("name") or "Automatisation"
    kind = {RunStatus.COMPLETED: "success", RunStatus.PARTIAL: "warning"}.get(RunStatus(run.status), "error")
    return {
        "type": kind,
        "message": f"{name} : exécution {run.status}",
        "description": f"{run.successful} réussie(s), {run.failed} en échec, {run.ignored} ignorée(s) "
        f"sur {run.total_fiches} fiche(s).",
        "duration": 8000,
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
