from urllib.parse import urlsplit

from django.contrib import admin, messages

from realtime import webhooks
from realtime.models import DeliveryStatus, WebhookDelivery, WebhookDeliveryAttempt


class AttemptInline(admin.TabularInline):
    model = WebhookDeliveryAttempt
    extra = 0
    can_delete = False
    fields = (
        "number",
        "trigger",
        "started_at",
        "duration_ms",
        "response_status",
        "error",
        "request_headers",
        "response_headers",
        "response_body",
        "task_id",
    )
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "status",
        "event",
        "source",
        "source_id",
        "destination_host",
        "attempts",
        "last_status_code",
        "next_retry_at",
        "created_at",
    )
    list_filter = ("status", "source", "event")
    search_fields = ("source_id", "webhook_id", "url")
    exclude = ("secret",)
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields if f.name != "secret"] + ["secret_set"]
    inlines = [AttemptInline]
    actions = ["retry_now", "cancel_pending"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="signing secret")
    def secret_set(self, obj):
        return "set (hidden)" if obj.secret else "none"

    @admin.display(description="destination")
    def destination_host(self, obj):
        return urlsplit(obj.url).netloc

    @admin.action(description="Retry now (manual redelivery, same webhook-id)")
    def retry_now(self, request, queryset):
        done = 0
        for delivery in queryset.exclude(status=DeliveryStatus.PENDING):
            webhooks.delivery_redeliver(delivery=delivery)
            done += 1
        self.message_user(
            request, f"Redelivery queued for {done} delivery(ies); pending ones were skipped.", messages.SUCCESS
        )

    @admin.action(description="Cancel pending deliveries")
    def cancel_pending(self, request, queryset):
        done = sum(webhooks.delivery_cancel(delivery=d) for d in queryset)
        self.message_user(request, f"Cancelled {done} pending delivery(ies).", messages.SUCCESS)
