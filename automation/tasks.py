"""Celery tasks of automation: thin wrappers that re-load by id and call one service.

``automation_fiche_advance`` may call the CRM (a fiche's details): it runs on the ``crm`` queue.
``automation_notify_run`` talks to an SMTP server (seconds): it runs on the ``webhooks`` queue (the
I/O pool of outgoing notifications).
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import shared_task

from automation.services import runs
from core.dispatch import send
from core.retry import (
    INFRA_RETRY,
    TRANSIENT_INFRA_ERRORS,
    error_budget_left,
    retry_after_error,
    retry_waiting,
)

logger = logging.getLogger("automation.tasks")

FICHE_MAX_ERRORS = 5
RETRIABLE: tuple[type[Exception], ...] = (runs.FicheRetry, *TRANSIENT_INFRA_ERRORS)


@shared_task(bind=True, name="automation.tasks.automation_run_start", ignore_result=True, **INFRA_RETRY)
def automation_run_start(self: Any, run_id: str) -> int:
    """Orchestrator: revalidate, select, then one ``automation_fiche_advance`` per fiche (task ids
    derived from the run and the fiche, so a retried orchestrator sends the same ones)."""
    try:
        started = runs.run_start(run_id=run_id)
    except runs.RevalidationBusy as exc:
        raise retry_waiting(self, countdown=exc.wait + random.uniform(0, 0.5)) from None
    with automation_fiche_advance.app.producer_or_acquire() as producer:  # one broker connection
        for fiche_id in started.fiche_ids:
            automation_fiche_advance.apply_async(
                args=(run_id, fiche_id), task_id=f"automation-{run_id}-{fiche_id}", producer=producer
            )
    return len(started.fiche_ids)


@shared_task(bind=True, name="automation.tasks.crm.automation_fiche_advance", ignore_result=True)
def automation_fiche_advance(self: Any, run_id: str, fiche_id: str, error_attempts: int = 0) -> str:
    """One fiche one step further (its details, the guardrails, its transcription, its audits, its
    outcome). Transient failures retry with backoff; after ``FICHE_MAX_ERRORS`` the fiche fails."""
    try:
        return runs.fiche_advance(run_id=run_id, fiche_id=fiche_id)
    except RETRIABLE as exc:
        if error_budget_left(self, max_errors=FICHE_MAX_ERRORS):
            raise retry_after_error(self, exc, base=1.0, cap=30.0) from None
        logger.error("automation_fiche_gave_up", extra={"run_id": run_id, "fiche_id": fiche_id, "error": str(exc)})
        try:
            runs.fiche_done(run_id=run_id, fiche_id=fiche_id, status="failed", error=f"gave up: {exc}")
        except runs.FicheRetry:
            pass  # the reconciler re-drives it
        return "failed"


@shared_task(
    name="automation.tasks.webhooks.automation_notify_run",  # routed to the webhooks queue (settings)
    ignore_result=True,
    **INFRA_RETRY,
)
def automation_notify_run(run_id: str) -> str:
    """A run's end told the world (signals, webhook, email, toast), at least once; a no-op once done."""
    from automation.notifications import run_notify

    return run_notify(run_id=run_id)


@shared_task(name="automation.tasks.automation_tick", ignore_result=True)
def automation_tick() -> list[str]:
    """Beat (every minute): start the runs of the schedules whose slot has come."""
    from automation.services.scheduler import tick

    return tick()


@shared_task(name="automation.tasks.reconcile_automation_runs", ignore_result=True)
def reconcile_automation_runs() -> dict[str, list[str]]:
    """Beat (every minute): every run ends, and every ended run is notified."""
    actions = runs.run_reconcile()
    for run_id in actions["restart"]:
        send(automation_run_start, run_id)
    for key in actions["advance"]:
        run_id, fiche_id = key.split(":", 1)
        send(automation_fiche_advance, run_id, fiche_id)
    for run_id in actions["notify"]:
        send(automation_notify_run, run_id)
    return actions
