"""The ops console for audits: configs and their versions, audits with filters, and an audit page a
reviewer reads (score and niveau, each step and control point, the timeline with the verified
citations marked where they were said and the rejected ones listed with their reasons). The QA loop:
disputes (read-only, with a per-control-point metrics page) and the AI's trust per control point with
its changes (read-only)."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from accounts.models import User
from audits import selectors
from audits.models import (
    Audit,
    AuditConfig,
    AuditConfigVersion,
    AuditControlPointDefinition,
    AuditStepDefinition,
    ControlPointTrust,
    ControlPointTrustChange,
    Dispute,
    HumanReview,
    RerunEvent,
    TrustState,
)
from audits.services.request import audit_request
from core.admin_views import ReadOnlyAdminMixin
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


# --- The QA loop: disputes and trust per control point -----------------------------------------------


def _audit_link(audit: Audit) -> str:
    url = reverse("admin:audits_audit_change", args=[audit.pk])
    return format_html(
        '<a href="{}" title="audit {}" style="white-space:nowrap">{} · fiche {}</a>',
        url,
        audit.pk,
        str(audit.pk)[:8],
        audit.fiche.fiche_id,
    )


@admin.register(Dispute)
class DisputeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: a dispute is resolved through the API's review path (rescored, a history row, events).
    The "Dispute metrics" page (``metrics/``) shows the per-control-point figures of one config."""

    change_list_template = "admin/audits/dispute/change_list.html"
    list_display = (
        "point",
        "audit_link",
        "status",
        "proposed",
        "verdict",
        "raised_by",
        "created_at",
        "resolved_by",
        "resolved_at",
    )
    list_filter = ("status", "created_at", ("audit__config", admin.RelatedOnlyFieldListFilter))
    search_fields = ("id", "audit__id", "audit__fiche__fiche_id")
    list_select_related = ("audit__fiche", "raised_by", "resolved_by")
    date_hierarchy = "created_at"
    fields = (
        "audit_link",
        "point",
        "status",
        "comment",
        "proposed_status",
        "verdict_before",
        "verdict_after",
        "raised_by",
        "created_at",
        "resolution_comment",
        "resolved_by",
        "resolved_at",
        "review",
    )
    readonly_fields = fields

    @admin.display(description="audit", ordering="audit__created_at")
    def audit_link(self, obj: Dispute) -> str:
        return _audit_link(obj.audit)

    @admin.display(description="point", ordering="step_position")
    def point(self, obj: Dispute) -> str:
        return f"{obj.step_position}.{obj.control_point_index}"

    @admin.display(description="asks for", ordering="proposed_status")
    def proposed(self, obj: Dispute) -> str:
        return obj.proposed_status

    @admin.display(description="verdict")
    def verdict(self, obj: Dispute) -> str:
        return format_html(
            '<span style="white-space:nowrap">{} → {}</span>', obj.verdict_before, obj.verdict_after or "…"
        )

    def get_urls(self) -> list[URLPattern]:
        metrics = path("metrics/", self.admin_site.admin_view(self.metrics_view), name="audits_dispute_metrics")
        return [metrics, *super().get_urls()]

    def metrics_view(self, request: HttpRequest) -> HttpResponse:
        """Per control point of one config (``?config=<id>``; by default the config of the latest dispute):
        disputes, open / accepted / rejected, acceptance rate and median days to resolve."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        configs = list(AuditConfig.objects.order_by("name", "pk"))
        wanted = request.GET.get("config", "")
        config = next((c for c in configs if str(c.pk) == wanted), None)
        if wanted and config is None:
            self.message_user(request, f"No audit config {wanted}.", messages.WARNING)
        if config is None and not wanted:
            latest = Dispute.objects.order_by("-created_at").values_list("audit__config_id", flat=True).first()
            config = next((c for c in configs if c.pk == latest), configs[0] if configs else None)
        metrics = selectors.dispute_metrics(Dispute.objects.all(), config_id=config.pk) if config else None
        if metrics is not None and config is not None:
            questions = _questions(config)
            for point in metrics["control_points"]:
                point["question"] = questions.get((point["step_position"], point["control_point_index"]), "")
                point["acceptance_percent"] = _percent(point["acceptance_rate"])
            metrics["acceptance_percent"] = _percent(metrics["acceptance_rate"])
            metrics["open"] = sum(p["open"] for p in metrics["control_points"])
            metrics["accepted"] = sum(p["accepted"] for p in metrics["control_points"])
            metrics["resolved"] = metrics["accepted"] + sum(p["rejected"] for p in metrics["control_points"])
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Dispute metrics" + (f": {config.name}" if config else ""),
            "configs": configs,
            "config": config,
            "metrics": metrics,
            "changelist_url": reverse("admin:audits_dispute_changelist"),
        }
        return TemplateResponse(request, "admin/audits/dispute/metrics.html", context)


def _percent(rate: float | None) -> float | None:
    return None if rate is None else round(rate * 100, 1)


def _questions(config: AuditConfig) -> dict[tuple[int, int], str]:
    """The questions of the config's current version, by (step position, control point index)."""
    if config.current_version_id is None:
        return {}
    return {
        (d.step.position, d.index): d.question
        for d in AuditControlPointDefinition.objects.filter(
            step__config_version_id=config.current_version_id
        ).select_related("step")
    }


class ControlPointTrustChangeInline(admin.TabularInline):
    model = ControlPointTrustChange
    extra = 0
    can_delete = False
    fields = ("at", "previous_state", "state", "kappa", "agreement", "sample_size")
    readonly_fields = fields
    ordering = ("at", "id")

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


TRUST_COLORS: dict[str, str] = {TrustState.TRUSTED: "#1b7f3b", TrustState.WITHDRAWN: "#b00020"}


@admin.register(ControlPointTrust)
class ControlPointTrustAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: trust follows the reviews (``audits.services.trust``); each change is listed below."""

    list_display = (
        "point",
        "config",
        "state_badge",
        "kappa",
        "agreement",
        "sample_size",
        "computed_at",
        "changed_at",
    )
    list_filter = ("state", "config")
    list_select_related = ("config",)
    fields = (
        "config",
        "step_position",
        "control_point_index",
        "state_badge",
        "kappa",
        "agreement",
        "sample_size",
        "computed_at",
        "changed_at",
    )
    readonly_fields = fields
    inlines = [ControlPointTrustChangeInline]

    @admin.display(description="point (step.index)", ordering="step_position")
    def point(self, obj: ControlPointTrust) -> str:
        return f"{obj.step_position}.{obj.control_point_index}"

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: ControlPointTrust) -> str:
        color = TRUST_COLORS.get(obj.state, "#555")
        return format_html(
            '<span style="display:inline-block;padding:.1em .6em;border-radius:4px;color:#fff;'
            'font-weight:600;background:{}">{}</span>',
            color,
            obj.state,
        )
