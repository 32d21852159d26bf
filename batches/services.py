"""Batches of fiches (transcriptions, audits): created with one item per fiche, started in the
background, and ended exactly once when every item is done. Counts move only through the serialized
updater (the batch's row lock is the fence); ``batch.progress`` and ``batch.completed`` go to the
global channel (ids only: every user is on it) and, whole, to the requester's own channel
``private-user-{id}``. A reconciler (beat, ``batches.tasks.reconcile_batches``) ends batches whose
items all ended.

The operation of an item is registered per ``operation_type`` (``register_operation``, from the app
that owns the work: transcriptions, audits): it starts the item's work and later reports the item's
end with ``batch_item_done`` (``batch_ref_done`` also ends the items of other batches that followed
the same work, e.g. an audit already running for the fiche).

Each item is started exactly once: a pass (the first one, or the reconciler's re-drive, possibly at
the same time) claims the item with one conditional update of its ``ref_id`` (``NULL`` → a claim
token) before starting it, and swaps the token for the started run/audit id after. A pass that
loses the claim skips the item; a claim older than ``BATCH_ITEM_CLAIM_LEASE_SECONDS`` (a killed
worker) is taken over.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.grants import Scope, scope_for
from accounts.permissions import can_access
from batches.models import Batch, BatchItem, BatchItemStatus, BatchStatus
from core.dispatch import dispatch_on_commit
from core.exceptions import ApplicationError, InvalidInput, NotFoundError, PermissionDeniedError
from core.limits import throttle_spend
from fiches.models import FicheCache
from realtime.publisher import publish

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("batches.services")

# operation type -> start(batch, item) → ref id (run/audit id) or None when the item ended at once
StartItem = Callable[[Batch, BatchItem], str | None]
_operations: dict[str, StartItem] = {}
# operation type -> the permission key whose scope ALL may read any batch of that type
_permissions: dict[str, str] = {}


def register_operation(operation_type: str, start: StartItem, *, permission: str) -> None:
    """``start(batch, item)`` starts one item's work; ``permission`` (``transcriptions``, ``audits``):
    a user with scope ALL on it may read every batch of this type (``batch_for_user``)."""
    _operations[operation_type] = start
    _permissions[operation_type] = permission


def batch_create(
    *,
    user: User,
    operation_type: str,
    fiche_ids: list[str],
    options: dict[str, Any],
    max_items: int,
    permission: str,
    spend_kind: str | None = None,
) -> Batch:
    """A batch of ``fiche_ids`` (deduplicated, order kept); its items start in the background.
    ``spend_kind``: the user's spending budget the batch counts against, one unit per fiche
    (checked after the size and the grant, before anything is created)."""
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
    check_batch_scope(user=user, fiche_ids=ids, app=permission)
    if spend_kind is not None:
        throttle_spend(user, spend_kind, cost=len(ids))
    with transaction.atomic():
        batch = Batch.objects.create(
            operation_type=operation_type,
            total=len(ids),
            options=options,
            requested_by=user,
            scope_snapshot={"kind": str(scope), "groupes": list(user.groupes or []), "crm_user_id": user.crm_user_id},
        )
        BatchItem.objects.bulk_create(BatchItem(batch=batch, fiche_id=fiche_id) for fiche_id in ids)
        from batches.tasks import batch_start  # the tasks module imports this one

        dispatch_on_commit(batch_start, str(batch.pk))  # a broker down: the reconciler starts the items
    logger.info("batch_created", extra={"batch_id": str(batch.pk), "operation": operation_type, "total": len(ids)})
    return batch


def check_batch_scope(*, user: User, fiche_ids: list[str], app: str) -> None:
    """Before anything is fetched or queued: every fiche must be in the user's ``app`` write scope on what
    we hold. With ALL scope every fiche is (uncached ones are fetched when their turn comes); for anyone
    else an uncached fiche cannot be proven theirs, so it is refused together with the foreign ones — one
    403 listing every refused id as given, which never tells a foreign id from an unknown one."""
    wanted = list(dict.fromkeys(str(f).strip() for f in fiche_ids))
    if scope_for(user, app, "write") == Scope.ALL:
        return
    rows = {row.fiche_id: row for row in FicheCache.objects.filter(fiche_id__in=wanted)}
    refused = [f for f in wanted if f not in rows or not can_access(user, app, rows[f], action="write")]
    if refused:
        raise PermissionDeniedError(
            f"Some fiches are not in your {app} scope (a fiche must be cached to be in it).",
            code="scope_denied",
            details={"fiche_ids": refused},
        )


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


def batch_item_fiche(batch: Batch, item: BatchItem, *, app: str) -> FicheCache:
    """The item's fiche with its details (fetched from the CRM when missing), refused when it is outside
    the requester's ``app`` scope as it was when the batch was made: an operation's first step."""
    from fiches.services.access import fiche_with_details

    fiche = fiche_with_details(fiche_id=item.fiche_id)
    if not in_snapshot_scope(fiche, batch.scope_snapshot):
        raise PermissionDeniedError(f"outside the requester's {app} scope")
    return fiche


CLAIM_PREFIX = "claim:"


def is_claim(ref_id: str | None) -> bool:
    """Whether an item's ``ref_id`` is a pass's claim (being started) rather than a run/audit id."""
    return ref_id is not None and ref_id.startswith(CLAIM_PREFIX)


def _claim_lease() -> timedelta:
    return timedelta(seconds=settings.BATCH_ITEM_CLAIM_LEASE_SECONDS)


def _startable(batch: Batch, now: datetime) -> Q:
    """Pending items nobody started: no ref yet, or a claim whose lease ran out."""
    return Q(batch=batch, status=BatchItemStatus.PENDING) & (
        Q(ref_id__isnull=True) | Q(ref_id__startswith=CLAIM_PREFIX, updated_at__lt=now - _claim_lease())
    )


def _claim(item: BatchItem) -> str | None:
    """Take the item's start with one conditional update on what we read of it (no ref, or the same
    stale claim); ``None`` when another pass took it, started it, or ended it meanwhile."""
    now = timezone.now()
    token = f"{CLAIM_PREFIX}{uuid.uuid4().hex}"
    rows = BatchItem.objects.filter(_startable(item.batch, now), pk=item.pk)
    rows = rows.filter(ref_id__isnull=True) if item.ref_id is None else rows.filter(ref_id=item.ref_id)
    return token if rows.update(ref_id=token, updated_at=now) == 1 else None


def _settle(item: BatchItem, token: str, ref: str | None) -> bool:
    """Swap our claim for what the start gave (the run/audit id; ``None``: nothing to follow)."""
    return BatchItem.objects.filter(pk=item.pk, ref_id=token).update(ref_id=ref, updated_at=timezone.now()) == 1


def batch_start_items(*, batch_id: str) -> int:
    """Start every pending item nobody started (idempotent: a re-run, or a reconciler pass running
    beside this one, starts only the rest; each item is claimed first, so it starts exactly once).
    An item whose start fails (unknown fiche, outside the requester's scope, CRM down) ends failed;
    one whose work has already ended (it followed running work that ended meanwhile) ends with it."""
    batch = Batch.objects.filter(pk=batch_id).first()
    if batch is None or batch.status != BatchStatus.RUNNING:
        return 0
    start = _operations[batch.operation_type]
    started = 0
    for item in BatchItem.objects.filter(_startable(batch, timezone.now())).order_by("id"):
        item.batch = batch
        token = _claim(item)
        if token is None:
            continue
        try:
            ref = start(batch, item)
        except ApplicationError as exc:
            batch_item_done(batch_id=str(batch.pk), fiche_id=item.fiche_id, ok=False, error=exc.message)
            _settle(item, token, None)
            continue
        except BaseException:  # infrastructure: the task retries, or the reconciler re-drives the item
            try:
                _settle(item, token, None)
            except Exception:
                logger.warning("batch_item_release_failed", extra={"batch_id": batch_id, "fiche_id": item.fiche_id})
            raise
        if not _settle(item, token, ref):
            logger.warning(
                "batch_item_claim_lost", extra={"batch_id": batch_id, "fiche_id": item.fiche_id, "ref_id": ref}
            )
            continue
        started += 1
        if ref is not None:
            item.ref_id = ref
            _report_if_ended(batch, item)
    return started


def _report_if_ended(batch: Batch, item: BatchItem) -> None:
    """An item that followed work already going (another request's audit or run) may have missed its
    end between the start and the ref being stored: report it now rather than at the reconciler's pass."""
    state = _item_states.get(batch.operation_type)
    ended = state(item) if state else None
    if ended is not None:
        batch_item_done(batch_id=str(batch.pk), fiche_id=item.fiche_id, ok=ended[0], error=ended[1])


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
            user_id=batch.requested_by_id,  # whole to its requester; ids only on the global channel
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
                user_id=batch.requested_by_id,
            )
            logger.info("batch_completed", extra={"batch_id": str(batch.pk), "failed": batch.failed})
        return True


def batch_ref_done(*, operation_type: str, fiche_id: str, ref_id: str, ok: bool, error: str | None = None) -> int:
    """The work ``ref_id`` (an audit, a run) ended: end every pending item of a running batch that
    follows it, whichever batch started it (a batch item that found the same work already running
    follows it instead of starting a second one). Returns how many items ended now."""
    running = list(
        Batch.objects.filter(status=BatchStatus.RUNNING, operation_type=operation_type).values_list("pk", flat=True)
    )
    if not running:
        return 0
    followers = BatchItem.objects.filter(
        batch_id__in=running, fiche_id=fiche_id, ref_id=ref_id, status=BatchItemStatus.PENDING
    ).values_list("batch_id", flat=True)
    return sum(
        batch_item_done(batch_id=str(batch_id), fiche_id=fiche_id, ok=ok, error=error) for batch_id in list(followers)
    )


ItemState = Callable[[BatchItem], tuple[bool, str | None] | None]
_item_states: dict[str, ItemState] = {}


def register_item_state(operation_type: str, state: ItemState) -> None:
    """``state(item)`` → ``(ok, error)`` when the item's work has ended, else ``None`` (the
    reconciler's way to finish items whose end report was lost)."""
    _item_states[operation_type] = state


ItemsWaiting = Callable[[list[str]], bool]
_items_waiting: dict[str, ItemsWaiting] = {}


def register_items_waiting(operation_type: str, waiting: ItemsWaiting) -> None:
    """``waiting(ref_ids)`` → whether any of these items' work is waiting on purpose (for the daily budget):
    its batch is then not timed out, it waits as long as its work does."""
    _items_waiting[operation_type] = waiting


def batch_reconcile(*, now: datetime | None = None) -> dict[str, list[str]]:
    """Every batch ends (beat): items whose work ended are reported; items never started, or whose
    start's claim outlived ``BATCH_ITEM_CLAIM_LEASE_SECONDS``, are started again (their batch is listed
    under ``restarted``; an item a pass is starting right now is left to it); a batch without progress
    for ``BATCH_DEADLINE_SECONDS`` ends with its pending items failed ("timed out"), unless some of its work waits
    for the daily budget (``register_items_waiting``)."""
    now = now or timezone.now()
    deadline = timedelta(seconds=settings.BATCH_DEADLINE_SECONDS)
    actions: dict[str, list[str]] = {"reported": [], "restarted": [], "timed_out": []}
    for batch in Batch.objects.filter(status=BatchStatus.RUNNING):
        state = _item_states.get(batch.operation_type)
        pending = list(BatchItem.objects.filter(batch=batch, status=BatchItemStatus.PENDING))
        for item in pending:
            if item.ref_id is None or is_claim(item.ref_id):
                continue
            ended = state(item) if state else None
            if ended is not None and batch_item_done(
                batch_id=str(batch.pk), fiche_id=item.fiche_id, ok=ended[0], error=ended[1]
            ):
                actions["reported"].append(f"{batch.pk}:{item.fiche_id}")
        stale_claim = now - _claim_lease()
        if any(item.ref_id is None or (is_claim(item.ref_id) and item.updated_at < stale_claim) for item in pending):
            actions["restarted"].append(str(batch.pk))
        progressed = batch.last_progress_at or batch.started_at
        waiting = _items_waiting.get(batch.operation_type)
        refs = [item.ref_id for item in pending if item.ref_id and not is_claim(item.ref_id)]
        if now - progressed > deadline and waiting is not None and refs and waiting(refs):
            continue  # its work waits for the daily budget: so does the batch, without a deadline
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
    permission = _permissions.get(batch.operation_type)
    if batch.requested_by_id != user.pk and (permission is None or str(scope_for(user, permission, "read")) != "ALL"):
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
