"""Celery tasks of transcriptions: thin wrappers that re-load by id and call one service.

``transcribe_recording`` runs on the speech-to-text queues (``stt_high`` / ``stt`` / ``stt_low`` by
priority), consumed by an I/O worker pool (threads): vendor calls are long network waits and must
not take the prefork slots of CRM and orchestration work. The rest runs on ``default``.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import orjson
from celery import chord, shared_task
from django.conf import settings

from core.limits import LimitBusy
from core.locks import LockNotAcquired, redis_lock
from core.redis import get_redis
from core.retry import (
    INFRA_MAX_ERRORS,
    TRANSIENT_INFRA_ERRORS,
    error_budget_left,
    retry_after_error,
    retry_waiting,
)
from transcriptions.clients import elevenlabs
from transcriptions.models import Priority
from transcriptions.services import batches, runs

logger = logging.getLogger("transcriptions.tasks")

# A task waits in place this long for a provider slot before re-enqueueing itself: threads waiting
# in place take a freed slot within milliseconds, which keeps the provider's cap fully used.
SLOT_WAIT_SECONDS = 30.0

QUEUE_BY_PRIORITY: dict[str, str] = {
    Priority.HIGH.value: "stt_high",
    Priority.NORMAL.value: "stt",
    Priority.LOW.value: "stt_low",
}


@shared_task(
    name="transcriptions.tasks.transcribe_fiche",
    ignore_result=True,
    autoretry_for=TRANSIENT_INFRA_ERRORS,
    retry_backoff=True,
    retry_backoff_max=10,
    max_retries=INFRA_MAX_ERRORS,
)
def transcribe_fiche(run_id: str, redrive: bool = False) -> int:
    """Orchestrator: one ``transcribe_recording`` per remaining recording, as a chord whose body
    is the run's safety-net finalizer."""
    call_ids = runs.run_dispatch(run_id=run_id, redrive=redrive)
    if call_ids:
        from transcriptions.models import TranscriptionRun

        priority = TranscriptionRun.objects.values_list("priority", flat=True).get(pk=run_id)
        queue = QUEUE_BY_PRIORITY.get(priority, "stt")
        chord(transcribe_recording.si(run_id, call_id).set(queue=queue) for call_id in call_ids)(
            transcription_finalize.si(run_id)
        )
    return len(call_ids)


@shared_task(bind=True, name="transcriptions.tasks.transcribe_recording", ignore_result=False)
def transcribe_recording(
    self: Any, run_id: str, call_id: str, error_attempts: int = 0, infra_attempts: int = 0
) -> dict[str, Any]:
    """Transcribe one recording for its run and report the outcome to the run's updater.

    One vendor call per recording at a time (a Redis lock; the row's conditional claim is the
    fence), at most ``ELEVENLABS_MAX_CONCURRENCY`` in flight across all workers (a Redis semaphore
    with leases). Waiting for either, or a vendor 429, re-enqueues the task without spending its
    error budget; transient vendor errors retry with backoff (``TRANSCRIPTION_MAX_ERRORS``); a
    permanent error, or the budget spent, fails the recording. Always returns normally so the
    chord completes.
    """
    try:
        outcome = _transcribe(self, run_id, call_id)
        if outcome.skipped:
            logger.info("recording_skipped", extra={"run_id": run_id, "call_id": call_id, "reason": outcome.skipped})
            if outcome.skipped == runs.ALREADY_TRANSCRIBED:
                report_outcome(run_id, call_id, True, None)
            elif outcome.skipped not in runs.NOTHING_TO_REPORT:
                report_outcome(run_id, call_id, False, outcome.skipped)
            return {"call_id": call_id, "skipped": outcome.skipped}
        report_outcome(run_id, call_id, outcome.ok, outcome.error)
        return {"call_id": call_id, "ok": outcome.ok, "error": outcome.error}
    except TRANSIENT_INFRA_ERRORS as exc:
        if error_budget_left(self, max_errors=INFRA_MAX_ERRORS, counter="infra_attempts"):
            logger.warning("recording_infra_retry", extra={"run_id": run_id, "call_id": call_id, "error": str(exc)})
            raise retry_after_error(self, exc, base=0.5, cap=10.0, counter="infra_attempts") from None
        logger.error("recording_infra_failed", extra={"run_id": run_id, "call_id": call_id, "error": str(exc)})
        return {"call_id": call_id, "ok": False, "error": "infrastructure unavailable"}  # the reconciler re-drives


def _transcribe(task: Any, run_id: str, call_id: str) -> runs.RecordingOutcome:
    lock_ttl = runs.claim_lease_seconds()
    try:
        with redis_lock(f"stt-recording:{call_id}", timeout=lock_ttl):
            reason = runs.recording_claim(run_id=run_id, call_id=call_id)
            if reason == runs.BEING_TRANSCRIBED:
                raise LockNotAcquired(call_id)  # another holder's claim is fresh: wait for it
            if reason is not None:
                return runs.RecordingOutcome(call_id, False, skipped=reason)
            return _call_vendor(task, run_id, call_id)
    except LockNotAcquired:
        logger.info("recording_lock_busy", extra={"run_id": run_id, "call_id": call_id})
        raise retry_waiting(task, countdown=random.uniform(1.0, 3.0)) from None


def _call_vendor(task: Any, run_id: str, call_id: str) -> runs.RecordingOutcome:
    """Under the recording's claim: hold a provider slot for the call only, store the result."""
    ctx = runs.recording_context(run_id=run_id, call_id=call_id)
    holder = f"{run_id}:{call_id}"
    try:
        fields = elevenlabs.prepare_request(recording_url=ctx["recording_url"], call_id=call_id)
        # Leaving the block closes the request (deleting a downloaded recording) whatever happens.
        with fields, runs.vendor_semaphore().slot(holder, wait=SLOT_WAIT_SECONDS):  # the vendor call only
            response = elevenlabs.send_request(fields, call_id=call_id)
        result = elevenlabs.read_response(response, call_id=call_id)
    except LimitBusy:
        runs.recording_release(run_id=run_id, call_id=call_id)
        raise retry_waiting(task, countdown=random.uniform(0.2, 1.0)) from None
    except elevenlabs.ElevenLabsRateLimited as exc:  # the vendor's own limit: wait, not an error
        runs.recording_release(run_id=run_id, call_id=call_id)
        logger.info("recording_vendor_busy", extra={"run_id": run_id, "call_id": call_id, "reason": exc.reason})
        wait = exc.retry_after if exc.retry_after is not None else 1.0
        raise retry_waiting(task, countdown=wait + random.uniform(0, 0.5)) from None
    except elevenlabs.ElevenLabsPermanentError as exc:
        return runs.recording_fail(run_id=run_id, call_id=call_id, error=str(exc))
    except elevenlabs.ElevenLabsTransientError as exc:
        if error_budget_left(task, max_errors=settings.TRANSCRIPTION_MAX_ERRORS):
            runs.recording_release(run_id=run_id, call_id=call_id)
            logger.warning("recording_retry", extra={"run_id": run_id, "call_id": call_id, "error": str(exc)})
            raise retry_after_error(task, exc, base=settings.TRANSCRIPTION_RETRY_BASE_SECONDS) from None
        return runs.recording_fail(run_id=run_id, call_id=call_id, error=str(exc))
    return runs.recording_store(run_id=run_id, call_id=call_id, result=result)


def _outcomes_key(run_id: str) -> str:
    return f"transcription-outcomes:{run_id}"


def report_outcome(run_id: str, call_id: str, ok: bool, error: str | None) -> None:
    """Hand an outcome to the run's updater: inline when its lock is free (applying every pending
    outcome at once), else (or when Redis or the database fails) as a durable updater message."""
    try:
        redis = get_redis()
        redis.rpush(_outcomes_key(run_id), orjson.dumps([call_id, ok, error]))
        redis.expire(_outcomes_key(run_id), 24 * 3600)
        apply_pending_outcomes(run_id, (call_id, ok, error), wait=0.5)
        return
    except LockNotAcquired:
        pass
    except TRANSIENT_INFRA_ERRORS:
        logger.warning("transcription_inline_update_failed", exc_info=True, extra={"run_id": run_id})
    transcription_update_run.delay(run_id, call_id, ok, error)


def apply_pending_outcomes(run_id: str, outcome: tuple[str, bool, str | None], *, wait: float) -> runs.RunUpdate:
    redis = get_redis()
    key = _outcomes_key(run_id)
    with redis_lock(f"transcription-run:{run_id}", timeout=60, wait=wait):
        pending = redis.lrange(key, 0, -1)
        outcomes = [outcome] + [(c, bool(o), e) for c, o, e in map(orjson.loads, pending)]
        result = runs.run_apply_outcomes(run_id=run_id, outcomes=outcomes)
        if pending:
            redis.ltrim(key, len(pending), -1)
        if result.finalized:
            redis.delete(key)
    return result


@shared_task(bind=True, name="transcriptions.tasks.transcription_update_run", ignore_result=True)
def transcription_update_run(
    self: Any, run_id: str, call_id: str, ok: bool, error: str | None = None, infra_attempts: int = 0
) -> str | None:
    """The per-run updater (Redis lock + row lock); waits for the lock, never drops an outcome."""
    try:
        if runs.outcome_is_applied(run_id=run_id, call_id=call_id):
            return "already applied"
        return apply_pending_outcomes(run_id, (call_id, ok, error), wait=0.5).status
    except LockNotAcquired:
        raise retry_waiting(self, countdown=random.uniform(0.1, 0.5)) from None
    except TRANSIENT_INFRA_ERRORS as exc:
        if not error_budget_left(self, max_errors=INFRA_MAX_ERRORS, counter="infra_attempts"):
            raise
        raise retry_after_error(self, exc, base=0.5, cap=10.0, counter="infra_attempts") from None


@shared_task(bind=True, name="transcriptions.tasks.transcription_finalize", ignore_result=True)
def transcription_finalize(self: Any, run_id: str) -> bool:
    """Chord body: end the run if nothing remains and nobody ended it yet."""
    try:
        with redis_lock(f"transcription-run:{run_id}", timeout=60, wait=2):
            return runs.run_finalize_if_done(run_id=run_id)
    except LockNotAcquired:
        raise retry_waiting(self, countdown=1) from None


@shared_task(name="transcriptions.tasks.reconcile_transcription_runs", ignore_result=True)
def reconcile_transcription_runs() -> dict[str, list[str]]:
    """Beat (every minute): every run and every batch ends."""
    actions = runs.run_reconcile()
    for run_id in actions["redrive"]:
        transcribe_fiche.delay(run_id, redrive=True)
    batch_actions = batches.batch_reconcile()
    for batch_id in batch_actions["restarted"]:
        batch_start.delay(batch_id)
    return {**actions, **{f"batch_{k}": v for k, v in batch_actions.items()}}


@shared_task(
    name="transcriptions.tasks.batch_start",
    ignore_result=True,
    autoretry_for=TRANSIENT_INFRA_ERRORS,
    retry_backoff=True,
    retry_backoff_max=10,
    max_retries=INFRA_MAX_ERRORS,
)
def batch_start(batch_id: str) -> int:
    """Start the batch's items (idempotent)."""
    return batches.batch_start_items(batch_id=batch_id)
