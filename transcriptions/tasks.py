"""Celery tasks of transcriptions: thin wrappers that re-load by id and call one service.

``transcribe_recording`` runs on the speech-to-text queues (``stt_high`` / ``stt`` / ``stt_low`` by
priority), consumed by an I/O worker pool (threads): vendor calls are long network waits and must
not take the prefork slots of CRM and orchestration work. The rest runs on ``default``.

On the workflow kernel: the orchestrator fans out plain messages (``core.dispatch.fan_out``), each
recording reports to the run's outcome inbox (``core.inbox``, updater ``core.tasks.apply_outcome``),
a recording's claim is a lease the worker's heartbeat renews (``core.leases``), and the reconciler
(``core.reconcile``) re-drives stalled runs and a dead worker's recordings.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import shared_task
from django.conf import settings

from core.dispatch import fan_out, send
from core.inbox import report
from core.leases import keep_alive
from core.limits import LimitBusy
from core.retry import (
    INFRA_RETRY,
    TRANSIENT_INFRA_ERRORS,
    error_budget_left,
    retry_after_error,
    retry_infra,
    retry_waiting,
    wait_backoff,
)
from transcriptions.clients import elevenlabs
from transcriptions.models import Priority, TranscriptionRun
from transcriptions.services import runs

logger = logging.getLogger("transcriptions.tasks")

# A task waits in place this long for a provider slot before re-enqueueing itself: threads waiting
# in place take a freed slot within milliseconds, which keeps the provider's cap fully used.
SLOT_WAIT_SECONDS = 30.0

QUEUE_BY_PRIORITY: dict[str, str] = {
    Priority.HIGH.value: "stt_high",
    Priority.NORMAL.value: "stt",
    Priority.LOW.value: "stt_low",
}


def queue_of(run_id: str) -> str:
    priority = TranscriptionRun.objects.values_list("priority", flat=True).filter(pk=run_id).first()
    return QUEUE_BY_PRIORITY.get(priority or "", "stt")


@shared_task(name="transcriptions.tasks.transcribe_fiche", ignore_result=True, **INFRA_RETRY)
def transcribe_fiche(run_id: str, redrive: bool = False) -> int:
    """Orchestrator: one ``transcribe_recording`` message per remaining recording (the run's updater
    ends it; the reconciler is the safety net)."""
    call_ids = runs.run_dispatch(run_id=run_id, redrive=redrive)
    if not call_ids:
        return 0
    return fan_out(transcribe_recording, ((run_id, call_id) for call_id in call_ids), queue=queue_of(run_id))


@shared_task(bind=True, name="transcriptions.tasks.transcribe_recording", ignore_result=True)
def transcribe_recording(
    self: Any,
    run_id: str,
    call_id: str,
    error_attempts: int = 0,
    infra_attempts: int = 0,
    wait_attempts: int = 0,
    outcome: list[Any] | None = None,
) -> dict[str, Any]:
    """Transcribe one recording for its run and report the outcome to the run's updater.

    The recording's row is claimed for this run with a short lease the worker's heartbeat renews
    (a dead worker's claim comes back within ``CLAIM_LEASE_SECONDS`` and the reconciler sends the
    recording again); a recording done, or in a live worker's hands, is a no-op (that worker
    reports). At most ``ELEVENLABS_MAX_CONCURRENCY`` vendor calls are in flight across all workers (a
    Redis semaphore of leases); waiting for a slot, or a vendor 429, re-enqueues the task without
    spending its error budget; transient vendor errors retry with backoff
    (``TRANSCRIPTION_MAX_ERRORS``); a permanent error, or the budget spent, fails the recording. A
    transient database or Redis error retries the task; one while handing the outcome over retries only
    the hand-over (``outcome`` carries it: the vendor is not called again).
    """
    pending = outcome
    try:
        if pending is None:
            result = _transcribe(self, run_id, call_id)
            if result.skipped:
                logger.info("recording_skipped", extra={"run_id": run_id, "call_id": call_id, "reason": result.skipped})
                if result.skipped in runs.NOTHING_TO_REPORT:
                    return {"call_id": call_id, "skipped": result.skipped}
                ok = result.skipped == runs.ALREADY_TRANSCRIBED
                pending = [ok, None if ok else result.skipped]
            else:
                pending = [result.ok, result.error]
        report(runs.RUN_INBOX, run_id, [call_id, bool(pending[0]), pending[1]])
    except TRANSIENT_INFRA_ERRORS as exc:
        retry_infra(self, exc, keep={"outcome": pending})
        return {"call_id": call_id, "ok": False, "error": "infrastructure unavailable"}  # the reconciler re-drives
    return {"call_id": call_id, "ok": pending[0], "error": pending[1]}


def _transcribe(task: Any, run_id: str, call_id: str) -> runs.RecordingOutcome:
    row, reason = runs.recording_claim(run_id=run_id, call_id=call_id)
    if row is None:
        return runs.RecordingOutcome(call_id, False, skipped=reason)
    with keep_alive(runs.claim_lease(row)):
        return _call_vendor(task, run_id, call_id, token=row.claim_token)


def _call_vendor(task: Any, run_id: str, call_id: str, *, token: str | None) -> runs.RecordingOutcome:
    """Under the recording's claim: hold a provider slot for the call only, store the result."""
    ctx = runs.recording_context(run_id=run_id, call_id=call_id)
    holder = f"{run_id}:{call_id}"
    try:
        fields = elevenlabs.prepare_request(recording_url=ctx["recording_url"], call_id=call_id)
        # Leaving the block closes the request (deleting a downloaded recording) whatever happens.
        with fields, runs.vendor_semaphore().slot(holder, wait=SLOT_WAIT_SECONDS, heartbeat=True):
            response = elevenlabs.send_request(fields, call_id=call_id)
        result = elevenlabs.read_response(response, call_id=call_id)
    except LimitBusy:  # every slot is in live hands: wait, longer each time
        runs.recording_release(run_id=run_id, call_id=call_id, token=token)
        raise wait_backoff(task) from None
    except elevenlabs.ElevenLabsRateLimited as exc:  # the vendor's own limit: wait, not an error
        runs.recording_release(run_id=run_id, call_id=call_id, token=token)
        logger.info("recording_vendor_busy", extra={"run_id": run_id, "call_id": call_id, "reason": exc.reason})
        wait = exc.retry_after if exc.retry_after is not None else 1.0
        raise retry_waiting(task, countdown=wait + random.uniform(0, 0.5)) from None
    except elevenlabs.ElevenLabsPermanentError as exc:
        return runs.recording_fail(run_id=run_id, call_id=call_id, error=str(exc), token=token)
    except elevenlabs.ElevenLabsTransientError as exc:
        if error_budget_left(task, max_errors=settings.TRANSCRIPTION_MAX_ERRORS):
            runs.recording_release(run_id=run_id, call_id=call_id, token=token)
            logger.warning("recording_retry", extra={"run_id": run_id, "call_id": call_id, "error": str(exc)})
            raise retry_after_error(task, exc, base=settings.TRANSCRIPTION_RETRY_BASE_SECONDS) from None
        return runs.recording_fail(run_id=run_id, call_id=call_id, error=str(exc), token=token)
    return runs.recording_store(run_id=run_id, call_id=call_id, result=result, token=token)


@shared_task(name="transcriptions.tasks.reconcile_transcription_runs", ignore_result=True)
def reconcile_transcription_runs() -> dict[str, list[str]]:
    """Beat (every minute): every run ends (batches have their own reconciler,
    ``batches.tasks.reconcile_batches``); a dead worker's recordings are sent again."""
    actions = runs.run_reconcile()
    for run_id in actions["redrive"]:
        send(transcribe_fiche, run_id, redrive=True)
    for run_id in actions.get("resumed", []):  # waited for the daily speech-to-text budget, which allows again
        send(transcribe_fiche, run_id)
    for unit in actions["recordings"]:
        run_id, call_id = unit.split(":", 1)
        send(transcribe_recording, run_id, call_id, queue=queue_of(run_id))
    return actions
