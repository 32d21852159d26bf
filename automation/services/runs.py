"""Automation runs: fetch → transcribe → audit for the fiches a schedule selects, event-driven.

``run_create`` records a run (one per schedule slot: a unique row decides) and its orchestrator runs
after commit. ``run_start`` (the orchestrator) revalidates the range's sales list unless a recent
revalidation makes it pointless (``AUTOMATION_REVALIDATION_COOLDOWN_MS``), selects fiches from the
cache, writes one result row per fiche and hands them to ``fiche_advance``.

A run acts for the schedule's **owner** (``automation.access``), with their grants as they are at
each step: no owner, or a deactivated one, fails the run (nothing fetched); an owner without one of
the grants the run needs at all fails it too, before the range's revalidation (a CRM call). The
selection keeps the fiches in the owner's scope for every key the run uses (a range: filtered in
SQL; manual ids outside it, or not cached for an owner who is not ALL: recorded ``skipped`` with a
reason naming no data). Each fiche is checked again before its details fetch, its transcription
request and its audit requests (a fiche that fell out of scope meanwhile: ``skipped``); the
transcriptions and audits a run asks for are recorded as requested by the owner. ``maxFiches`` may
lower ``AUTOMATION_MAX_FICHES``, never raise it.

``fiche_advance`` is each fiche's state machine, idempotent and serialized per fiche (a Redis lock
plus conditional updates): details fetched and the guardrails applied, then the transcription (the
transcription run's end calls us back: no polling; ``retryFailed`` asks again up to ``maxRetries``),
then one audit per config (each audit's end calls us back). A fiche's terminal outcome goes to the
run's updater (``fiche_done``: the run's Redis lock and row lock), which keeps the counts, publishes
progress, and ends the run exactly once (a conditional update decides); the same update records its
notifications as due (``notify_due_at``), sent by ``automation_notify_run`` after commit. The
reconciler (beat) re-drives what a lost message or a dead worker left behind, ends runs that stopped
progressing, and re-sends notifications due but not sent for ``NOTIFY_GRACE_SECONDS``.

Nothing published on a run's channel (``automation.read``) names a fiche: progress events carry
counts only, and a run's ``error`` names no fiche (a reader sees the fiche rows in their own scope
with ``GET /api/automation/runs/{id}``).
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Max
from django.utils import timezone

from audits.models import TERMINAL_AUDIT_STATUSES, Audit, AuditPurpose, AuditStatus
from automation import access
from automation.fields import schedule_settings
from automation.models import (
    AutomationRun,
    AutomationRunFicheResult,
    AutomationSchedule,
    FicheStatus,
    FicheStep,
    RunStatus,
    Trigger,
)
from core.dispatch import dispatch_on_commit, send
from core.exceptions import ApplicationError, DependencyUnavailable, NotFoundError
from core.formats import iso
from core.limits import LimitBusy
from core.locks import LockNotAcquired, redis_lock
from core.reconcile import Reconciler
from fiches.models import FicheCache, Recording
from realtime.publisher import publish
from transcriptions.models import TERMINAL_RUN_STATUSES as TERMINAL_TX_STATUSES
from transcriptions.models import Priority, Transcription, TranscriptionRun
from transcriptions.models import RunStatus as TxStatus

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("automation.runs")

FICHE_LOCK_SECONDS = 60
RUN_LOCK_SECONDS = 60
# The reconciler re-sends a run's notifications due this long ago and still not sent (the message
# that should have sent them was lost, or its worker died).
NOTIFY_GRACE_SECONDS = 60


# --- Creating a run -------------------------------------------------------------------------------------


def run_create(
    *,
    schedule: AutomationSchedule,
    trigger: str = Trigger.MANUAL,
    slot: datetime | None = None,
    user: User | None = None,
) -> AutomationRun | None:
    """A pending run of ``schedule`` with a snapshot of its settings; its orchestrator runs after
    commit. ``None`` when ``slot`` already has a run (another beat started it)."""
    try:
        with transaction.atomic():
            run = AutomationRun.objects.create(
                schedule=schedule,
                slot=slot,
                trigger=trigger,
                config=schedule_settings(schedule),
                requested_by=user,
                owner_id=schedule.owner_id,
            )
            AutomationSchedule.objects.filter(pk=schedule.pk).update(last_run_at=timezone.now())
    except IntegrityError:
        logger.info("automation_slot_taken", extra={"schedule_id": schedule.pk, "slot": iso(slot)})
        return None
    from automation.tasks import automation_run_start

    run_id = str(run.pk)
    dispatch_on_commit(automation_run_start, run_id)
    logger.info("automation_run_created", extra={"run_id": run_id, "schedule_id": schedule.pk, "trigger": trigger})
    return run


# --- The orchestrator ----------------------------------------------------------------------------------


class RevalidationBusy(Exception):
    """The range's dates are being fetched or the CRM rate is saturated: try again in ``wait`` s."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"revalidation busy, retry in {wait:.1f} s")
        self.wait = wait


def selection_range(selection: dict[str, Any], tz_name: str, now: datetime | None = None) -> tuple[date, date] | None:
    """The sales dates a run covers: ``dateRange`` as given; ``relative``: the ``relativeDays`` days
    before today in the schedule's timezone (today excluded: its sales are not over); ``manual``: None."""
    mode = selection.get("mode")
    if mode == "dateRange":
        return date.fromisoformat(selection["start_date"]), date.fromisoformat(selection["end_date"])
    if mode == "relative":
        today = (now or timezone.now()).astimezone(ZoneInfo(tz_name)).date()
        days = max(1, int(selection.get("relative_days") or 1))
        return today - timedelta(days=days), today - timedelta(days=1)
    return None


def _revalidate(run: AutomationRun, start: date, end: date) -> str:
    """Revalidate the range's sales list unless a revalidation younger than the cooldown covers it."""
    from fiches.clients import crm
    from fiches.services.revalidation import WarmPaused, cache_sales_list

    latest = FicheCache.objects.filter(sales_date__range=(start, end)).aggregate(at=Max("last_revalidated_at"))["at"]
    cooldown = timedelta(milliseconds=settings.AUTOMATION_REVALIDATION_COOLDOWN_MS)
    if latest is not None and timezone.now() - latest < cooldown:
        return "skipped (cooldown)"
    try:
        summary = cache_sales_list(start=start, end=end)
    except WarmPaused as exc:  # mid-way: a re-drive goes on from the chunks not done (a new call here)
        raise RevalidationBusy(exc.retry_after) from None
    except LimitBusy as exc:
        raise RevalidationBusy(exc.retry_after) from None
    except LockNotAcquired:
        raise RevalidationBusy(1.0) from None
    except crm.CrmError as exc:  # go on with what the cache holds
        logger.warning("automation_revalidation_failed", extra={"run_id": str(run.pk), "error": str(exc)})
        return "failed"
    failed = [c for c in summary.chunks if not c.ok]
    return "done" if not failed else f"done ({len(failed)} chunk(s) failed)"


def max_fiches(selection: dict[str, Any]) -> int:
    """``maxFiches`` may lower ``AUTOMATION_MAX_FICHES``, never raise it."""
    cap = int(settings.AUTOMATION_MAX_FICHES)
    asked = selection.get("max_fiches")
    return min(int(asked), cap) if asked else cap


def _select(
    run: AutomationRun, selection: dict[str, Any], start: date | None, end: date | None, owner: User
) -> tuple[list[str], list[str]]:
    """The fiche ids the run takes, in the owner's scope, and (manual selection) the ids named but
    outside it (or not cached, for an owner who is not ALL), at most ``max_fiches`` in all."""
    wanted = access.needs(run.config)
    limit = max_fiches(selection)
    if selection.get("mode") == "manual":
        ids = [str(f).strip() for f in selection.get("fiche_ids") or [] if str(f).strip()]
        ids = list(dict.fromkeys(ids))[:limit]
        allowed = access.ids_in_scope(owner, ids, wanted)
        return [f for f in ids if f in allowed], [f for f in ids if f not in allowed]
    else:
        rows = access.filter_in_scope(FicheCache.objects.filter(sales_date__range=(start, end)), owner, wanted)
        if selection.get("groupes"):
            rows = rows.filter(groupe__in=selection["groupes"])
        if selection.get("only_unaudited"):
            configs = list(run.config.get("audit_config_ids") or [])
            done = Audit.objects.filter(status=AuditStatus.COMPLETED, purpose=AuditPurpose.PRODUCTION)
            if configs:  # audited: a completed audit for every chosen config
                audited = list(
                    done.filter(config_id__in=configs)
                    .values("fiche_id")
                    .annotate(n=Count("config_id", distinct=True))
                    .filter(n=len(set(configs)))
                    .values_list("fiche_id", flat=True)
                )
                rows = rows.exclude(pk__in=audited)
            else:  # no config named: any completed audit counts
                rows = rows.exclude(pk__in=done.values("fiche_id"))
        return list(rows.order_by("sales_date", "fiche_id").values_list("fiche_id", flat=True)[:limit]), []


def _owner(run: AutomationRun) -> User | None:
    """The run's owner as they are now (a fresh row: their grants and ``is_active`` of this moment)."""
    from accounts.models import User

    return User.objects.filter(pk=run.owner_id).first() if run.owner_id is not None else None


def _owner_problem(owner: User | None, config: dict[str, Any]) -> str | None:
    """Why the run cannot act at all for its owner (None: it can)."""
    if owner is None:
        return access.NO_OWNER
    if not owner.is_active:
        return access.OWNER_INACTIVE
    missing = access.missing_grants(owner, access.needs(config))
    if missing:
        return f"the schedule's owner lacks {', '.join(missing)}: no fiche is in its scope"
    return None


@dataclass(frozen=True)
class Started:
    fiche_ids: list[str]
    ended: bool


def run_start(*, run_id: str) -> Started:
    """The orchestrator: revalidate, select, record one result per fiche. Idempotent: a re-drive of a
    run already fanned out returns the fiches still pending."""
    run = AutomationRun.objects.filter(pk=run_id).first()
    if run is None or run.is_terminal:
        return Started([], True)
    if run.dispatched_at is not None:
        return Started(_pending_ids(run), False)
    now = timezone.now()
    if run.started_at is None:
        AutomationRun.objects.filter(pk=run.pk, started_at__isnull=True).update(
            status=RunStatus.RUNNING, started_at=now, last_progress_at=now
        )
        run.refresh_from_db()
        publish(
            "automation.run.started",
            {
                "runId": str(run.pk),
                "scheduleId": run.schedule_id,
                "scheduleName": run.config.get("name"),
                "trigger": run.trigger,
                "status": "running",
                "startedAt": iso(run.started_at),
            },
        )
    config = run.config
    owner = _owner(run)
    problem = _owner_problem(owner, config)
    if problem is not None or owner is None:  # before any CRM call
        with transaction.atomic():
            _end(run, RunStatus.FAILED, error=problem or access.NO_OWNER)
        return Started([], True)
    selection = config.get("fiche_selection") or {}
    try:
        span = selection_range(selection, config.get("timezone") or "Europe/Paris", now=run.slot or run.created_at)
    except (KeyError, ValueError, TypeError) as exc:
        with transaction.atomic():
            _end(run, RunStatus.FAILED, error=f"invalid fiche selection: {exc}")
        return Started([], True)
    start, end = span if span else (None, None)
    revalidation = "not applicable (manual selection)"
    if start is not None and end is not None:
        revalidation = _revalidate(run, start, end)
    fiche_ids, refused = _select(run, selection, start, end, owner)
    with transaction.atomic():
        locked = AutomationRun.objects.select_for_update().get(pk=run.pk)
        if locked.is_terminal or locked.dispatched_at is not None:
            return Started(_pending_ids(locked), locked.is_terminal)
        AutomationRunFicheResult.objects.bulk_create(
            [AutomationRunFicheResult(run=locked, fiche_id=f) for f in fiche_ids]
            + [
                AutomationRunFicheResult(
                    run=locked,
                    fiche_id=f,
                    status=FicheStatus.SKIPPED,
                    step=FicheStep.DONE,
                    reason=access.OUT_OF_SCOPE,
                )
                for f in refused
            ],
            ignore_conflicts=True,
        )
        now = timezone.now()
        locked.date_from, locked.date_to, locked.revalidation = start, end, revalidation
        locked.total_fiches, locked.skipped = len(fiche_ids) + len(refused), len(refused)
        locked.dispatched_at, locked.last_progress_at = now, now
        locked.save(
            update_fields=[
                "date_from",
                "date_to",
                "revalidation",
                "total_fiches",
                "skipped",
                "dispatched_at",
                "last_progress_at",
            ]
        )
    logger.info(
        "automation_run_selected",
        extra={
            "run_id": str(run.pk),
            "fiches": len(fiche_ids),
            "out_of_scope": len(refused),
            "revalidation": revalidation,
        },
    )
    if not fiche_ids:
        _finish_if_done(str(run.pk))
        return Started([], True)
    return Started(fiche_ids, False)


def _pending_ids(run: AutomationRun) -> list[str]:
    return list(
        AutomationRunFicheResult.objects.filter(run=run, status=FicheStatus.PENDING)
        .order_by("id")
        .values_list("fiche_id", flat=True)
    )


# --- One fiche --------------------------------------------------------------------------------------------


class FicheRetry(Exception):
    """A transient failure (CRM down, ...): the fiche's task retries with backoff."""


def fiche_advance(*, run_id: str, fiche_id: str) -> str:
    """Take the fiche one step further if it can go; returns what happened. Serialized per fiche (a
    Redis lock, waited for) and fenced by conditional updates: duplicates and re-drives are no-ops."""
    try:
        with redis_lock(f"automation-fiche:{run_id}:{fiche_id}", timeout=FICHE_LOCK_SECONDS, wait=10.0):
            return _advance(run_id, fiche_id)
    except LockNotAcquired:
        raise FicheRetry("another worker is advancing this fiche") from None


def _result(run_id: str, fiche_id: str) -> AutomationRunFicheResult | None:
    return (
        AutomationRunFicheResult.objects.select_related("run")
        .filter(run_id=uuid.UUID(run_id), fiche_id=fiche_id, status=FicheStatus.PENDING)
        .first()
    )


def _advance(run_id: str, fiche_id: str) -> str:
    result = _result(run_id, fiche_id)
    if result is None:
        return "ended"
    run = result.run
    if run.is_terminal:
        return "run ended"
    owner = _owner(run)
    if owner is None or not owner.is_active:
        error = access.NO_OWNER if owner is None else "the schedule's owner was deactivated during the run"
        run_fail_now(run_id=run_id, error=error)
        return "failed"
    if run.dispatch_stopped and result.step in (FicheStep.SELECTED, FicheStep.FETCH):
        fiche_done(run_id=run_id, fiche_id=fiche_id, status=FicheStatus.SKIPPED, reason="stopped after a failure")
        return "skipped"
    if result.step in (FicheStep.SELECTED, FicheStep.FETCH):
        return _fetch_and_filter(result)
    if result.step == FicheStep.TRANSCRIPTION:
        return _after_transcription(result)
    if result.step == FicheStep.AUDIT:
        return _after_audits(result)
    return "nothing to do"


def _out_of_scope(result: AutomationRunFicheResult, fiche: FicheCache | None, owner: User | None) -> bool:
    """The fiche (None: not cached) is outside the owner's scope (``owner`` as just loaded: their
    grants of this moment, for every key the run uses): it is recorded ``skipped`` with a reason that
    names no data, and True."""
    if access.fiche_in_scope(owner, fiche, access.needs(result.run.config)):
        return False
    logger.info("automation_fiche_out_of_scope", extra={"run_id": str(result.run_id), "fiche_id": result.fiche_id})
    fiche_done(
        run_id=str(result.run_id), fiche_id=result.fiche_id, status=FicheStatus.SKIPPED, reason=access.OUT_OF_SCOPE
    )
    return True


def _fetch_and_filter(result: AutomationRunFicheResult) -> str:
    from fiches.exceptions import FicheNotFound
    from fiches.services.access import fiche_with_details

    run_id, fiche_id, config = str(result.run_id), result.fiche_id, result.run.config
    AutomationRunFicheResult.objects.filter(pk=result.pk, step=FicheStep.SELECTED).update(step=FicheStep.FETCH)
    owner = _owner(result.run)
    if _out_of_scope(result, FicheCache.objects.filter(fiche_id=fiche_id).first(), owner):  # before the CRM
        return "skipped"
    try:
        fiche = fiche_with_details(fiche_id=fiche_id)
    except FicheNotFound:
        fiche_done(run_id=run_id, fiche_id=fiche_id, status=FicheStatus.FAILED, error="fiche not found in the CRM")
        return "failed"
    except DependencyUnavailable as exc:
        raise FicheRetry(exc.message) from None
    except ApplicationError as exc:
        fiche_done(run_id=run_id, fiche_id=fiche_id, status=FicheStatus.FAILED, error=exc.message)
        return "failed"
    if _out_of_scope(result, fiche, owner):  # its details may have moved it (another group or seller)
        return "skipped"
    selection = config.get("fiche_selection") or {}
    recordings = Recording.objects.filter(fiche=fiche).count()
    AutomationRunFicheResult.objects.filter(pk=result.pk).update(recordings_count=recordings)
    if selection.get("only_with_recordings", True) and recordings == 0:
        fiche_done(run_id=run_id, fiche_id=fiche_id, status=FicheStatus.IGNORED, reason="no recordings")
        return "ignored"
    cap = selection.get("max_recordings_per_fiche") or settings.AUTOMATION_MAX_RECORDINGS_PER_FICHE
    if cap and recordings > int(cap):
        reason = f"{recordings} recordings, more than the limit of {int(cap)}"
        fiche_done(run_id=run_id, fiche_id=fiche_id, status=FicheStatus.IGNORED, reason=reason)
        return "ignored"
    if config.get("run_transcription", True) and recordings:
        return _transcribe(result, fiche)
    return _start_audits(result, fiche)


def _all_transcribed(fiche: FicheCache) -> bool:
    recordings = Recording.objects.filter(fiche=fiche).count()
    done = Transcription.objects.filter(fiche=fiche, transcribed_at__isnull=False).count()
    return recordings > 0 and done >= recordings


def _transcribe(result: AutomationRunFicheResult, fiche: FicheCache) -> str:
    from transcriptions.services.runs import transcription_request

    config = result.run.config
    if config.get("skip_if_transcribed", True) and _all_transcribed(fiche):
        return _start_audits(result, fiche, note="already transcribed")
    owner = _owner(result.run)
    if _out_of_scope(result, fiche, owner):
        return "skipped"
    asked = transcription_request(fiche=fiche, priority=Priority.LOW, user=owner)
    if asked.run_id is None:  # nothing left to transcribe
        return _start_audits(result, fiche)
    moved = AutomationRunFicheResult.objects.filter(
        pk=result.pk, status=FicheStatus.PENDING, step__in=[FicheStep.FETCH, FicheStep.TRANSCRIPTION]
    ).update(
        step=FicheStep.TRANSCRIPTION,
        transcription_run_id=asked.run_id,
        transcription_attempts=result.transcription_attempts + 1,
    )
    if not moved:
        return "ended"
    _progress(result.run_id)
    result.refresh_from_db()
    return _after_transcription(result)  # the run may have ended already (its hook found no one then)


def _after_transcription(result: AutomationRunFicheResult) -> str:
    tx = (
        TranscriptionRun.objects.filter(pk=result.transcription_run_id).first() if result.transcription_run_id else None
    )
    if tx is not None and tx.status not in TERMINAL_TX_STATUSES:
        return "waiting for the transcription"
    config, run_id, fiche_id = result.run.config, str(result.run_id), result.fiche_id
    fiche = FicheCache.objects.get(fiche_id=fiche_id)
    ok = tx is not None and tx.status == TxStatus.COMPLETED
    if not ok:
        retries_left = config.get("retry_failed") and result.transcription_attempts <= int(
            config.get("max_retries") or 0
        )
        if retries_left:
            logger.info(
                "automation_transcription_retry",
                extra={"run_id": run_id, "fiche_id": fiche_id, "attempt": result.transcription_attempts + 1},
            )
            return _transcribe(result, fiche)
        if tx is None or tx.status == TxStatus.FAILED:
            error = (tx.error if tx is not None else None) or "transcription failed"
            fiche_done(run_id=run_id, fiche_id=fiche_id, status=FicheStatus.FAILED, error=f"transcription: {error}")
            return "failed"
        # partial: go on with the recordings that were transcribed
    return _start_audits(result, fiche)


def _start_audits(result: AutomationRunFicheResult, fiche: FicheCache, note: str | None = None) -> str:
    from audits.services.batch import config_for_fiche
    from audits.services.request import audit_request

    config, run_id, fiche_id = result.run.config, str(result.run_id), result.fiche_id
    if not config.get("run_audits", True):
        fiche_done(run_id=run_id, fiche_id=fiche_id, status=FicheStatus.SUCCESSFUL, reason=note)
        return "successful"
    config_ids = list(config.get("audit_config_ids") or [])
    owner = _owner(result.run)
    if _out_of_scope(result, fiche, owner):
        return "skipped"
    try:
        if not config_ids:
            config_ids = [config_for_fiche(fiche, None)]
        with transaction.atomic():
            moved = AutomationRunFicheResult.objects.filter(
                pk=result.pk, status=FicheStatus.PENDING, step__in=[FicheStep.FETCH, FicheStep.TRANSCRIPTION]
            ).update(step=FicheStep.AUDIT)
            if not moved:
                return "ended"
            tools_mode = bool((config.get("fiche_selection") or {}).get("use_rlm"))  # the API's useRlm
            audits = [audit_request(fiche=fiche, config_id=c, tools_mode=tools_mode, user=owner) for c in config_ids]
            AutomationRunFicheResult.objects.filter(pk=result.pk).update(audit_ids=[str(a.pk) for a in audits])
    except ApplicationError as exc:
        fiche_done(run_id=run_id, fiche_id=fiche_id, status=FicheStatus.FAILED, error=f"audit: {exc.message}")
        return "failed"
    _progress(result.run_id)
    result.refresh_from_db()
    return _after_audits(result)  # they may have ended already


def _after_audits(result: AutomationRunFicheResult) -> str:
    audits = list(Audit.objects.filter(pk__in=result.audit_ids).values_list("status", "error"))
    if len(audits) < len(result.audit_ids) or any(s not in TERMINAL_AUDIT_STATUSES for s, _ in audits):
        return "waiting for the audits"
    errors = [e or "failed" for s, e in audits if s != AuditStatus.COMPLETED]
    run_id, fiche_id = str(result.run_id), result.fiche_id
    if errors:
        fiche_done(run_id=run_id, fiche_id=fiche_id, status=FicheStatus.FAILED, error="audit: " + "; ".join(errors))
        return "failed"
    fiche_done(run_id=run_id, fiche_id=fiche_id, status=FicheStatus.SUCCESSFUL)
    return "successful"


# --- What ends elsewhere calls us back ----------------------------------------------------------------


def on_transcription_finished(run: TranscriptionRun) -> None:
    """Transcription run-finished hook: the automation fiches waiting on it go on."""
    waiting = AutomationRunFicheResult.objects.filter(
        transcription_run_id=run.pk, status=FicheStatus.PENDING, step=FicheStep.TRANSCRIPTION
    ).values_list("run_id", "fiche_id")
    for automation_run_id, fiche_id in waiting:
        _advance_later(str(automation_run_id), fiche_id)


def on_audit_finished(audit: Audit) -> None:
    """Audit-finished hook: the automation fiche whose audits these are may be done."""
    waiting = AutomationRunFicheResult.objects.filter(
        audit_ids__contains=[str(audit.pk)], status=FicheStatus.PENDING, step=FicheStep.AUDIT
    ).values_list("run_id", "fiche_id")
    for automation_run_id, fiche_id in waiting:
        _advance_later(str(automation_run_id), fiche_id)


def _advance_later(run_id: str, fiche_id: str) -> None:
    """Take the fiche on at once, here (after a transcription or audit, the next step makes no CRM call):
    no queue hop behind other work. Busy or failing, it becomes a task (the reconciler is the net)."""
    from automation.tasks import automation_fiche_advance

    try:
        fiche_advance(run_id=run_id, fiche_id=fiche_id)
    except Exception:
        logger.warning("automation_advance_deferred", extra={"run_id": run_id, "fiche_id": fiche_id}, exc_info=True)
        send(automation_fiche_advance, run_id, fiche_id)


# --- The run's updater --------------------------------------------------------------------------------------


def fiche_done(*, run_id: str, fiche_id: str, status: str, reason: str | None = None, error: str | None = None) -> bool:
    """A fiche's terminal outcome, once (the result row's conditional update decides), counted by the
    run's updater (its Redis lock, waited for, and its row lock); ends the run when nothing is left.
    ``continueOnError=false``: the first failure ends the run ``failed`` and skips the fiches left."""
    try:
        with redis_lock(f"automation-run:{run_id}", timeout=RUN_LOCK_SECONDS, wait=15.0):
            return _fiche_done(run_id, fiche_id, status, reason, error)
    except LockNotAcquired:
        raise FicheRetry("the run's updater is busy") from None


_COUNTERS = {
    FicheStatus.SUCCESSFUL: "successful",
    FicheStatus.FAILED: "failed",
    FicheStatus.IGNORED: "ignored",
    FicheStatus.SKIPPED: "skipped",
}


def _fiche_done(run_id: str, fiche_id: str, status: str, reason: str | None, error: str | None) -> bool:
    with transaction.atomic():
        run = AutomationRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return False
        updated = AutomationRunFicheResult.objects.filter(
            run=run, fiche_id=fiche_id, status=FicheStatus.PENDING
        ).update(status=status, step=FicheStep.DONE, reason=reason, error=(error or "")[:2000] or None)
        if not updated or run.is_terminal:
            return False
        counter = _COUNTERS[FicheStatus(status)]
        setattr(run, counter, getattr(run, counter) + 1)
        run.last_progress_at = timezone.now()
        run.save(update_fields=[counter, "last_progress_at"])
        publish("automation.run.progress", _progress_payload(run))
        logger.info("automation_fiche_done", extra={"run_id": run_id, "fiche_id": fiche_id, "status": status})
        if status == FicheStatus.FAILED and not run.config.get("continue_on_error", True):
            _stop_after_failure(run)
            return True
        if run.dispatched_at is not None and run.done >= run.total_fiches:
            _end(run, _final_status(run))
    return True


def _final_status(run: AutomationRun) -> str:
    if not run.failed:
        return RunStatus.COMPLETED
    return RunStatus.PARTIAL if run.successful else RunStatus.FAILED


def _stop_after_failure(run: AutomationRun) -> None:
    left = AutomationRunFicheResult.objects.filter(run=run, status=FicheStatus.PENDING)
    skipped = left.update(status=FicheStatus.SKIPPED, step=FicheStep.DONE, reason="stopped after a failure")
    run.skipped += skipped
    run.dispatch_stopped = True
    run.save(update_fields=["skipped", "dispatch_stopped"])
    # The run's error names no fiche (every automation.read holder reads it): the fiche's row has it.
    _end(run, RunStatus.FAILED, error="stopped after a fiche failed (continueOnError=false)")


def _progress_payload(run: AutomationRun) -> dict[str, Any]:
    """Counts only: the run's channel is open to every automation.read holder, whatever their fiches
    scope, so no fiche id goes there."""
    total = run.total_fiches
    payload = {
        "runId": str(run.pk),
        "scheduleId": run.schedule_id,
        "status": run.status,
        "totalFiches": total,
        "successful": run.successful,
        "failed": run.failed,
        "ignored": run.ignored,
        "skipped": run.skipped,
        "progress": math.floor(run.done / total * 100) if total else 100,
    }
    return payload


def _progress(run_pk: Any) -> None:
    AutomationRun.objects.filter(pk=run_pk).update(last_progress_at=timezone.now())


def _finish_if_done(run_id: str) -> bool:
    with transaction.atomic():
        run = AutomationRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.is_terminal or run.dispatched_at is None or run.done < run.total_fiches:
            return False
        return _end(run, _final_status(run))


def _end(run: AutomationRun, status: str, *, error: str | None = None) -> bool:
    """End the run, once (the conditional update decides). The same update records its notifications
    (domain signals, webhook, email, toast) as due; ``automation_notify_run`` sends them after commit,
    and the reconciler again if that message is lost. Call it inside the transaction that ends the run."""
    now = timezone.now()
    if not AutomationRun.end_once(run.pk, status, now=now, error=error, notify_due_at=now):
        return False
    run.refresh_from_db()
    started = run.started_at or run.created_at
    payload = {
        **_progress_payload(run),
        "status": status,
        "startedAt": iso(run.started_at),
        "completedAt": iso(now),
        "durationMs": int((now - started).total_seconds() * 1000),
    }
    if status == RunStatus.FAILED:
        publish("automation.run.failed", {**payload, "error": error or "some fiches failed"})
    else:
        publish("automation.run.completed", payload)
    logger.info("automation_run_ended", extra={"run_id": str(run.pk), "status": status, "error": error})
    from automation.tasks import automation_notify_run

    dispatch_on_commit(automation_notify_run, str(run.pk))
    return True


def run_fail_now(*, run_id: str, error: str) -> bool:
    with transaction.atomic():
        run = AutomationRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.is_terminal:
            return False
        left = AutomationRunFicheResult.objects.filter(run=run, status=FicheStatus.PENDING)
        failed = left.update(status=FicheStatus.FAILED, step=FicheStep.DONE, error=error)
        run.failed += failed
        run.save(update_fields=["failed"])
        return _end(run, RunStatus.FAILED, error=error)


# --- The reconciler -----------------------------------------------------------------------------------


def _time_out(run: AutomationRun) -> bool:
    return run_fail_now(run_id=str(run.pk), error="timed out (no progress)")


def _waits_for_budget(run: AutomationRun, now: datetime, actions: dict[str, list[str]]) -> bool:
    """A run whose pending fiches' audits or transcription runs wait for the daily budget waits as long: neither
    re-driven nor timed out meanwhile (its work is resumed by its own reconcilers, and reports back here)."""
    pending = AutomationRunFicheResult.objects.filter(run=run, status=FicheStatus.PENDING)
    audit_ids = [a for ids in pending.values_list("audit_ids", flat=True) for a in ids]
    if audit_ids and Audit.objects.filter(pk__in=audit_ids, status=AuditStatus.WAITING_BUDGET).exists():
        return True
    tx_runs = pending.exclude(transcription_run_id=None).values("transcription_run_id")
    return TranscriptionRun.objects.filter(pk__in=tx_runs, waiting_budget_since__isnull=False).exists()


RECONCILER: Reconciler[AutomationRun] = Reconciler(
    name="automation",
    stall_seconds=lambda: settings.AUTOMATION_STALL_SECONDS,
    deadline_seconds=lambda: settings.AUTOMATION_DEADLINE_SECONDS,
    progressed_at=lambda run: run.last_progress_at or run.created_at,
    special=_waits_for_budget,
    time_out=_time_out,
    is_done=lambda run: run.dispatched_at is not None and run.done >= run.total_fiches,
    finish=lambda run: _finish_if_done(str(run.pk)),
    mark_redriven=lambda run, now: AutomationRun.objects.filter(pk=run.pk).update(redriven_at=now),
    names={"finished": "ended"},
)


def run_reconcile(*, now: datetime | None = None) -> dict[str, list[str]]:
    """Every run ends (beat, on the kernel's ``Reconciler``): a run never started or without progress for
    ``AUTOMATION_STALL_SECONDS`` is re-driven (its orchestrator again: ``restart``, or each pending
    fiche's next step: ``advance``); one without progress for ``AUTOMATION_DEADLINE_SECONDS`` ends
    ``failed`` with its pending fiches failed ("timed out"), unless its work waits for the daily budget.
    Every ended run is notified: ``notify`` lists the runs whose notifications were due more than
    ``NOTIFY_GRACE_SECONDS`` ago and are still not sent (at least once: see ``automation.notifications``)."""
    now = now or timezone.now()
    active = {
        str(run.pk): run for run in AutomationRun.objects.filter(status__in=[RunStatus.PENDING, RunStatus.RUNNING])
    }
    found = RECONCILER.run(active.values(), now=now)
    actions: dict[str, list[str]] = {
        "restart": [],
        "advance": [],
        "ended": found["ended"],
        "timed_out": found["timed_out"],
    }
    for run_id in found["redrive"]:
        run = active[run_id]
        if run.dispatched_at is None:
            actions["restart"].append(run_id)
        else:
            actions["advance"].extend(f"{run_id}:{f}" for f in _pending_ids(run))
    unsent = (
        AutomationRun.objects.filter(
            notified_at__isnull=True, notify_due_at__lt=now - timedelta(seconds=NOTIFY_GRACE_SECONDS)
        )
        .order_by("notify_due_at")
        .values_list("pk", flat=True)[:500]
    )
    actions["notify"] = [str(pk) for pk in unsent]
    if actions["notify"]:
        logger.warning("automation_notifications_resent", extra={"runs": len(actions["notify"])})
    return actions


def run_for_id(run_id: object) -> AutomationRun:
    run = AutomationRun.objects.filter(pk=str(run_id)).first() if _is_uuid(run_id) else None
    if run is None:
        raise NotFoundError(f"No automation run {run_id}.", code="run_not_found", details={"run_id": str(run_id)})
    return run


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
