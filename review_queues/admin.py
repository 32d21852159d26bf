"""The ops console for review queues: queues edited here (rules, sample, configs and groups) with their
whole-queue progress (the admin is staff-only: every queue's figures, whatever the staff user's audits
scope) and a backfill action; items read-only, with an action that returns claimed items to the queue."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from core.admin_views import ReadOnlyAdminMixin
from review_queues import selectors, services
from review_queues.models import ItemState, QueueItem, ReviewQueue

BACKFILL_DAYS = 30


@admin.register(ReviewQueue)
class ReviewQueueAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "is_active",
        "sample_percent",
        "waiting",
        "claimed",
        "done",
        "median_review_seconds",
        "items_link",
        "updated_at",
    )
    list_filter = ("is_active",)
    search_fields = ("name", "description")
    filter_horizontal = ("configs",)
    readonly_fields = ("created_by", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description", "is_active")}),
        (
            "Rules: which completed audits enter",
            {"fields": ("include_rejet", "include_needs_review", "include_uncertain", "include_untrusted")},
        ),
        ("Sample of the others", {"fields": ("sample_percent", "seed")}),
        ("Restricted to (none: all)", {"fields": ("configs", "groupes")}),
        ("History", {"fields": ("created_by", "created_at", "updated_at")}),
    )
    actions = ["backfill"]

    def save_model(self, request: HttpRequest, obj: ReviewQueue, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        obj.groupes = sorted({g.strip() for g in obj.groupes if g and g.strip()})  # as the API stores them
        super().save_model(request, obj, form, change)

    def _progress(self, obj: ReviewQueue) -> dict[str, Any]:
        """The whole queue's figures, once per row (expired claims count as waiting)."""
        figures = getattr(obj, "_progress", None)
        if figures is None:
            figures = selectors.progress(QueueItem.objects.filter(queue=obj))
            obj._progress = figures  # type: ignore[attr-defined]
        return figures

    @admin.display(description="waiting")
    def waiting(self, obj: ReviewQueue) -> int:
        return int(self._progress(obj)["waiting"])

    @admin.display(description="claimed")
    def claimed(self, obj: ReviewQueue) -> int:
        return int(self._progress(obj)["claimed"])

    @admin.display(description="done")
    def done(self, obj: ReviewQueue) -> int:
        return int(self._progress(obj)["done"])

    @admin.display(description="median review (s)")
    def median_review_seconds(self, obj: ReviewQueue) -> float | str:
        seconds = self._progress(obj)["median_review_seconds"]
        return "—" if seconds is None else float(seconds)

    @admin.display(description="items")
    def items_link(self, obj: ReviewQueue) -> str:
        url = reverse("admin:review_queues_queueitem_changelist") + f"?queue__id__exact={obj.pk}"
        return format_html('<a href="{}">items</a>', url)

    @admin.action(description=f"Backfill: enter audits completed in the last {BACKFILL_DAYS} days")
    def backfill(self, request: HttpRequest, queryset: QuerySet[ReviewQueue]) -> None:
        date_from = timezone.localdate() - timedelta(days=BACKFILL_DAYS)
        for queue in queryset.prefetch_related("configs").order_by("name", "pk"):
            if not queue.is_active:
                self.message_user(request, f"{queue.name}: inactive, nothing entered.", messages.WARNING)
                continue
            counts = services.backfill(queue, date_from=date_from, date_to=None)
            self.message_user(
                request,
                f"{queue.name}: {counts['entered']} audit(s) entered by the rules and the sample, "
                f"{counts['sample_floor']} more for agents' closed weeks without any (sample floor).",
                messages.SUCCESS,
            )


@admin.register(QueueItem)
class QueueItemAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: items enter through the rules and the sample, are claimed and done through the API. The
    one change here: claimed items back to waiting (a reviewer gone with a live lease)."""

    list_display = (
        "id",
        "queue",
        "audit_link",
        "state_shown",
        "reasons_list",
        "priority",
        "agent",
        "week",
        "claimed_by",
        "lease_expires_at",
        "done_at",
    )
    list_filter = ("queue", "state")
    search_fields = ("audit__id", "audit__fiche__fiche_id", "agent")
    list_select_related = ("queue", "audit__fiche", "claimed_by")
    fields = (
        "queue",
        "audit_link",
        "state_shown",
        "reasons_list",
        "priority",
        "agent",
        "week",
        "entered_at",
        "claimed_by",
        "claimed_at",
        "lease_expires_at",
        "done_at",
    )
    readonly_fields = fields
    actions = ["return_to_queue"]

    def has_return_permission(self, request: HttpRequest) -> bool:
        """The action changes items: the model's real change permission, though the form is read-only."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    @admin.display(description="audit", ordering="audit__created_at")
    def audit_link(self, obj: QueueItem) -> str:
        url = reverse("admin:audits_audit_change", args=[obj.audit_id])
        return format_html(
            '<a href="{}" title="audit {}" style="white-space:nowrap">{} · fiche {}</a>',
            url,
            obj.audit_id,
            str(obj.audit_id)[:8],
            obj.audit.fiche.fiche_id,
        )

    @admin.display(description="state", ordering="state")
    def state_shown(self, obj: QueueItem) -> str:
        if obj.state == ItemState.CLAIMED and obj.lease_expires_at and obj.lease_expires_at <= timezone.now():
            return "claimed, lease expired (waiting again)"
        return obj.state

    @admin.display(description="reasons")
    def reasons_list(self, obj: QueueItem) -> str:
        return ", ".join(obj.reasons)

    @admin.action(description="Return to queue (claimed items back to waiting)", permissions=["return"])
    def return_to_queue(self, request: HttpRequest, queryset: QuerySet[QueueItem]) -> None:
        selected = queryset.count()
        with transaction.atomic():
            claimed = list(
                QueueItem.objects.select_for_update()
                .filter(pk__in=queryset.values("pk"), state=ItemState.CLAIMED)
                .values_list("pk", "queue_id")
            )
            QueueItem.objects.filter(pk__in=[pk for pk, _ in claimed], state=ItemState.CLAIMED).update(
                state=ItemState.WAITING, claimed_by=None, claimed_at=None, lease_expires_at=None
            )
        for queue_id in sorted({q for _, q in claimed}):
            services.announce(queue_id)
        self.message_user(request, f"Returned {len(claimed)} item(s) to the queue.", messages.SUCCESS)
        if selected > len(claimed):
            self.message_user(
                request, f"{selected - len(claimed)} item(s) were not claimed and stayed as they were.", messages.INFO
            )
