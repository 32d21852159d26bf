"""Batches of fiches (transcriptions; audits reuse them): created with one item per fiche, started
in the background, and ended exactly once when every item is done. Counts move only through the
serialized updater (the batch's Redis lock filters, its row lock fences); ``batch.progress`` and
``batch.completed`` go to the global channel. A reconciler ends batches whose items all ended.

The operation of an item is registered per ``operation_type`` (``register_operation``): it starts the
item's work and later reports the item's end with ``batch_item_done``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.grants import scope_for
from config.exceptions import ApplicationError, InvalidInput, NotFoundError, PermissionDeniedError
from realtime.publisher import publish
from transcriptions.models import Batch, BatchItem, BatchItemStatus, BatchStatus

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("transcriptions.batches")

# operation type -> start(batch, item) → ref id (run/audit id) or None when the item ended at once
StartItem = Callable[[Batch, BatchItem], str | None]
_operations: dict[str, StartItem] = {}


def register_operation(operation_type: str, start: StartItem) -> None:
    _operations[operation_type] = start


def batch_create(
    *, user: User, operation_type: str, fiche_ids: list[str], options: dict[str, Any], max_items: int, permission: str
) -> Batch:
    """A batch of ``fiche_ids`` (deduplicated, order kept); its items start in the background."""
    ids = list(dict.fromkeys(str(f).strip() for f in fiche_ids if str(f).strip()))
    if not ids:
        raise InvalidInput("fiche_ids must hold at least one fiche id.", details={"fiche_ids": fiche_ids})
    if len(ids) > max_items:
        raise InvalidInput(
            f"At most {max_items} fiches per batch; got {len(ids)}.",
            code="batch_too_large",
            details={"max": max_items, "got": len(ids)},
        )
    scope = scope_for(user, permission, "write")
    if scope is None:
        raise PermissionDeniedError(
            f"Missing permission {permission}.write.", details={"required": f"{permission}.write"}
        )
    with transaction.atomic():
        batch = Batch.objects.create(
            operation_type=operation_type,
            total=len(ids),
            options=options,
            requested_by=user,
            scope_snapshot={"kind": str(scope), "groupes": list(user.groupes or []), "crm_user_id": user.crm_user_id},
        )
        BatchItem.objects.bulk_create(BatchItem(batch=batch, fiche_id=fiche_id) for fiche_id in ids)
        from transcriptions.tasks import batch_start

        transaction.on_commit(lambda: batch_start.delay(str(batch.pk)))
    logger.info("batch_created", extra={"batch_id": str(batch.pk), "operation": operation_type, "total": len(ids)})
    return batch


def batch_start_items(*, batch_id: str) -> int:
    """Start every pending item without a ref (idempotent: a re-run starts only the rest). An item
    whose start fails (unknown fiche, outside the requester's scope, CRM down) ends failed."""
    batch = Batch.objects.filter(pk=batch_id).first()
    if batch is None or batch.status != BatchStatus.RUNNING:
        return 0
    start = _operations[batch.operation_type]
    started = 0
    for item in BatchItem.objects.filter(batch=batch, status=BatchItemStatus.PENDING, ref_id__isnull=True):
        try:
            ref = start(batch, item)
        except ApplicationError as exc:
            batch_item_done(batch_id=str(batch.pk), fiche_id=item.fiche_id, ok=False, error=exc.message)
            continue
        if ref is not None:
            BatchItem.objects.filter(pk=item.pk, ref_id__isnull=True).update(ref_id=ref)
        started += 1
    return started


def batch_item_done(*, batch_id: str, fiche_id: str, ok: bool, error: str | None = None) -> bool:
    """Mark an item ended (once: a duplicate is a no-op) and move the batch's counts in one
    transaction under its row lock; ends the batch when nothing is left. Returns whether anything
    changed."""
    with transaction.atomic():
        batch = Batch.objects.select_for_update().filter(pk=batch_id).first()
        if batch is None:
            return False
        updated = BatchItem.objects.filter(batch=batch, fiche_id=fiche_id, status=BatchItemStatus.PENDING).update(
            status=BatchItemStatus.COMPLETED if ok else BatchItemStatus.FAILED, error=None if ok else error
        )
        if not updated or batch.status != BatchStatus.RUNNING:
            return False
        if ok:
            batch.completed += 1
        else:
            batch.failed += 1
        batch.last_progress_at = timezone.now()
        done = batch.completed + batch.failed
        fields = ["completed", "failed", "last_progress_at"]
        if done >= batch.total:
            batch.status, batch.finished_at = BatchStatus.COMPLETED, timezone.now()
            fields += ["status", "finished_at"]
        batch.save(update_fields=fields)
        publish(
            "batch.progress",
            {
                "batch_id": str(batch.pk),
                "operation_type": batch.operation_type,
                "total": batch.total,
                "completed": batch.completed,
                "failed": batch.failed,
                "progress_percentage": round(done / batch.total * 100) if batch.total else 100,
            },
        )
        if batch.status == BatchStatus.COMPLETED:
            publish(
                "batch.completed",
                {
                    "batch_id": str(batch.pk),
                    "operation_type": batch.operation_type,
                    "total": batch.total,
                    "completed": batch.completed,
                    "failed": batch.failed,
                    "duration_ms": int((timezone.now() - batch.started_at).total_seconds() * 1000),
                },
            )
            logger.info("batch_completed", extra={"batch_id": str(batch.pk), "failed": batch.failed})
        return True


ItemState = Callable[[BatchItem], tuple[bool, str | None] | None]
_item_states: dict[str, ItemState] = {}


def register_item_state(operation_type: str, state: ItemState) -> None:
    """``state(item)`` → ``(ok, error)`` when the item's work has ended, else ``None`` (the
    reconciler's way to finish items whose end report was lost)."""
    _item_states[operation_type] = state


def batch_reconcile(*, now: datetime | None = None) -> dict[str, list[str]]:
    """Every batch ends (beat): items whose work ended are reported; items never started are
    started again; a batch without progress for ``BATCH_DEADLINE_SECONDS`` ends with its pending
    items failed ("timed out")."""
    now = now or timezone.now()
    deadline = timedelta(seconds=settings.BATCH_DEADLINE_SECONDS)
    actions: dict[str, list[str]] = {"reported": [], "restarted": [], "timed_out": []}
    for batch in Batch.objects.filter(status=BatchStatus.RUNNING):
        state = _item_states.get(batch.operation_type)
        pending = list(BatchItem.objects.filter(batch=batch, status=BatchItemStatus.PENDING))
        for item in pending:
            if item.ref_id is None:
                continue
            ended = state(item) if state else None
            if ended is not None and batch_item_done(
                batch_id=str(batch.pk), fiche_id=item.fiche_id, ok=ended[0], error=ended[1]
            ):
                actions["reported"].append(f"{batch.pk}:{item.fiche_id}")
        if any(item.ref_id is None for item in pending):
            actions["restarted"].append(str(batch.pk))
        progressed = batch.last_progress_at or batch.started_at
        if now - progressed > deadline:
            for item in BatchItem.objects.filter(batch=batch, status=BatchItemStatus.PENDING):
                batch_item_done(batch_id=str(batch.pk), fiche_id=item.fiche_id, ok=False, error="timed out")
            actions["timed_out"].append(str(batch.pk))
    return actions


def batch_for_user(user: User, batch_id: object) -> dict[str, Any]:
    """``{batch_id, operation_type, total, completed, failed, status, started_at, finished_at}`` for
    the batch's requester or a user with scope ALL on the batch's permission."""
    key = _uuid_or_none(batch_id)
    batch = Batch.objects.filter(pk=key).first() if key is not None else None
    if batch is None:
        raise NotFoundError(f"No batch {batch_id}.", code="batch_not_found", details={"batch_id": str(batch_id)})
    permission = "transcriptions" if batch.operation_type == "transcription" else "audits"
    if batch.requested_by_id != user.pk and str(scope_for(user, permission, "read")) != "ALL":
        raise PermissionDeniedError("This batch belongs to another user.", details={"batch_id": str(batch_id)})
    return {
        "batch_id": str(batch.pk),
        "operation_type": batch.operation_type,
        "total": batch.total,
        "completed": batch.completed,
        "failed": batch.failed,
        "status": batch.status,
        "started_at": batch.started_at.isoformat(),
        "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
    }


def _uuid_or_none(value: object) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None
