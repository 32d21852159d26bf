"""The ops console for audits: configs and their versions, audits with filters, and an audit page a
reviewer reads (score and niveau, each step and control point, the timeline with the verified
citations marked where they were said and the rejected ones listed with their reasons)."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from accounts.models import User
from audits import selectors
from audits.models import Audit, AuditConfig, AuditConfigVersion, AuditStepDefinition, HumanReview, RerunEvent
from audits.services.request import audit_request
from core.exceptions import ApplicationError


class AuditConfigVersionInline(admin.TabularInline):
    model = AuditConfigVersion
    extra = 0
    can_delete = False
    fields = ("version", "name", "thresholds", "steps_count", "created_by", "created_at")
    readonly_fields = fields
    ordering = ("-version",)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="steps")
    def steps_count(self, obj: AuditConfigVersion) -> int:
        return obj.steps.count()


@admin.register(AuditConfig)
class AuditConfigAdmin(admin.ModelAdmin):
    """Configs are edited through the API (an edit makes a new version); here they are read and
    (de)activated."""

    list_display = ("id", "name", "is_active", "current_version", "updated_at")
    list_filter = ("is_active",)
    search_fields = ("name",)
    fields = ("name", "description", "is_active", "current_version", "created_by", "created_at", "updated_at")
    readonly_fields = ("name", "description", "current_version", "created_by", "created_at", "updated_at")
    inlines = [AuditConfigVersionInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class AuditStepDefinitionInline(admin.TabularInline):
    model = AuditStepDefinition
    extra = 0
    can_delete = False
    fields = ("position", "name", "weight", "is_critical", "pass_ratio", "instructions")
    readonly_fields = fields
    ordering = ("position",)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(AuditConfigVersion)
class AuditConfigVersionAdmin(admin.ModelAdmin):
    list_display = ("config", "version", "name", "created_at")
    list_filter = ("config",)
    readonly_fields = [f.name for f in AuditConfigVersion._meta.fields]
    inlines = [AuditStepDefinitionInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Audit)
class AuditAdmin(admin.ModelAdmin):
    change_form_template = "admin/audits/audit/change_form.html"
    list_display = (
        "short_id",
        "fiche",
        "config_version",
        "status",
        "niveau",
        "score_percentage",
        "is_compliant",
        "needs_review",
        "tools_mode",
        "created_at",
        "completed_at",
    )
    list_filter = ("status", "niveau", "is_compliant", "needs_review", "tools_mode", "config", "created_at")
    search_fields = ("id", "fiche__fiche_id")
    list_select_related = ("fiche", "config_version")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Audit._meta.fields]
    actions = ["rerun"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # read-only page; runs change through the workflow

    @admin.display(description="audit", ordering="id")
    def short_id(self, obj: Audit) -> str:
        return str(obj.pk)[:8]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        audit = Audit.objects.select_related("fiche", "config_version").filter(pk=object_id).first()
        extra_context = {**(extra_context or {}), "report": selectors.audit_admin_report(audit) if audit else None}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description="Audit these fiches again (same config, its current version)")
    def rerun(self, request: HttpRequest, queryset: QuerySet[Audit]) -> None:
        queued, refused = 0, []
        for audit in queryset.select_related("fiche"):
            try:
                audit_request(
                    fiche=audit.fiche,
                    config_id=audit.config_id,
                    tools_mode=audit.tools_mode,
                    user=cast(User, request.user),
                )
                queued += 1
            except ApplicationError as exc:
                refused.append(f"{audit.fiche.fiche_id}: {exc.message}")
        self.message_user(request, f"Queued {queued} audit(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, "Not queued: " + "; ".join(refused), messages.WARNING)


@admin.register(RerunEvent)
class RerunEventAdmin(admin.ModelAdmin):
    list_display = ("id", "audit", "position", "control_point_index", "status", "requested_by", "created_at")
    list_filter = ("status",)
    search_fields = ("id", "audit__id", "audit__fiche__fiche_id")
    list_select_related = ("audit__fiche", "requested_by")
    readonly_fields = [f.name for f in RerunEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(HumanReview)
class HumanReviewAdmin(admin.ModelAdmin):
    list_display = ("step_result", "control_point_index", "ai_status", "status", "reviewer", "created_at")
    list_filter = ("status", "ai_status")
    search_fields = ("step_result__audit__id", "step_result__audit__fiche__fiche_id", "comment")
    list_select_related = ("step_result", "reviewer")
    readonly_fields = [f.name for f in HumanReview._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
