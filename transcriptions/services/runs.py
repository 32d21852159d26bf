"""Transcription runs on the workflow kernel (``core``): the request, the per-recording work, the
serialized updater and the exactly-once end, and the reconciler.

``transcription_request`` (API or batch) → ``run_dispatch`` (the orchestrator task fans out one
``transcribe_recording`` message per recording) → ``recording_claim`` (the row's claim, a lease the
worker's heartbeat renews) and one vendor call under the global provider limit → the outcome to the
run's inbox (``RUN_INBOX``) → ``run_apply_outcomes`` (under the run's Redis lock and row lock) → the run
ends exactly once (``TrackedRun.end_once``) and tells its finish hooks (``run_finished``).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core.dispatch import dispatch_on_commit
from core.exceptions import ConflictError, DependencyUnavailable, InvalidInput
from core.formats import iso
from core.hooks import FinishHooks
from core.inbox import Inbox
from core.leases import Lease, lease_seconds, new_token
from core.leases import claim_lease as lease_of
from core.limits import Semaphore
from core.reconcile import Reconciler, units_may_be_lost
from costs import budgets
from costs.services import record_stt_usage
from fiches.models import FicheCache, Recording
from fiches.services.access import require_not_erased
from privacy import redaction
from realtime.publisher import publish, publish_many
from transcriptions.clients import elevenlabs
from transcriptions.models import (
    TERMINAL_RUN_STATUSES,
    Priority,
    RunStatus,
    Transcription,
    TranscriptionRun,
    TranscriptionStatus,
)
from transcriptions.timeline import map_speakers

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("transcriptions.runs")

# Told of each run after the commit that ended it (exactly once per run): audits waiting for the fiche's
# transcriptions and automation fiches plug in here (transcriptions imports neither).
run_finished: FinishHooks[TranscriptionRun] = FinishHooks("transcription_run_finished")
on_run_finished = run_finished.register


# --- The request -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRequestResult:
    fiche_id: str
    status: str  # "pending" (a run was queued or is already running), "completed", "no_recordings"
    total_recordings: int
    to_transcribe: int
    run_id: str | None = None
    reused: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "fiche_id": self.fiche_id,
            "status": self.status,
            "total_recordings": self.total_recordings,
            "to_transcribe": self.to_transcribe,
            "run_id": self.run_id,
        }


def require_vendor_configured() -> None:
    """503 ``dependency_unavailable`` naming the setting when the vendor key is missing."""
    if not elevenlabs.normalize_api_key(settings.ELEVENLABS_API_KEY):
        raise DependencyUnavailable(
            "Speech-to-text is not configured: set ELEVENLABS_API_KEY.",
            details={"setting": "ELEVENLABS_API_KEY"},
        )


def transcription_request(
    *,
    fiche: FicheCache,
    priority: str = Priority.NORMAL,
    force: bool = False,
    user: User | None = None,
    batch_id: str | None = None,
) -> RunRequestResult:
    """Start a run for the fiche's recordings that are not transcribed yet (all of them with
    ``force``). One run per fiche at a time: a request while one is active returns it (409 when it
    asks for ``force`` and the active run does not). Nothing to do: ``completed`` or
    ``no_recordings``, nothing queued."""
    if priority not in Priority.values:
        raise InvalidInput(f"priority must be one of {', '.join(Priority.values)}.", details={"priority": priority})
    recordings = list(Recording.objects.filter(fiche=fiche).order_by("started_at", "call_id"))
    total = len(recordings)
    if total == 0:
        return RunRequestResult(fiche.fiche_id, "no_recordings", 0, 0)
    with transaction.atomic():
        with connection.cursor() as cursor:  # one request per fiche at a time decides
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"transcribe:{fiche.pk}"])
        require_not_erased(fiche)  # an erased sale is never transcribed again (privacy)
        active = (
            TranscriptionRun.objects.filter(fiche=fiche)
            .exclude(status__in=TERMINAL_RUN_STATUSES)
            .order_by("-created_at")
            .first()
        )
        if active is not None:
            if force and not active.force:
                raise ConflictError(
                    "A transcription of this fiche is running; force it again once it has ended.",
                    code="transcription_running",
                    details={"run_id": str(active.pk)},
                )
            return RunRequestResult(
                fiche.fiche_id, active.status, total, len(active.call_ids), str(active.pk), reused=True
            )
        done = set(
            Transcription.objects.filter(fiche=fiche, status=TranscriptionStatus.COMPLETED).values_list(
                "call_id", flat=True
            )
        )
        todo = [r for r in recordings if force or r.call_id not in done]
        if not todo:
            return RunRequestResult(fiche.fiche_id, "completed", total, 0)
        run = TranscriptionRun.objects.create(
            fiche=fiche,
            priority=priority,
            force=force,
            total_recordings=total,
            call_ids=[r.call_id for r in todo],
            requested_by=user,
            batch_id=batch_id,
        )
        _claimable(run, todo)
        logger.info(
            "transcription_run_created",
            extra={"run_id": str(run.pk), "fiche_id": fiche.fiche_id, "to_transcribe": len(todo), "force": force},
        )
        from transcriptions.tasks import transcribe_fiche

        dispatch_on_commit(transcribe_fiche, str(run.pk))
    return RunRequestResult(fiche.fiche_id, RunStatus.PENDING, total, len(todo), str(run.pk))


def _claimable(run: TranscriptionRun, recordings: list[Recording]) -> None:
    """Point the recordings' transcription rows at ``run`` (created pending when missing). A row
    being processed right now is left to its holder; it reports to whichever run it belongs to."""
    existing = {t.call_id: t for t in Transcription.objects.select_for_update().filter(fiche=run.fiche)}
    new = []
    for rec in recordings:
        row = existing.get(rec.call_id)
        if row is None:
            new.append(Transcription(recording=rec, fiche=run.fiche, call_id=rec.call_id, run=run))
        elif row.status != TranscriptionStatus.PROCESSING:
            row.run = run
            row.status = TranscriptionStatus.PENDING
            row.error = None
            row.save(update_fields=["run", "status", "error", "updated_at"])
        else:
            row.run = run
            row.save(update_fields=["run", "updated_at"])
    Transcription.objects.bulk_create(new)


# --- The orchestrator ------------------------------------------------------------------------------


def _budget_gate(run_id: str) -> bool:
    """Whether the daily speech-to-text budget (global, or the run's requester's) stops this run now. Only
    new work is gated: a run not dispatched yet; a dispatched run's recordings always finish (``costs.budgets``).
    ``wait`` mode: the run stays pending with ``waiting_budget_since`` (the reconciler dispatches it when the
    budget allows); ``refuse`` mode: its recordings fail with the reason and it ends."""
    run = TranscriptionRun.objects.select_related("requested_by").filter(pk=run_id).first()
    if run is None or run.is_terminal or run.dispatched_at is not None:
        return False
    verdict, state = budgets.new_work("stt", run.requested_by)
    if state is None:
        return False
    if verdict == "refuse":
        run_finalize_now(run_id=run_id, reason=state.reason())
        return True
    waiting = TranscriptionRun.objects.filter(pk=run_id, dispatched_at__isnull=True, waiting_budget_since__isnull=True)
    if waiting.update(waiting_budget_since=timezone.now()):
        logger.info("transcription_waiting_budget", extra={"run_id": run_id, "scope": state.scope})
    return True


def run_dispatch(*, run_id: str, redrive: bool = False) -> list[str]:
    """Mark the run processing and return the call ids to fan out (once; ``redrive`` sends the
    remaining ones again). Publishes ``transcription.started`` and ``transcription.status_check``. A run not
    dispatched yet waits (or fails) at the daily speech-to-text budget (``_budget_gate``)."""
    if _budget_gate(run_id):
        return []
    with transaction.atomic():
        run = TranscriptionRun.objects.select_for_update().select_related("fiche").filter(pk=run_id).first()
        if run is None or run.is_terminal:
            return []
        if run.dispatched_at is not None and not redrive:
            return []
        now = timezone.now()
        first = run.dispatched_at is None
        run.status = RunStatus.PROCESSING
        run.started_at = run.started_at or now
        run.dispatched_at = now
        run.last_progress_at = run.last_progress_at or now
        run.waiting_budget_since = None
        run.save(update_fields=["status", "started_at", "dispatched_at", "last_progress_at", "waiting_budget_since"])
        remaining = run.remaining_call_ids
        if first:
            already = run.total_recordings - len(run.call_ids)
            publish_many(
                [
                    (
                        "transcription.started",
                        {
                            "fiche_id": run.fiche.fiche_id,
                            "total_recordings": run.total_recordings,
                            "priority": run.priority,
                            "started_at": iso(run.started_at),
                            "status": "started",
                        },
                    ),
                    (
                        "transcription.status_check",
                        {
                            "fiche_id": run.fiche.fiche_id,
                            "total_recordings": run.total_recordings,
                            "already_transcribed": already,
                            "needs_transcription": len(run.call_ids),
                            "is_complete": not run.call_ids,
                            "status": "checked",
                        },
                    ),
                ]
            )
        if not remaining:
            _finalize_locked(run)
    logger.info("transcription_fan_out", extra={"run_id": run_id, "recordings": len(remaining), "redrive": redrive})
    return remaining


# --- One recording ----------------------------------------------------------------------------------


def vendor_semaphore() -> Semaphore:
    """``ELEVENLABS_MAX_CONCURRENCY`` vendor calls in flight across every worker; a slot is a short lease
    its holder's heartbeat renews during the call (a dead worker's slot frees within a lease)."""
    return Semaphore("stt-vendor", limit=settings.ELEVENLABS_MAX_CONCURRENCY, lease_seconds=lease_seconds())


ALREADY_TRANSCRIBED = "already transcribed"
BEING_TRANSCRIBED = "being transcribed"
CLAIM_LOST = "claim lost"
RUN_ENDED = "run ended"
# Skips after which the run hears nothing from this task: another holder reports, or nobody waits.
NOTHING_TO_REPORT = frozenset({CLAIM_LOST, RUN_ENDED, BEING_TRANSCRIBED})


@dataclass(frozen=True)
class RecordingOutcome:
    call_id: str
    ok: bool
    error: str | None = None
    transcription_id: str | None = None
    skipped: str | None = None  # why nothing was sent (already done, claimed elsewhere)


def _claim(call_id: str, run_id: str) -> tuple[Transcription | None, str | None]:
    """The Postgres fence: take the row for this run (pending/failed, or processing with a lease that ran
    out: its worker died) under its row lock, with a fresh ``claim_token``. ``(row, None)`` when taken,
    ``(None, reason)`` otherwise."""
    now = timezone.now()
    stale = now - timedelta(seconds=lease_seconds())
    with transaction.atomic():
        if TranscriptionRun.objects.filter(pk=run_id, status__in=TERMINAL_RUN_STATUSES).exists():
            return None, RUN_ENDED
        row = Transcription.objects.select_for_update().filter(call_id=call_id).first()
        if row is None:
            return None, "no transcription row"
        if str(row.run_id) != str(run_id):
            return None, "claimed by another run"
        if row.status == TranscriptionStatus.COMPLETED:
            return None, ALREADY_TRANSCRIBED
        if row.status == TranscriptionStatus.PROCESSING and row.claimed_at and row.claimed_at > stale:
            return None, BEING_TRANSCRIBED
        row.status = TranscriptionStatus.PROCESSING
        row.claimed_at = now
        row.claim_token = new_token()
        row.attempts += 1
        row.error = None
        row.save(update_fields=["status", "claimed_at", "claim_token", "attempts", "error", "updated_at"])
        return row, None


def claim_lease(row: Transcription) -> Lease:
    """The recording's claim as a lease the worker's heartbeat renews while it transcribes it."""
    assert row.claim_token is not None
    return lease_of(Transcription, row.pk, row.claim_token)


def _held(call_id: str, run_id: str, token: str | None) -> Any:
    """The recording's row while this run's claim (``token``: this worker's) holds it."""
    rows = Transcription.objects.filter(
        call_id=call_id, run_id=uuid.UUID(run_id), status=TranscriptionStatus.PROCESSING
    )
    return rows if token is None else rows.filter(claim_token=token)


def recording_context(*, run_id: str, call_id: str) -> dict[str, Any]:
    """What the worker needs to call the vendor (read once, no lock)."""
    rec = Recording.objects.select_related("fiche").get(call_id=call_id)
    run = TranscriptionRun.objects.only("call_ids", "status").get(pk=run_id)
    return {
        "recording_url": rec.recording_url or "",
        "direction": rec.direction,
        "agent_name": rec.fiche.agent_name,
        "fiche_id": rec.fiche.fiche_id,
        "index": run.call_ids.index(call_id) + 1 if call_id in run.call_ids else 0,
        "total": len(run.call_ids),
        "run_terminal": run.status in TERMINAL_RUN_STATUSES,
    }


def recording_claim(*, run_id: str, call_id: str) -> tuple[Transcription | None, str | None]:
    """Claim the recording for this run: ``(row, None)`` when claimed (``row.claim_token`` is the
    claim), else ``(None, why not)`` (nothing to send)."""
    row, reason = _claim(call_id, run_id)
    if row is None:
        return None, reason
    ctx = recording_context(run_id=run_id, call_id=call_id)
    publish(
        "transcription.recording_started",
        {
            "fiche_id": ctx["fiche_id"],
            "call_id": call_id,
            "recording_index": ctx["index"],
            "total_to_transcribe": ctx["total"],
            "status": "processing",
        },
    )
    return row, None


def recording_store(
    *, run_id: str, call_id: str, result: elevenlabs.SttResult, token: str | None = None
) -> RecordingOutcome:
    """Store a vendor result, only while this worker's claim (``token``) holds the recording for this run.
    Card numbers and one-time codes are redacted first (``redact_at_ingestion``): never stored in clear."""
    result = redact_at_ingestion(result)
    ctx = recording_context(run_id=run_id, call_id=call_id)
    speaker_map = map_speakers(
        result.words,
        direction=ctx["direction"],
        agent_name=ctx["agent_name"],
        company_names=settings.TRANSCRIPTION_COMPANY_NAMES,
    )
    now = timezone.now()
    with transaction.atomic():
        updated = _held(call_id, run_id, token).update(
            status=TranscriptionStatus.COMPLETED,
            claim_token=None,
            provider="elevenlabs",
            model=settings.ELEVENLABS_MODEL_ID,
            language=result.language_code,
            language_probability=result.language_probability,
            text=result.text,
            words=result.words,
            speaker_map=speaker_map,
            duration_seconds=result.audio_duration_secs,
            vendor_transcription_id=result.transcription_id,
            error=None,
            transcribed_at=now,
            updated_at=now,
        )
        if updated != 1:  # the claim was taken over (this holder outlived it): the new holder decides
            return RecordingOutcome(call_id, False, skipped=CLAIM_LOST)
        _record_usage(run_id=run_id, call_id=call_id, seconds=result.audio_duration_secs)
        publish(
            "transcription.recording_completed",
            {
                "fiche_id": ctx["fiche_id"],
                "call_id": call_id,
                "transcription_id": result.transcription_id or "",
                "recording_index": ctx["index"],
                "total_to_transcribe": ctx["total"],
                "status": "completed",
            },
        )
    logger.info("recording_transcribed", extra={"run_id": run_id, "call_id": call_id, "words": len(result.words)})
    return RecordingOutcome(call_id, True, transcription_id=result.transcription_id)


def redact_at_ingestion(result: elevenlabs.SttResult) -> elevenlabs.SttResult:
    """The vendor's result with the kinds never stored (``privacy.redaction.STORAGE_KINDS``: card numbers, their
    expiry and security codes, SMS / one-time codes) replaced by placeholders in its words (one placeholder word
    per run, with the run's times) and its text (rebuilt from the redacted words when they changed)."""
    redacted = redaction.redact_transcript(result.words, result.text, redaction.STORAGE_KINDS)
    if redacted is None:
        return result
    words, text = redacted
    return replace(result, words=words, text=text)


def _record_usage(*, run_id: str, call_id: str, seconds: float | None) -> None:
    """The vendor call's audio seconds (the recording's own duration when the vendor did not say), on the
    transcription, its run, its fiche and the run's requester; in the store's transaction, under its claim
    (a call is counted once)."""
    row = Transcription.objects.filter(call_id=call_id).values("pk", "fiche_id", "recording__duration_seconds").get()
    requested_by = TranscriptionRun.objects.filter(pk=run_id).values_list("requested_by_id", flat=True).first()
    record_stt_usage(
        audio_seconds=seconds if seconds is not None else row["recording__duration_seconds"] or 0.0,
        model=settings.ELEVENLABS_MODEL_ID,
        transcription_id=row["pk"],
        transcription_run_id=run_id,
        fiche_id=row["fiche_id"],
        user_id=requested_by,
    )


def recording_fail(*, run_id: str, call_id: str, error: str, token: str | None = None) -> RecordingOutcome:
    """Record a recording's failure (after its retries, or a permanent error), only while this worker's
    claim (``token``) holds it."""
    error = error[:2000]
    ctx = recording_context(run_id=run_id, call_id=call_id)
    with transaction.atomic():
        updated = _held(call_id, run_id, token).update(
            status=TranscriptionStatus.FAILED, error=error, claim_token=None, updated_at=timezone.now()
        )
        if updated != 1:
            return RecordingOutcome(call_id, False, skipped=CLAIM_LOST)
        publish(
            "transcription.recording_failed",
            {
                "fiche_id": ctx["fiche_id"],
                "call_id": call_id,
                "error": error,
                "recording_index": ctx["index"],
                "total_to_transcribe": ctx["total"],
                "status": "failed",
            },
        )
    logger.warning("recording_transcription_failed", extra={"run_id": run_id, "call_id": call_id, "error": error})
    return RecordingOutcome(call_id, False, error=error)


def recording_release(*, run_id: str, call_id: str, token: str | None = None) -> None:
    """Give the claim back (the vendor call will be retried later, by this run)."""
    _held(call_id, run_id, token).update(
        status=TranscriptionStatus.PENDING, claimed_at=None, claim_token=None, updated_at=timezone.now()
    )


# --- The updater ------------------------------------------------------------------------------------


@dataclass
class RunUpdate:
    changed: bool = False
    finalized: bool = False
    status: str | None = None
    remaining: list[str] = field(default_factory=list)


def run_apply_outcomes(*, run_id: str, outcomes: list[tuple[str, bool, str | None]]) -> RunUpdate:
    """Apply recording outcomes ``(call_id, ok, error)`` in one transaction under the run's row
    lock (callers also hold its Redis lock). Duplicates are no-ops; a success is final. Publishes
    ``transcription.progress`` per applied batch; the run ends when nothing remains."""
    with transaction.atomic():
        run = TranscriptionRun.objects.select_for_update().select_related("fiche").filter(pk=run_id).first()
        if run is None or run.is_terminal:
            return RunUpdate(status=run.status if run else None)
        done, failed = list(run.done_call_ids), list(run.failed_call_ids)
        result = RunUpdate()
        for call_id, ok, error in outcomes:
            if call_id not in run.call_ids or call_id in done:
                continue
            if ok:
                done.append(call_id)
                if call_id in failed:
                    failed.remove(call_id)
            elif call_id not in failed:
                failed.append(call_id)
                run.error = f"{call_id}: {error or 'failed'}"[:2000]
            else:
                continue
            result.changed = True
        if result.changed:
            run.done_call_ids, run.failed_call_ids = done, failed
            run.last_progress_at = timezone.now()
            run.save(update_fields=["done_call_ids", "failed_call_ids", "error", "last_progress_at"])
            processed = len(done) + len(failed)
            publish(
                "transcription.progress",
                {
                    "fiche_id": run.fiche.fiche_id,
                    "total_recordings": run.total_recordings,
                    "transcribed": run.total_recordings - len(run.call_ids) + len(done),
                    "pending": len(run.call_ids) - processed,
                    "failed": len(failed),
                    "progress_percentage": round(processed / len(run.call_ids) * 100) if run.call_ids else 100,
                    "status": "in_progress",
                },
            )
        result.remaining = run.remaining_call_ids
        if not result.remaining:
            result.finalized = _finalize_locked(run)
        result.status = run.status
        return result


def outcome_is_applied(*, run_id: str, call_id: str) -> bool:
    row = TranscriptionRun.objects.filter(pk=run_id).values("status", "done_call_ids", "failed_call_ids").first()
    if row is None or row["status"] in TERMINAL_RUN_STATUSES:
        return True
    return call_id in row["done_call_ids"] or call_id in row["failed_call_ids"]


# A recording's outcome ``[call_id, ok, error]`` reaches its run's updater through the kernel's inbox
# (registered in ``TranscriptionsConfig.ready``).
RUN_INBOX = Inbox(
    name="transcriptions.run",
    pending_prefix="transcription-outcomes",
    lock_prefix="transcription-run",
    lock_seconds=60,
    apply=lambda run_id, outcomes: run_apply_outcomes(
        run_id=run_id, outcomes=[(str(c), bool(ok), e) for c, ok, e in outcomes]
    ),
    is_applied=lambda run_id, outcome: outcome_is_applied(run_id=run_id, call_id=str(outcome[0])),
)


def _finalize_locked(run: TranscriptionRun, *, reason: str | None = None) -> bool:
    """End a run whose row lock the caller holds, exactly once: ``completed`` when every
    recording was transcribed, ``failed`` when none was, else ``partial``."""
    if run.failed_call_ids and not run.done_call_ids:
        status = RunStatus.FAILED
    elif run.failed_call_ids:
        status = RunStatus.PARTIAL
    else:
        status = RunStatus.COMPLETED
    now = timezone.now()
    if not TranscriptionRun.end_once(run.pk, status, now=now):
        return False
    run.status, run.completed_at = status, now
    fiche_id = run.fiche.fiche_id
    transcribed = run.total_recordings - len(run.call_ids) + len(run.done_call_ids)
    if status == RunStatus.FAILED:
        publish(
            "transcription.failed",
            {
                "fiche_id": fiche_id,
                "error": reason or run.error or "every recording failed",
                "failed_at": iso(now),
                "status": "failed",
                "partial_results": {
                    "total": run.total_recordings,
                    "transcribed": transcribed,
                    "failed": len(run.failed_call_ids),
                },
            },
        )
    else:
        publish(
            "transcription.completed",
            {
                "fiche_id": fiche_id,
                "total_recordings": run.total_recordings,
                "transcribed": transcribed,
                "failed": len(run.failed_call_ids),
                "duration_seconds": round((now - (run.started_at or run.created_at)).total_seconds(), 3),
                "completed_at": iso(now),
                "status": "completed",
            },
        )
    logger.info(
        "transcription_run_finished",
        extra={"run_id": str(run.pk), "fiche_id": fiche_id, "status": status, "failed": len(run.failed_call_ids)},
    )
    run_finished.fire(run)
    return True


def run_finalize_if_done(*, run_id: str) -> bool:
    """The reconciler's safety net: end a run with nothing remaining that has not ended."""
    with transaction.atomic():
        run = TranscriptionRun.objects.select_for_update().select_related("fiche").filter(pk=run_id).first()
        if run is None or run.is_terminal or run.remaining_call_ids:
            return False
        return _finalize_locked(run)


def run_finalize_now(*, run_id: str, reason: str) -> bool:
    """The remaining recordings fail with ``reason`` and the run ends (reconciler, operators)."""
    with transaction.atomic():
        run = TranscriptionRun.objects.select_for_update().select_related("fiche").filter(pk=run_id).first()
        if run is None or run.is_terminal:
            return False
        remaining = run.remaining_call_ids
        if remaining:
            run.failed_call_ids = [*run.failed_call_ids, *remaining]
            run.error = f"{len(remaining)} recording(s) {reason}"
            run.save(update_fields=["failed_call_ids", "error"])
            Transcription.objects.filter(call_id__in=remaining, run=run).exclude(
                status=TranscriptionStatus.COMPLETED
            ).update(status=TranscriptionStatus.FAILED, error=reason, updated_at=timezone.now())
        return _finalize_locked(run, reason=run.error)


def _waiting_budget(run: TranscriptionRun, now: datetime, actions: dict[str, list[str]]) -> bool:
    """A run waiting for the daily speech-to-text budget: never stalled nor timed out while it waits;
    ``resumed`` (dispatched) once the budget allows, failed with the reason if the mode became ``refuse``."""
    if run.waiting_budget_since is None or run.dispatched_at is not None:
        return False
    verdict, state = budgets.new_work("stt", run.requested_by)
    if state is None:
        actions.setdefault("resumed", []).append(str(run.pk))
    elif verdict == "refuse" and run_finalize_now(run_id=str(run.pk), reason=state.reason()):
        actions.setdefault("budget_refused", []).append(str(run.pk))
    return True


RECONCILER: Reconciler[TranscriptionRun] = Reconciler(
    name="transcriptions",
    special=_waiting_budget,
    stall_seconds=lambda: settings.TRANSCRIPTION_STALL_SECONDS,
    deadline_seconds=lambda: settings.TRANSCRIPTION_DEADLINE_SECONDS,
    time_out=lambda run: run_finalize_now(run_id=str(run.pk), reason="timed out (no progress)"),
    is_done=lambda run: not run.remaining_call_ids,
    finish=lambda run: run_finalize_if_done(run_id=str(run.pk)),
    mark_redriven=lambda run, now: TranscriptionRun.objects.filter(pk=run.pk).update(redriven_at=now),
    names={"finished": "finalized"},
)


def recordings_to_resend(*, now: datetime | None = None) -> list[tuple[str, str]]:
    """``(run_id, call_id)`` of the recordings a dead worker took with it:

    - recordings being transcribed whose claim's lease ran out (a live worker renews it every heartbeat);
    - the recordings still to do of a run without progress for a lease, none of whose recordings is held,
      when their messages can only have been lost (``core.reconcile.units_may_be_lost``: a vendor slot
      is free and the run's queue is empty).

    Sending a recording again is safe: its claim decides who transcribes it."""
    from transcriptions.tasks import QUEUE_BY_PRIORITY

    now = now or timezone.now()
    stale = now - timedelta(seconds=lease_seconds())
    active = [RunStatus.PENDING, RunStatus.PROCESSING]
    expired = Transcription.objects.filter(
        status=TranscriptionStatus.PROCESSING, claimed_at__lt=stale, run__status__in=active
    ).values_list("run_id", "call_id")
    units = [(str(run_id), call_id) for run_id, call_id in expired]
    held = Transcription.objects.filter(status=TranscriptionStatus.PROCESSING, claimed_at__gte=stale)
    idle = TranscriptionRun.objects.filter(
        status=RunStatus.PROCESSING, dispatched_at__isnull=False, last_progress_at__lt=stale
    ).exclude(pk__in=held.values("run_id"))
    semaphore = vendor_semaphore()
    free_slots = semaphore.limit - len(semaphore.holders())
    lost: dict[str, bool] = {}  # per queue, asked once
    for run in idle.only("pk", "priority", "call_ids", "done_call_ids", "failed_call_ids"):
        queue = QUEUE_BY_PRIORITY.get(run.priority, "stt")
        if queue not in lost:
            lost[queue] = units_may_be_lost(queue=queue, free_slots=free_slots)
        if not lost[queue]:
            continue
        waiting = Transcription.objects.filter(run=run, call_id__in=run.remaining_call_ids).exclude(
            status=TranscriptionStatus.PROCESSING
        )
        units += [(str(run.pk), call_id) for call_id in waiting.values_list("call_id", flat=True)]
    return units


def run_reconcile(*, now: datetime | None = None) -> dict[str, list[str]]:
    """Every run ends (beat, on the kernel's ``Reconciler``): no progress for
    ``TRANSCRIPTION_DEADLINE_SECONDS`` → the rest fails ("timed out"); nothing remaining → ended; no
    progress for ``TRANSCRIPTION_STALL_SECONDS`` since its last progress or re-drive → returned under
    ``redrive``. ``recordings``: the recordings of dead workers to send again at once
    (``recordings_to_resend``). A run waiting for the daily budget only waits: ``resumed`` once it allows."""
    now = now or timezone.now()
    unfinished = TranscriptionRun.objects.filter(status__in=[RunStatus.PENDING, RunStatus.PROCESSING]).only(
        "id",
        "created_at",
        "dispatched_at",
        "last_progress_at",
        "redriven_at",
        "call_ids",
        "done_call_ids",
        "failed_call_ids",
        "waiting_budget_since",
        "requested_by",
    )
    actions = RECONCILER.run(unfinished, now=now)
    redriven = set(actions["redrive"])  # their orchestrator sends every recording left again
    actions["recordings"] = [
        f"{run_id}:{call_id}" for run_id, call_id in recordings_to_resend(now=now) if run_id not in redriven
    ]
    for unit in actions["recordings"]:
        logger.warning("transcription_recording_resend", extra={"unit": unit})
    return actions
