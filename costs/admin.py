"""The ops console for costs: the usage rows (read-only, filterable, priced from the current settings) and
the days a budget stopped work."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin_views import ReadOnlyAdminMixin
from costs.models import BudgetExhaustion, UsageRecord
from costs.pricing import cost_expression, currency


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "at",
        "day",
        "kind",
        "purpose",
        "model",
        "prompt_tokens",
        "cached_tokens",
        "completion_tokens",
        "audio_seconds",
        "cost",
        "estimated",
        "user",
        "fiche",
    )
    list_filter = ("kind", "purpose", "day", "model", "estimated")
    search_fields = ("fiche__fiche_id", "user__email", "model", "audit__id")
    list_select_related = ("user", "fiche")
    date_hierarchy = "day"
    readonly_fields = [f.name for f in UsageRecord._meta.fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet[UsageRecord]:
        return super().get_queryset(request).annotate(row_cost=cost_expression())

    @admin.display(description="cost", ordering="row_cost")
    def cost(self, obj: UsageRecord) -> str:
        return f"{getattr(obj, 'row_cost', 0)} {currency()}"


@admin.register(BudgetExhaustion)
class BudgetExhaustionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("day", "kind", "scope", "user", "mode", "limit", "spent", "at", "resumed_at")
    list_filter = ("kind", "mode", "day")
    search_fields = ("user__email",)
    list_select_related = ("user",)
    readonly_fields = [f.name for f in BudgetExhaustion._meta.fields]

    @admin.display(description="scope")
    def scope(self, obj: BudgetExhaustion) -> str:
        return "user" if obj.user_id else "global"
