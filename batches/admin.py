"""The ops console for batches: each batch with its items (read-only)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from batches.models import Batch, BatchItem


class BatchItemInline(admin.TabularInline):
    model = BatchItem
    extra = 0
    can_delete = False
    fields = ("fiche_id", "status", "ref_id", "error", "updated_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ("id", "operation_type", "status", "total", "completed", "failed", "started_at", "finished_at")
    list_filter = ("operation_type", "status")
    readonly_fields = [f.name for f in Batch._meta.fields]
    inlines = [BatchItemInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
