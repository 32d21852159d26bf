"""Review queues: entering audits (rules and the stratified sample), claiming the next item under a lease,
the item done when its reviewer reviews the audit, and the queue's progress announced on its channel.

**The sample.** An audit no rule lets in is sampled when ``u(seed, audit) < sample_percent / 100``, where
``u`` is a uniform number from the hash of the queue's seed and the audit's id: the same seed and audits,
the same sample, whatever the order they complete in. Per agent per week of the sale (the stratum), a
**closed** week (before the current one) without any item gets its audit of smallest ``u`` (``sample_floor``)
from the backfill and the beat sweep, so every agent gets reviewed every week, and an agent cannot tell which
of their sales will be picked.

**Claims.** ``item_claim_next`` takes the first waiting item (rules before samples, oldest first) inside the
reviewer's ``audits`` write scope with ``SELECT … FOR UPDATE SKIP LOCKED``: two reviewers pulling at once
never get the same one. The claim lasts ``REVIEW_QUEUE_LEASE_SECONDS`` unless renewed; an expired claim is
waiting again for the next pull (and the sweep gives it back). A reviewer holding a live claim in the
queue gets that item again instead of a second one. The item is done when its claimant posts a review of the
audit (``audits.services.reviews.audit_reviewed``).

**Who sees what.** Items are filtered by the reviewer's ``audits`` write scope. A queue's whole-queue progress
(API and the ``private-review-queue-{id}`` channel) goes only to a user whose write scope holds every audit the
queue can hold (ALL, or GROUP covering the queue's groups); anyone else gets the figures of their scope from
the API and cannot subscribe to the channel.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DateField, Exists, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Coalesce, TruncWeek
from django.utils import timezone

from accounts.grants import has_grant
from audits.models import Audit, AuditConfig, AuditPurpose, AuditStatus, ControlPointResult, Niveau, PointStatus
from core.dispatch import send
from core.exceptions import ConflictError, InvalidInput, NotFoundError, PermissionDeniedError
from realtime.publisher import publish
from review_queues.models import ItemReason, ItemState, QueueItem, ReviewQueue
from review_queues.selectors import items_in_scope, progress, whole_queue_visible

if TYPE_CHECKING:
    from accounts.models import User
    from audits.services.reviews import Reviewed

logger = logging.getLogger("review_queues")

RULE_PRIORITY, SAMPLE_PRIORITY = 0, 1
FLOOR_WEEKS = 2  # the sweep tops up the weeks of sale closed in the last two weeks


# --- Queues -------------------------------------------------------------------------------------------

QUEUE_FIELDS = (
    "name",
    "description",
    "is_active",
    "include_rejet",
    "include_needs_review",
    "include_uncertain",
    "include_untrusted",
    "sample_percent",
    "seed",
    "groupes",
)


def queue_get(queue_id: object) -> ReviewQueue:
    try:
        key = int(str(queue_id))
    except ValueError:
        key = None
    queue = ReviewQueue.objects.prefetch_related("configs").filter(pk=key).first() if key is not None else None
    if queue is None:
        raise NotFoundError(f"No review queue {queue_id}.", code="review_queue_not_found")
    return queue


def _set_configs(queue: ReviewQueue, config_ids: list[int]) -> None:
    found = set(AuditConfig.objects.filter(pk__in=config_ids).values_list("pk", flat=True))
    missing = sorted(set(config_ids) - found)
    if missing:
        raise InvalidInput("Unknown audit config(s).", details={"audit_config_ids": missing})
    queue.configs.set(sorted(found))


def queue_save(*, data: dict[str, Any], user: User | None, queue: ReviewQueue | None = None) -> ReviewQueue:
    """Create a queue (``queue`` None) or apply a partial edit; ``audit_config_ids`` replaces the configs."""
    with transaction.atomic():
        queue = queue or ReviewQueue(created_by=user)
        for field in QUEUE_FIELDS:
            if field in data:
                setattr(queue, field, data[field])
        if "groupes" in data:
            queue.groupes = sorted({g.strip() for g in data["groupes"] if g and g.strip()})
        queue.full_clean(exclude=["configs"])
        queue.save()
        if "audit_config_ids" in data:
            _set_configs(queue, data["audit_config_ids"])
    logger.info("review_queue_saved", extra={"queue_id": queue.pk})
    return queue_get(queue.pk)


def queue_delete(*, queue: ReviewQueue) -> None:
    queue_id = queue.pk
    queue.delete()
    logger.info("review_queue_deleted", extra={"queue_id": queue_id})


def require_active(queue: ReviewQueue) -> None:
    if not queue.is_active:
        raise ConflictError(f"Review queue {queue.pk} is inactive.", code="review_queue_inactive")


# --- Entering audits ------------------------------------------------------------------------------------


def sample_draw(seed: int, audit_id: object) -> float:
    """The audit's uniform number in [0, 1) for a queue's seed (reproducible)."""
    digest = hashlib.sha256(f"{seed}:{audit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def week_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _candidates(queue: ReviewQueue, audits: QuerySet[Audit]) -> QuerySet[Audit]:
    """Completed audits of ``audits`` the queue's configs and groups admit, with the rule flags."""
    rows = audits.filter(status=AuditStatus.COMPLETED, purpose=AuditPurpose.PRODUCTION)  # never an evaluation's
    config_ids = [c.pk for c in queue.configs.all()]
    if config_ids:
        rows = rows.filter(config_id__in=config_ids)
    if queue.groupes:
        rows = rows.filter(fiche__groupe__in=queue.groupes)
    open_points = ControlPointResult.objects.filter(step_result__audit=OuterRef("pk"), human_status__isnull=True)
    return rows.annotate(
        has_uncertain=Exists(open_points.filter(status=PointStatus.UNCERTAIN, advisory=False)),
        has_untrusted=Exists(open_points.filter(advisory=True)),
    )


def _reasons(queue: ReviewQueue, audit: Any) -> list[str]:
    reasons: list[str] = []
    if queue.include_rejet and audit.niveau == Niveau.REJET:
        reasons.append(ItemReason.REJET)
    if queue.include_needs_review and audit.needs_review:
        reasons.append(ItemReason.NEEDS_REVIEW)
    if queue.include_uncertain and audit.has_uncertain:
        reasons.append(ItemReason.UNCERTAIN)
    if queue.include_untrusted and audit.has_untrusted:
        reasons.append(ItemReason.UNTRUSTED)
    return reasons


def _item(queue: ReviewQueue, audit: Any, reasons: list[str], priority: int) -> QueueItem:
    return QueueItem(
        queue=queue,
        audit=audit,
        reasons=reasons,
        priority=priority,
        agent=audit.fiche.crm_user_id or "",
        week=week_of(audit.fiche.sales_date),
    )


def enter_audits(queue: ReviewQueue, audits: QuerySet[Audit]) -> int:
    """Enter the audits the queue's rules or sample pick (already entered ones stay as they are): how many
    entered now."""
    if not queue.is_active:
        return 0
    threshold = queue.sample_percent / 100.0
    items = []
    for audit in _candidates(queue, audits).select_related("fiche").iterator(chunk_size=500):
        reasons = _reasons(queue, audit)
        if reasons:
            items.append(_item(queue, audit, reasons, RULE_PRIORITY))
        elif threshold > 0 and sample_draw(queue.seed, audit.pk) < threshold:
            items.append(_item(queue, audit, [ItemReason.SAMPLE], SAMPLE_PRIORITY))
    return _insert(queue, items)


def _insert(queue: ReviewQueue, items: list[QueueItem]) -> int:
    if not items:
        return 0
    audit_ids = [item.audit_id for item in items]
    held = QueueItem.objects.filter(queue=queue, audit_id__in=audit_ids)
    before = held.count()
    QueueItem.objects.bulk_create(items, ignore_conflicts=True, batch_size=1000)
    entered = held.count() - before  # of these audits only (another writer's inserts are not ours)
    if entered:
        announce(queue.pk)
    return entered


def top_up_closed_weeks(queue: ReviewQueue, audits: QuerySet[Audit], *, today: date | None = None) -> int:
    """Every (agent, closed week of sale) among ``audits`` without any item in the queue gets its audit of
    smallest draw (``sample_floor``)."""
    if not queue.is_active or queue.sample_percent <= 0:
        return 0
    current_week = week_of(today or timezone.localdate())
    # Only the audits of closed weeks whose stratum holds no item yet (the covered ones cost one probe each).
    held = QueueItem.objects.filter(queue=queue, agent=OuterRef("stratum_agent"), week=OuterRef("stratum_week"))
    uncovered = (
        _candidates(queue, audits.filter(fiche__sales_date__lt=current_week))
        .annotate(
            stratum_agent=Coalesce("fiche__crm_user_id", Value("")),
            stratum_week=TruncWeek("fiche__sales_date", output_field=DateField()),
        )
        .exclude(Exists(held))
    )
    strata: dict[tuple[str, date], tuple[float, Any]] = {}
    for audit in uncovered.select_related("fiche").iterator(chunk_size=500):
        week = week_of(audit.fiche.sales_date)
        key = (audit.fiche.crm_user_id or "", week)
        draw = sample_draw(queue.seed, audit.pk)
        if key not in strata or draw < strata[key][0]:
            strata[key] = (draw, audit)
    if not strata:
        return 0
    agents = {agent for agent, _ in strata}
    weeks = {week for _, week in strata}
    covered = set(QueueItem.objects.filter(queue=queue, agent__in=agents, week__in=weeks).values_list("agent", "week"))
    items = [
        _item(queue, audit, [ItemReason.SAMPLE_FLOOR], SAMPLE_PRIORITY)
        for key, (_, audit) in sorted(strata.items())
        if key not in covered
    ]
    return _insert(queue, items)


def backfill(queue: ReviewQueue, *, date_from: date | None, date_to: date | None) -> dict[str, int]:
    """Enter the audits completed in [date_from, date_to] (days, inclusive) as if they completed now, then
    top up the closed weeks among them."""
    audits = Audit.objects.all()
    if date_from is not None:
        audits = audits.filter(completed_at__date__gte=date_from)
    if date_to is not None:
        audits = audits.filter(completed_at__date__lte=date_to)
    entered = enter_audits(queue, audits)
    floor = top_up_closed_weeks(queue, audits)
    logger.info("review_queue_backfilled", extra={"queue_id": queue.pk, "entered": entered, "floor": floor})
    return {"entered": entered, "sample_floor": floor}


def enter_audit(*, audit_id: str) -> int:
    """A completed audit enters every active queue that picks it."""
    audits = Audit.objects.filter(pk=audit_id)
    return sum(enter_audits(q, audits) for q in ReviewQueue.objects.filter(is_active=True).prefetch_related("configs"))


def audit_finished(audit: Audit) -> None:
    """The audits' finish hook (after the commit that ended the audit): enter it through a task."""
    if Audit.objects.filter(pk=audit.pk, status=AuditStatus.COMPLETED).exists():
        from review_queues.tasks import review_queue_enter_audit

        send(review_queue_enter_audit, str(audit.pk))  # a broker down: the sweep enters it


# --- Claims -------------------------------------------------------------------------------------------


def _available(now: datetime) -> Q:
    lapsed = Q(lease_expires_at__lte=now) | Q(lease_expires_at__isnull=True)
    return Q(state=ItemState.WAITING) | (Q(state=ItemState.CLAIMED) & lapsed)


@dataclass(frozen=True)
class Claim:
    item: QueueItem
    resumed: bool  # the reviewer already held it


def _lease() -> timedelta:
    return timedelta(seconds=settings.REVIEW_QUEUE_LEASE_SECONDS)


def item_claim_next(*, queue: ReviewQueue, user: User) -> Claim | None:
    """The reviewer's next item (their live claim if they hold one), or None when nothing is left for them."""
    require_active(queue)
    now = timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:  # one pull per reviewer and queue at a time: never two live claims
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"review-queue:{queue.pk}:{user.pk}"]
            )
        mine = QueueItem.objects.filter(queue=queue, state=ItemState.CLAIMED, claimed_by=user, lease_expires_at__gt=now)
        held = items_in_scope(user, mine).first()
        if held is not None:
            return Claim(held, resumed=True)
        candidates = items_in_scope(user, QueueItem.objects.filter(queue=queue)).filter(_available(now))
        item = (
            candidates.order_by("priority", "entered_at", "id")
            .select_for_update(skip_locked=True, of=("self",))
            .first()
        )
        if item is None:
            return None
        item.state, item.claimed_by, item.claimed_at = ItemState.CLAIMED, user, now
        item.lease_expires_at = now + _lease()
        item.save(update_fields=["state", "claimed_by", "claimed_at", "lease_expires_at"])
        transaction.on_commit(lambda: announce(queue.pk))
    logger.info("review_queue_item_claimed", extra={"queue_id": queue.pk, "item_id": item.pk, "user_id": user.pk})
    return Claim(item, resumed=False)


def _own_item(queue: ReviewQueue, item_id: object, user: User) -> QueueItem:
    try:
        key = int(str(item_id))
    except ValueError:
        key = None
    item = (
        items_in_scope(user, QueueItem.objects.filter(queue=queue))
        .select_for_update(of=("self",))
        .filter(pk=key)
        .first()
        if key is not None
        else None
    )
    if item is None:
        raise NotFoundError(
            f"No item {item_id} in review queue {queue.pk} for you.", code="review_queue_item_not_found"
        )
    if item.state != ItemState.CLAIMED or item.claimed_by_id != user.pk:
        raise ConflictError(
            "This item is not claimed by you (its lease may have expired and another reviewer taken it).",
            code="item_not_claimed_by_you",
            details={"item_id": item.pk, "state": item.state},
        )
    return item


def item_renew(*, queue: ReviewQueue, item_id: object, user: User) -> QueueItem:
    """Extend the reviewer's claim by a full lease (also after it expired, while nobody else took it)."""
    with transaction.atomic():
        item = _own_item(queue, item_id, user)
        item.lease_expires_at = timezone.now() + _lease()
        item.save(update_fields=["lease_expires_at"])
    return item


def item_release(*, queue: ReviewQueue, item_id: object, user: User) -> QueueItem:
    """Give the item back to the queue."""
    with transaction.atomic():
        item = _own_item(queue, item_id, user)
        item.state, item.claimed_by, item.claimed_at, item.lease_expires_at = ItemState.WAITING, None, None, None
        item.save(update_fields=["state", "claimed_by", "claimed_at", "lease_expires_at"])
        transaction.on_commit(lambda: announce(queue.pk))
    return item


def audit_reviewed(reviewed: Reviewed) -> None:
    """The audits' review hook (after the review's commit): the reviewer's claimed items of that audit are done."""
    if reviewed.user is None:
        return
    now = timezone.now()
    with transaction.atomic():
        items = list(
            QueueItem.objects.select_for_update()
            .filter(audit=reviewed.audit, state=ItemState.CLAIMED, claimed_by=reviewed.user)
            .values_list("pk", "queue_id")
        )
        QueueItem.objects.filter(pk__in=[pk for pk, _ in items]).update(state=ItemState.DONE, done_at=now)
    for queue_id in sorted({q for _, q in items}):
        announce(queue_id)
    if items:
        logger.info("review_queue_items_done", extra={"audit_id": str(reviewed.audit.pk), "items": len(items)})


def return_expired() -> list[int]:
    """Expired claims back to waiting; the queues whose progress changed."""
    now = timezone.now()
    with transaction.atomic():
        expired = list(
            QueueItem.objects.select_for_update(skip_locked=True)
            .filter(state=ItemState.CLAIMED, lease_expires_at__lte=now)
            .values_list("pk", "queue_id")
        )
        QueueItem.objects.filter(pk__in=[pk for pk, _ in expired]).update(
            state=ItemState.WAITING, claimed_by=None, claimed_at=None, lease_expires_at=None
        )
    return sorted({q for _, q in expired})


def sweep() -> dict[str, int]:
    """Beat: return expired claims, re-enter the audits completed in the last ``REVIEW_QUEUE_SWEEP_HOURS`` (an
    entry lost with the broker) and top up the weeks of sale closed in the last ``FLOOR_WEEKS``."""
    changed = return_expired()
    for queue_id in changed:
        announce(queue_id)
    since = timezone.now() - timedelta(hours=settings.REVIEW_QUEUE_SWEEP_HOURS)
    recent = Audit.objects.filter(status=AuditStatus.COMPLETED, completed_at__gte=since)
    # The weeks of sale that closed lately (an audit completing a few days after its sale still counts).
    current_week = week_of(timezone.localdate())
    closed = Audit.objects.filter(
        status=AuditStatus.COMPLETED,
        fiche__sales_date__gte=current_week - timedelta(weeks=FLOOR_WEEKS),
        fiche__sales_date__lt=current_week,
    )
    entered = floor = 0
    for queue in ReviewQueue.objects.filter(is_active=True).prefetch_related("configs"):
        # Only the audits this queue holds no item of (those it holds stay as they are).
        missing = recent.exclude(Exists(QueueItem.objects.filter(queue=queue, audit=OuterRef("pk"))))
        entered += enter_audits(queue, missing)
        floor += top_up_closed_weeks(queue, closed)
    return {"returned_queues": len(changed), "entered": entered, "sample_floor": floor}


# --- Progress and who sees it --------------------------------------------------------------------------


def authorize_queue_channel(user: User, queue_id: str) -> None:
    """``private-review-queue-{id}``: audits.write and the whole queue inside the user's scope."""
    if not has_grant(user, "audits", "write"):
        raise PermissionDeniedError("missing audits.write")
    queue = queue_get(queue_id)
    if not whole_queue_visible(user, queue):
        raise PermissionDeniedError(
            "This queue holds audits outside your audits scope: follow your part with GET /api/review-queues/{id}.",
            code="scope_denied",
        )


def announce(queue_id: int) -> None:
    """Publish the queue's whole-queue progress on its channel."""
    figures = progress(QueueItem.objects.filter(queue_id=queue_id))
    publish("review_queue.progress", {"queue_id": str(queue_id), **figures, "status": "progress"})
