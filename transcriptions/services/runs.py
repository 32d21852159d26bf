"""Transcription runs: the request, the per-recording work, the serialized updater and the
exactly-once end, and the reconciler. The shape of a progressive fetch job (DESIGN.md):

``transcription_request`` (API or batch) → ``run_dispatch`` (orchestrator task: a chord of one
``transcribe_recording`` task per recording) → ``recording_transcribe`` (one vendor call under the
global provider limit; the recording's Redis lock filters, its row's conditional claim fences) →
``run_apply_outcomes`` (under the run's Redis lock and row lock) → the run ends exactly once
(a conditional update's row count decides who publishes the terminal event).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.permissions import can_access
from core.exceptions import ConflictError, DependencyUnavailable, InvalidInput, PermissionDeniedError
from core.formats import iso
from core.limits import LimitBusy, Semaphore, throttle_crm_requests
from core.locks import LockNotAcquired
from fiches.clients import crm
from fiches.exceptions import CrmUnavailable, FicheNotFound, fiche_refused
from fiches.models import FicheCache, Recording
from fiches.selectors import fiche_in_scope
from fiches.services.details import fiche_ensure_details
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

# Called with the run once it has ended (exactly once per run): audits waiting for the fiche's
# transcriptions, and batches, plug in here (transcriptions imports neither).
RunFinishedHook = Callable[[TranscriptionRun], None]
_run_finished_hooks: list[RunFinishedHook] = []


def on_run_finished(hook: RunFinishedHook) -> None:
    """Register ``hook(run)``, called after the commit that ended a run."""
    if hook not in _run_finished_hooks:
        _run_finished_hooks.append(hook)


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


def fiche_for_transcription(
    *, user: User | None, fiche_id: str, action: str = "write", app: str = "transcriptions"
) -> FicheCache:
    """The fiche with its full details (fetched from the CRM when not cached, under the user's CRM
    throttle), in ``user``'s ``app`` scope, checked on what we hold before any CRM call or cache write
    (``fiches.selectors.fiche_in_scope``: only a user with ALL scope may make us fetch an uncached fiche;
    for anyone else it is refused exactly as a foreign one). 404 ``fiche_not_found`` after a CRM miss."""
    fiche_id = str(fiche_id).strip()
    if user is not None:
        row = fiche_in_scope(user, app, fiche_id, action="read" if action == "read" else "write")
    else:
        row = FicheCache.objects.filter(fiche_id=fiche_id).first()
    if row is None or row.details_fetched_at is None:
        if user is not None:
            throttle_crm_requests(user)
        try:
            row = fiche_ensure_details(fiche_id=fiche_id, wait=settings.CRM_TIMEOUT_SECONDS + 5, rate_wait=5.0).row
        except crm.CrmNotFound:
            raise FicheNotFound(
                f"Fiche {fiche_id} does not exist in the CRM.", details={"fiche_id": fiche_id}
            ) from None
        except (crm.CrmError, LockNotAcquired, LimitBusy) as exc:
            if row is None:
                raise CrmUnavailable(details={"fiche_id": fiche_id, "reason": str(exc)}) from None
            # The sales list gave its recordings; go on with those.
        if user is not None:
            _check_scope(user, row, action, app)
    return row


def _check_scope(user: User, row: FicheCache, action: str, app: str) -> None:
    """Again after a fetch: the CRM may have moved the fiche to another group or agent."""
    if not can_access(user, app, row, action="read" if action == "read" else "write"):
        raise fiche_refused(row.fiche_id, app)


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

        transaction.on_commit(lambda: _dispatch(transcribe_fiche, str(run.pk)))
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


def _dispatch(task: Any, run_id: str) -> None:
    try:
        task.delay(run_id)
    except Exception:  # the broker is down: the reconciler drives the run later
        logger.exception("transcription_dispatch_failed", extra={"run_id": run_id})


# --- The orchestrator ------------------------------------------------------------------------------


def run_dispatch(*, run_id: str, redrive: bool = False) -> list[str]:
    """Mark the run processing and return the call ids to fan out (once; ``redrive`` sends the
    remaining ones again). Publishes ``transcription.started`` and ``transcription.status_check``."""
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
        run.save(update_fields=["status", "started_at", "dispatched_at", "last_progress_at"])
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
    return Semaphore(
        "stt-vendor",
        limit=settings.ELEVENLABS_MAX_CONCURRENCY,
        lease_seconds=claim_lease_seconds(),
    )


def claim_lease_seconds() -> float:
    """How long a ``processing`` claim protects a recording from another worker (a killed holder
    frees it after this)."""
    return settings.TRANSCRIPTION_CLAIM_LEASE_SECONDS


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
    """The Postgres fence: take the row for this run (pending/failed, or processing with an expired
    claim) with one conditional update. ``(row, None)`` when taken, ``(None, reason)`` otherwise."""
    now = timezone.now()
    stale = now - timedelta(seconds=claim_lease_seconds())
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
        row.attempts += 1
        row.error = None
        row.save(update_fields=["status", "claimed_at", "attempts", "error", "updated_at"])
        return row, None


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


def recording_claim(*, run_id: str, call_id: str) -> str | None:
    """Claim the recording for this run; ``None`` when claimed, else why not (nothing to send)."""
    row, reason = _claim(call_id, run_id)
    if row is None:
        return reason
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
    return None


def recording_store(*, run_id: str, call_id: str, result: elevenlabs.SttResult) -> RecordingOutcome:
    """Store a vendor result (only while this run still holds the recording's claim)."""
    ctx = recording_context(run_id=run_id, call_id=call_id)
    speaker_map = map_speakers(
        result.words,
        direction=ctx["direction"],
        agent_name=ctx["agent_name"],
        company_names=settings.TRANSCRIPTION_COMPANY_NAMES,
    )
    now = timezone.now()
    with transaction.atomic():
        updated = Transcription.objects.filter(
            call_id=call_id, run_id=uuid.UUID(run_id), status=TranscriptionStatus.PROCESSING
        ).update(
            status=TranscriptionStatus.COMPLETED,
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


def recording_fail(*, run_id: str, call_id: str, error: str) -> RecordingOutcome:
    """Record a recording's failure (after its retries, or a permanent error)."""
    error = error[:2000]
    ctx = recording_context(run_id=run_id, call_id=call_id)
    with transaction.atomic():
        Transcription.objects.filter(call_id=call_id, run_id=uuid.UUID(run_id)).exclude(
            status=TranscriptionStatus.COMPLETED
        ).update(status=TranscriptionStatus.FAILED, error=error, updated_at=timezone.now())
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


def recording_release(*, run_id: str, call_id: str) -> None:
    """Give the claim back (the vendor call will be retried later, by this run)."""
    Transcription.objects.filter(
        call_id=call_id, run_id=uuid.UUID(run_id), status=TranscriptionStatus.PROCESSING
    ).update(status=TranscriptionStatus.PENDING, claimed_at=None, updated_at=timezone.now())


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
    updated = TranscriptionRun.objects.filter(pk=run.pk, status__in=[RunStatus.PENDING, RunStatus.PROCESSING]).update(
        status=status, completed_at=now, last_progress_at=now
    )
    if updated != 1:
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
    for hook in list(_run_finished_hooks):
        transaction.on_commit(functools.partial(_call_hook, hook, run))
    return True


def _call_hook(hook: RunFinishedHook, run: TranscriptionRun) -> None:
    try:
        hook(run)
    except Exception:  # a waiting audit or batch must not undo the run's end; they have reconcilers
        logger.exception("transcription_run_hook_failed", extra={"run_id": str(run.pk)})


def run_finalize_if_done(*, run_id: str) -> bool:
    """The chord body's safety net: end a run with nothing remaining that has not ended."""
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


def run_reconcile(*, now: datetime | None = None) -> dict[str, list[str]]:
    """Every run ends (beat): no progress for ``TRANSCRIPTION_DEADLINE_SECONDS`` → the rest
    fails ("timed out"); nothing remaining → ended; no progress for ``TRANSCRIPTION_STALL_SECONDS``
    since its last progress or re-drive → returned under ``redrive``."""
    now = now or timezone.now()
    stall = timedelta(seconds=settings.TRANSCRIPTION_STALL_SECONDS)
    deadline = timedelta(seconds=settings.TRANSCRIPTION_DEADLINE_SECONDS)
    actions: dict[str, list[str]] = {"redrive": [], "finalized": [], "timed_out": []}
    unfinished = TranscriptionRun.objects.filter(status__in=[RunStatus.PENDING, RunStatus.PROCESSING]).only(
        "id",
        "created_at",
        "dispatched_at",
        "last_progress_at",
        "redriven_at",
        "call_ids",
        "done_call_ids",
        "failed_call_ids",
    )
    for run in unfinished:
        run_id = str(run.pk)
        progressed_at = run.last_progress_at or run.dispatched_at or run.created_at
        if now - progressed_at > deadline:
            if run_finalize_now(run_id=run_id, reason="timed out (no progress)"):
                actions["timed_out"].append(run_id)
        elif not run.remaining_call_ids:
            if run_finalize_if_done(run_id=run_id):
                actions["finalized"].append(run_id)
        elif now - max(progressed_at, run.redriven_at or progressed_at) > stall:
            TranscriptionRun.objects.filter(pk=run.pk).update(redriven_at=now)
            actions["redrive"].append(run_id)
            logger.warning("transcription_run_redrive", extra={"run_id": run_id})
    return actions


# --- Batch items ----------------------------------------------------------------------------------


def in_snapshot_scope(row: FicheCache, snapshot: dict[str, Any]) -> bool:
    """Whether ``row`` is in a scope recorded when a batch was made (``Batch.scope_snapshot``)."""
    kind = snapshot.get("kind")
    if kind == "ALL":
        return True
    if kind == "GROUP":
        return bool(row.groupe) and row.groupe in (snapshot.get("groupes") or [])
    if kind == "SELF":
        return bool(snapshot.get("crm_user_id")) and row.crm_user_id == snapshot.get("crm_user_id")
    return False


def start_batch_item(batch: Any, item: Any) -> str | None:
    """Transcribe one fiche of a batch (the requester's scope as it was when the batch was made)."""
    from transcriptions.services.batches import batch_item_done

    fiche = fiche_for_transcription(user=None, fiche_id=item.fiche_id)
    if not in_snapshot_scope(fiche, batch.scope_snapshot):
        raise PermissionDeniedError("outside the requester's transcriptions scope")
    result = transcription_request(
        fiche=fiche,
        priority=batch.options.get("priority", Priority.NORMAL),
        user=batch.requested_by,
        batch_id=str(batch.pk),
    )
    if result.run_id is None:  # nothing to transcribe: the item is done now
        batch_item_done(batch_id=str(batch.pk), fiche_id=item.fiche_id, ok=True)
        return None
    if result.reused:  # a run of this fiche was already going: follow it
        TranscriptionRun.objects.filter(pk=result.run_id, batch__isnull=True).update(batch_id=batch.pk)
    return result.run_id


def _run_outcome(run: TranscriptionRun) -> tuple[bool, str | None]:
    if run.status == RunStatus.COMPLETED:
        return True, None
    return False, run.error or f"transcription {run.status}"


def batch_item_state(item: Any) -> tuple[bool, str | None] | None:
    run = TranscriptionRun.objects.filter(pk=item.ref_id).first()
    if run is None:
        return False, "its transcription run is gone"
    return _run_outcome(run) if run.is_terminal else None


def report_run_to_batch(run: TranscriptionRun) -> None:
    """Run-finished hook: the run's batch item ends with it, and so does every item of another batch that
    followed this run (it found it going instead of starting a second one)."""
    from transcriptions.services.batches import batch_item_done, batch_ref_done

    ok, error = _run_outcome(run)
    fiche_id = run.fiche.fiche_id
    if run.batch_id is not None:
        batch_item_done(batch_id=str(run.batch_id), fiche_id=fiche_id, ok=ok, error=error)
    batch_ref_done(operation_type="transcription", fiche_id=fiche_id, ref_id=str(run.pk), ok=ok, error=error)
