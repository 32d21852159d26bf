"""The audit's orchestrator: everything before the LLM — the config, the fiche, its transcripts (asked
for and waited for without polling: the transcription run's end resumes the audit), the timeline — then
the steps to fan out."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from audits import events
from audits.models import (
    TERMINAL_AUDIT_STATUSES,
    Audit,
    AuditStatus,
    AuditStepResult,
    StepStatus,
)
from audits.services.configs import steps_of
from audits.services.finish import fail
from audits.services.steps import steps_count
from core.dispatch import send
from core.exceptions import ApplicationError
from costs import budgets
from fiches.models import Recording
from fiches.services.access import fiche_with_details
from realtime.publisher import publish, publish_many
from transcriptions.models import TERMINAL_RUN_STATUSES, Transcription, TranscriptionRun
from transcriptions.selectors import llm_timeline_for
from transcriptions.services.runs import transcription_request

logger = logging.getLogger("audits.prepare")


# --- Prerequisites (the orchestrator) ----------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    state: str  # "analyze", "waiting", "ended"
    positions: list[int]


def audit_prepare(*, audit_id: str) -> Prepared:
    """Everything before the LLM: config, fiche, transcripts (triggered and waited for when
    missing), timeline; then the step results to analyze. Idempotent: a re-drive returns the steps
    still to do."""
    audit = (
        Audit.objects.select_related("fiche", "config", "config_version", "requested_by").filter(pk=audit_id).first()
    )
    if audit is None or audit.is_terminal:
        return Prepared("ended", [])
    fiche = audit.fiche
    fiche_id = fiche.fiche_id
    total_steps = steps_count(audit)
    if audit.dispatched_at is not None:  # steps already fanned out: re-drive what is left
        return Prepared("analyze", positions_left(audit))
    first = audit.started_at is None
    if first:
        now = timezone.now()
        Audit.objects.filter(pk=audit.pk, started_at__isnull=True).update(started_at=now, last_progress_at=now)
        audit.started_at = now
        publish_many(
            [
                events.started(audit, total_steps=total_steps, at=now),
                events.config_loaded(audit, total_steps=total_steps),
            ]
        )
        from_cache = fiche.details_fetched_at is not None
        publish(*events.fiche_fetch_started(fiche_id, from_cache=from_cache))
        try:
            fiche = fiche_with_details(fiche_id=fiche_id)
        except ApplicationError as exc:
            fail(audit, f"fiche details unavailable: {exc.message}", phase="fiche_fetch")
            return Prepared("ended", [])
        publish(*events.fiche_fetch_completed(fiche, from_cache=from_cache))

    recordings = list(Recording.objects.filter(fiche=fiche).values_list("call_id", flat=True))
    done = set(
        Transcription.objects.filter(fiche=fiche, transcribed_at__isnull=False).values_list("call_id", flat=True)
    )
    missing = [c for c in recordings if c not in done]
    publish(*events.transcription_check(fiche_id, recordings=len(recordings), missing=len(missing)))
    if not recordings:
        fail(audit, "the fiche has no recording to audit", phase="transcription")
        return Prepared("ended", [])
    if missing:
        active = TranscriptionRun.objects.filter(fiche=fiche).exclude(status__in=TERMINAL_RUN_STATUSES).exists()
        if audit.waiting_since is None or active:
            if not active:  # nobody is transcribing them: ask for it
                transcription_request(fiche=fiche, user=audit.requested_by)
            Audit.objects.filter(pk=audit.pk).exclude(status__in=TERMINAL_AUDIT_STATUSES).update(
                status=AuditStatus.WAITING_TRANSCRIPTION,
                waiting_since=audit.waiting_since or timezone.now(),
                last_progress_at=timezone.now(),
            )
            logger.info("audit_waiting_transcription", extra={"audit_id": str(audit.pk), "missing": len(missing)})
            return Prepared("waiting", [])
        if not done:  # the run ended and nothing could be transcribed
            fail(audit, "no recording of the fiche could be transcribed", phase="transcription")
            return Prepared("ended", [])
        # Some recordings failed to transcribe: the audit goes on with the others.

    if _waits_for_budget(audit):
        return Prepared("waiting" if audit.status == AuditStatus.WAITING_BUDGET else "ended", [])

    timeline = llm_timeline_for(fiche)
    publish(*events.timeline_generated(fiche_id, timeline))
    with transaction.atomic():
        locked = Audit.objects.select_for_update().get(pk=audit.pk)
        if locked.is_terminal or locked.dispatched_at is not None:
            return Prepared("analyze" if not locked.is_terminal else "ended", positions_left(locked))
        steps = steps_of(audit.config_version)
        AuditStepResult.objects.bulk_create(
            [AuditStepResult(audit=audit, step=s, position=s.position, max_score=s.weight) for s in steps],
            ignore_conflicts=True,
        )
        now = timezone.now()
        locked.status, locked.dispatched_at, locked.last_progress_at = AuditStatus.RUNNING, now, now
        locked.save(update_fields=["status", "dispatched_at", "last_progress_at"])
        publish(*events.analysis_started(audit, total_steps=len(steps)))
    return Prepared("analyze", positions_left(locked))


def _waits_for_budget(audit: Audit) -> bool:
    """The daily LLM budget (global, or the audit's requester's) gate, before any step is dispatched: the steps
    of a dispatched audit always finish (``costs.budgets``). At the limit, ``wait`` mode: the audit is
    ``waiting_budget`` (the reconciler re-drives it when the budget allows, e.g. the next day; it never times
    out meanwhile); ``refuse`` mode: it fails with the reason. Whether it stopped here (``audit.status`` says
    how)."""
    verdict, state = budgets.new_work("llm", audit.requested_by)
    if state is None:
        return False
    if verdict == "refuse":
        fail(audit, state.reason(), phase="preparation")
        audit.status = AuditStatus.FAILED
        return True
    now = timezone.now()
    waiting = Audit.objects.filter(pk=audit.pk).exclude(status__in=TERMINAL_AUDIT_STATUSES)
    if audit.status != AuditStatus.WAITING_BUDGET:
        waiting.update(status=AuditStatus.WAITING_BUDGET, waiting_since=now, last_progress_at=now)
        logger.info("audit_waiting_budget", extra={"audit_id": str(audit.pk), "scope": state.scope})
    audit.status = AuditStatus.WAITING_BUDGET
    return True


def positions_left(audit: Audit) -> list[int]:
    return list(
        AuditStepResult.objects.filter(audit=audit)
        .exclude(status__in=[StepStatus.COMPLETED, StepStatus.FAILED])
        .order_by("position")
        .values_list("position", flat=True)
    )


def resume_waiting_audits(run: TranscriptionRun) -> None:
    """Run-finished hook: the audits waiting for this fiche's transcripts go on (no polling)."""
    from audits.tasks import audit_run

    waiting = Audit.objects.filter(fiche_id=run.fiche_id, status=AuditStatus.WAITING_TRANSCRIPTION)
    for audit_id in waiting.values_list("pk", flat=True):
        logger.info("audit_resumed", extra={"audit_id": str(audit_id), "run_id": str(run.pk)})
        send(audit_run, str(audit_id))  # a broker down: the reconciler re-drives it
