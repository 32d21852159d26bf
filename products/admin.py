"""The ops console for products: search by name or code, filter by status, and the product's audit
configs edited inline in position order (the first active one audits the product's fiches)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from products.models import Product, ProductAuditConfig
from products.selectors import product_conflict


class ProductForm(forms.ModelForm):
    """Refuses a name or code another product has up to case and accents (as the API does)."""

    class Meta:
        model = Product
        fields = ("name", "code", "description", "is_active")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        name, code = cleaned.get("name"), cleaned.get("code")
        if name and code:
            conflict = product_conflict(name=name, code=code, exclude_id=self.instance.pk)
            if conflict is not None:
                field, other_id = conflict
                self.add_error(field, f"Product {other_id} already has this {field} (up to case and accents).")
        return cleaned


class ProductAuditConfigInline(admin.TabularInline):
    model = ProductAuditConfig
    extra = 1
    fields = ("position", "audit_config")
    ordering = ("position", "id")


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    form = ProductForm
    list_display = ("name", "code", "is_active", "configs", "updated_at")
    list_filter = ("is_active",)
    search_fields = ("name", "code")
    fields = ("name", "code", "description", "is_active", "created_at", "updated_at")
    readonly_fields = ("created_at", "updated_at")
    inlines = [ProductAuditConfigInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Product]:
        return super().get_queryset(request).annotate(configs_count=Count("config_links"))

    @admin.display(description="audit configs", ordering="configs_count")
    def configs(self, obj: Product) -> int:
        return getattr(obj, "configs_count", 0)
