"""Reads of review queues: progress figures, the queue and item shapes of the API (items filtered by the
reader's audits write scope: ``services.items_in_scope``)."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from accounts.grants import Scope, scope_for
from accounts.permissions import scope_queryset
from audits.selectors import audit_summary_dict
from core.formats import iso
from review_queues.models import ItemState, QueueItem, ReviewQueue

if TYPE_CHECKING:
    from accounts.models import User


def items_in_scope(user: User, queryset: QuerySet[QueueItem]) -> QuerySet[QueueItem]:
    """Items whose audit is in the user's ``audits`` write scope."""
    return scope_queryset(
        queryset,
        user,
        "audits",
        action="write",
        group_field="audit__fiche__groupe",
        user_field="audit__fiche__crm_user_id",
    )


def whole_queue_visible(user: User, queue: ReviewQueue) -> bool:
    """Whether every audit the queue can hold is inside the user's ``audits`` write scope."""
    scope = scope_for(user, "audits", "write")
    if scope == Scope.ALL:
        return True
    if scope == Scope.GROUP:
        groupes = set(user.groupes or [])
        # The queue's rule and what it holds: an edit that narrowed its groups leaves the items it had.
        return (
            bool(queue.groupes)
            and set(queue.groupes) <= groupes
            and not QueueItem.objects.filter(queue=queue).exclude(audit__fiche__groupe__in=groupes).exists()
        )
    return False


def progress(items: QuerySet[QueueItem]) -> dict[str, Any]:
    """Waiting (an expired claim counts as waiting), claimed, done, and the median seconds from claim to
    review of the done items."""
    now = timezone.now()
    expired = Q(state=ItemState.CLAIMED) & (Q(lease_expires_at__lte=now) | Q(lease_expires_at__isnull=True))
    counts = items.aggregate(
        waiting=Count("pk", filter=Q(state=ItemState.WAITING) | expired),
        claimed=Count("pk", filter=Q(state=ItemState.CLAIMED, lease_expires_at__gt=now)),
        done=Count("pk", filter=Q(state=ItemState.DONE)),
    )
    spans = items.filter(state=ItemState.DONE, claimed_at__isnull=False, done_at__isnull=False)
    durations = [
        (done - claimed).total_seconds()
        for done, claimed in spans.values_list("done_at", "claimed_at")
        if done and claimed
    ]
    median = statistics.median(durations) if durations else None
    return {**counts, "median_review_seconds": None if median is None else round(median, 1)}


def queue_dict(
    queue: ReviewQueue, *, figures: dict[str, Any] | None = None, whole: bool | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": queue.pk,
        "name": queue.name,
        "description": queue.description,
        "is_active": queue.is_active,
        "rules": {
            "rejet": queue.include_rejet,
            "needs_review": queue.include_needs_review,
            "uncertain": queue.include_uncertain,
            "untrusted": queue.include_untrusted,
            "sample_percent": queue.sample_percent,
            "seed": queue.seed,
        },
        "audit_config_ids": sorted(c.pk for c in queue.configs.all()),
        "groupes": list(queue.groupes),
        "created_at": iso(queue.created_at),
        "updated_at": iso(queue.updated_at),
    }
    if figures is not None:
        data["progress"] = {**figures, "scope": "queue" if whole else "yours"}
    return data


def queue_progress_for(user: User, queue: ReviewQueue) -> tuple[dict[str, Any], bool]:
    """The figures the user may read: the whole queue's when it all lies in their scope, else their part."""
    whole = whole_queue_visible(user, queue)
    items = QueueItem.objects.filter(queue=queue)
    return progress(items if whole else items_in_scope(user, items)), whole


def item_dict(item: QueueItem, *, counts: bool | None = None) -> dict[str, Any]:
    return {
        "id": item.pk,
        "queue_id": item.queue_id,
        "state": item.state,
        "reasons": list(item.reasons),
        "agent": item.agent,
        "week": item.week.isoformat(),
        "entered_at": iso(item.entered_at),
        "claimed_by": item.claimed_by.email if item.claimed_by else None,
        "claimed_at": iso(item.claimed_at),
        "lease_expires_at": iso(item.lease_expires_at),
        "done_at": iso(item.done_at),
        "audit": audit_summary_dict(item.audit, counts=counts),
    }


def items_with_audits(items: QuerySet[QueueItem]) -> QuerySet[QueueItem]:
    return items.select_related("audit__fiche", "audit__config_version", "claimed_by")
