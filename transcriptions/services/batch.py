"""Transcription batches: what a transcription batch item does (the generic batches run it), and how its
end is reported."""

from __future__ import annotations

from typing import Any

from transcriptions.models import Priority, RunStatus, TranscriptionRun
from transcriptions.services.runs import transcription_request


def start_batch_item(batch: Any, item: Any) -> str | None:
    """Transcribe one fiche of a batch (the requester's scope as it was when the batch was made)."""
    from batches.services import batch_item_done, batch_item_fiche

    fiche = batch_item_fiche(batch, item, app="transcriptions")
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


def batch_items_waiting(ref_ids: list[str]) -> bool:
    """Whether any of these runs waits for the daily speech-to-text budget (its batch then waits as long)."""
    return TranscriptionRun.objects.filter(pk__in=ref_ids, waiting_budget_since__isnull=False).exists()


def batch_item_state(item: Any) -> tuple[bool, str | None] | None:
    run = TranscriptionRun.objects.filter(pk=item.ref_id).first()
    if run is None:
        return False, "its transcription run is gone"
    return _run_outcome(run) if run.is_terminal else None


def report_run_to_batch(run: TranscriptionRun) -> None:
    """Run-finished hook: the run's batch item ends with it, and so does every item of another batch that
    followed this run (it found it going instead of starting a second one)."""
    from batches.services import batch_item_done, batch_ref_done

    ok, error = _run_outcome(run)
    fiche_id = run.fiche.fiche_id
    if run.batch_id is not None:
        batch_item_done(batch_id=str(run.batch_id), fiche_id=fiche_id, ok=ok, error=error)
    batch_ref_done(operation_type="transcription", fiche_id=fiche_id, ref_id=str(run.pk), ok=ok, error=error)
