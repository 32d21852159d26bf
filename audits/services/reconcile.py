"""The audits' reconciler (beat, every minute): every audit ends, and a dead worker's steps come back
within a lease.

On the kernel's ``Reconciler`` (``core.reconcile``): an audit waiting for its transcripts longer than
``AUDIT_TRANSCRIPTION_WAIT_SECONDS`` fails (not while its transcription waits for the daily speech-to-text
budget), and one whose transcription ended but whose resume was lost is re-driven; one waiting for the daily
LLM budget (``waiting_budget``) waits without a deadline and is re-driven once the budget allows; no
progress for ``AUDIT_DEADLINE_SECONDS`` → failed; every step ended → ended; no progress for
``AUDIT_STALL_SECONDS`` since its last progress or re-drive (or never dispatched) → re-driven.
Besides, the steps a dead worker took with it are sent again at once (``steps``), without waiting for
the audit's stall: a step whose claim's lease (``CLAIM_LEASE_SECONDS``, renewed by its worker's
heartbeat) ran out, and the steps still to do of an audit idle for a lease whose messages can only
have been lost (``core.reconcile.units_may_be_lost``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from audits.models import TERMINAL_AUDIT_STATUSES, Audit, AuditStatus, AuditStepResult, StepStatus
from audits.services.finish import audit_step_settled, fail
from audits.services.prepare import positions_left
from core.leases import lease_seconds
from core.reconcile import Reconciler, units_may_be_lost
from costs import budgets
from llm.slots import llm_semaphore
from transcriptions.models import TERMINAL_RUN_STATUSES, TranscriptionRun

logger = logging.getLogger("audits.reconcile")


def _waiting_budget(audit: Audit, actions: dict[str, list[str]]) -> bool:
    """An audit waiting for the daily LLM budget never times out: re-driven once the budget (global or its
    requester's) allows again (e.g. the next day), failed with the reason if the mode became ``refuse``."""
    verdict, state = budgets.new_work("llm", audit.requested_by)
    if state is None:
        actions["redrive"].append(str(audit.pk))
    elif verdict == "refuse" and fail(audit, state.reason(), phase="preparation"):
        actions["failed"].append(str(audit.pk))
    return True


def _waiting(audit: Audit, now: datetime, actions: dict[str, list[str]]) -> bool:
    """An audit waiting for its fiche's transcripts: failed past the wait limit (unless its transcription waits
    for the daily speech-to-text budget: then it waits as long), re-driven when its transcription ended but the
    resume was lost; otherwise it just waits. An audit waiting for the daily LLM budget: ``_waiting_budget``."""
    if audit.status == AuditStatus.WAITING_BUDGET:
        return _waiting_budget(audit, actions)
    if audit.status != AuditStatus.WAITING_TRANSCRIPTION:
        return False
    audit_id = str(audit.pk)
    wait_limit = timedelta(seconds=settings.AUDIT_TRANSCRIPTION_WAIT_SECONDS)
    runs = TranscriptionRun.objects.filter(fiche=audit.fiche).exclude(status__in=TERMINAL_RUN_STATUSES)
    if runs.filter(waiting_budget_since__isnull=False).exists():
        return True  # its transcription waits for the speech-to-text budget: so does the audit, without a limit
    if audit.waiting_since and now - audit.waiting_since > wait_limit:
        if fail(audit, "the fiche's transcription did not finish in time", phase="transcription"):
            actions["failed"].append(audit_id)
        return True
    if not runs.exists():
        actions["redrive"].append(audit_id)  # its transcription ended but the resume was lost
    return True


def _time_out(audit: Audit) -> bool:
    return fail(audit, "timed out (no progress)", phase="analysis" if audit.dispatched_at else "preparation")


RECONCILER: Reconciler[Audit] = Reconciler(
    name="audits",
    stall_seconds=lambda: settings.AUDIT_STALL_SECONDS,
    deadline_seconds=lambda: settings.AUDIT_DEADLINE_SECONDS,
    progressed_at=lambda audit: audit.last_progress_at or audit.created_at,
    special=_waiting,
    time_out=_time_out,
    is_done=lambda audit: audit.dispatched_at is not None and not positions_left(audit),
    finish=lambda audit: audit_step_settled(audit_id=str(audit.pk)),
    mark_redriven=lambda audit, now: Audit.objects.filter(pk=audit.pk).update(redriven_at=now),
    names={"finished": "ended", "timed_out": "failed"},
)


def steps_to_resend(*, now: datetime | None = None) -> list[tuple[str, int]]:
    """``(audit_id, position)`` of the steps a dead worker took with it: running steps whose claim's lease
    ran out (a live worker renews it every heartbeat), and the pending steps of a running audit without
    progress for a lease, none of whose steps is held, when their messages can only have been lost (an
    LLM slot is free and the ``llm`` queue is empty). Sending a step again is safe: its claim decides."""
    stale = (now or timezone.now()) - timedelta(seconds=lease_seconds())
    running = AuditStepResult.objects.filter(audit__status=AuditStatus.RUNNING)
    expired = running.filter(status=StepStatus.RUNNING, claimed_at__lt=stale).values_list("audit_id", "position")
    units = [(str(audit_id), position) for audit_id, position in expired]
    held = running.filter(status=StepStatus.RUNNING, claimed_at__gte=stale).values("audit_id")
    idle = Audit.objects.filter(
        status=AuditStatus.RUNNING, dispatched_at__isnull=False, last_progress_at__lt=stale
    ).exclude(pk__in=held)
    if idle.exists():
        semaphore = llm_semaphore()
        if units_may_be_lost(queue="llm", free_slots=semaphore.limit - len(semaphore.holders())):
            pending = running.filter(audit__in=idle, status=StepStatus.PENDING).values_list("audit_id", "position")
            units += [(str(audit_id), position) for audit_id, position in pending]
    return units


def audit_reconcile(*, now: datetime | None = None) -> dict[str, list[str]]:
    """Every audit ends (see the module); ``steps``: the steps of dead workers to send again."""
    now = now or timezone.now()
    unfinished = Audit.objects.exclude(status__in=TERMINAL_AUDIT_STATUSES).select_related("fiche", "requested_by")
    actions = RECONCILER.run(unfinished, now=now)
    redriven = set(actions["redrive"])  # their orchestrator sends every step left again
    actions["steps"] = [
        f"{audit_id}:{position}" for audit_id, position in steps_to_resend(now=now) if audit_id not in redriven
    ]
    return actions
