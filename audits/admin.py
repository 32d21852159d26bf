"""The ops console for audits: configs and their versions (draft, active, the evaluation an activation was
based on), audits with filters, and an audit page a reviewer reads (score and niveau, each step and control
point, the timeline with the verified citations marked where they were said and the rejected ones listed
with their reasons; a re-audit beside its predecessor). The QA loop: disputes (read-only, with a
per-control-point metrics page), the AI's trust per control point with its changes (read-only), and
evaluations of a config version against the active one (read-only: the result at a glance, or the
progress of a running one)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Any, cast
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.timezone import localtime

from accounts.models import User
from audits import selectors
from audits.models import (
    Audit,
    AuditConfig,
    AuditConfigVersion,
    AuditControlPointDefinition,
    AuditPurpose,
    AuditStatus,
    AuditStepDefinition,
    ControlPointTrust,
    ControlPointTrustChange,
    Dispute,
    Evaluation,
    EvaluationStatus,
    HumanReview,
    RerunEvent,
    TrustState,
)
from audits.services.request import audit_request
from core.admin_views import ReadOnlyAdminMixin
from core.exceptions import ApplicationError
from privacy.access import sees_personal_data

# --- Shared pieces of these pages ------------------------------------------------------------------

BADGE = (
    '<span style="display:inline-block;padding:.1em .6em;border-radius:4px;color:#fff;font-weight:600;'
    'white-space:nowrap;background:{}">{}</span>'
)
VERSION_COLORS: dict[str, str] = {"active": "#1b7f3b", "draft": "#b08900"}
PURPOSE_COLOR = "#6a3fb0"


def _uuid_key(value: object) -> str:
    """The id as a UUID's text, else the nil UUID (which matches no row): a junk id in the URL is not a 500."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(uuid.UUID(int=0))


def _when(value: datetime | None) -> str:
    """A date and time, short and on one line (in the site's time zone)."""
    if value is None:
        return "—"
    return format_html('<span style="white-space:nowrap">{}</span>', localtime(value).strftime("%Y-%m-%d %H:%M"))


def _version_state(version: AuditConfigVersion) -> str:
    """A badge: ``active`` (its config's current version), ``draft`` (runs only in an evaluation), else
    ``inactive`` (an older or never-activated version)."""
    active = version.config.current_version_id == version.pk
    states = [s for s, on in (("active", active), ("draft", version.is_draft)) if on] or ["inactive"]
    return format_html_join(" ", BADGE, ((VERSION_COLORS.get(s, "#888"), s) for s in states))


def _evaluation_link(evaluation_id: object) -> str:
    url = reverse("admin:audits_evaluation_change", args=[evaluation_id])
    return format_html('<a href="{}">evaluation {}</a>', url, str(evaluation_id)[:8])


def _audits_url(**lookups: object) -> str:
    return reverse("admin:audits_audit_changelist") + "?" + urlencode({k: str(v) for k, v in lookups.items()})


class AuditConfigVersionInline(admin.TabularInline):
    model = AuditConfigVersion
    extra = 0
    can_delete = False
    fields = ("version", "name", "state", "thresholds", "steps_count", "created_by", "created_at", "activated_at")
    readonly_fields = fields
    ordering = ("-version",)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="steps")
    def steps_count(self, obj: AuditConfigVersion) -> int:
        return obj.steps.count()

    @admin.display(description="state")
    def state(self, obj: AuditConfigVersion) -> str:
        return _version_state(obj)


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
class AuditConfigVersionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: a version is an immutable snapshot, made and activated through the API."""

    list_display = (
        "config_name",
        "version_label",
        "state",
        "activated",
        "activated_by",
        "activated_from_link",
        "evaluations_link",
        "created",
    )
    list_filter = ("config", "is_draft")
    list_select_related = ("config", "activated_by")
    fields = (
        "config",
        "version",
        "name",
        "description",
        "thresholds",
        "state",
        "is_draft",
        "is_active",
        "activated_at",
        "activated_by",
        "activated_from_link",
        "evaluations_link",
        "created_by",
        "created_at",
    )
    readonly_fields = fields
    inlines = [AuditStepDefinitionInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditConfigVersion]:
        return super().get_queryset(request).annotate(evaluations_count=Count("evaluations"))

    @admin.display(description="config", ordering="config__name")
    def config_name(self, obj: AuditConfigVersion) -> str:
        return format_html('<span style="display:inline-block;max-width:18em">{}</span>', obj.config)

    @admin.display(description="version", ordering="version")
    def version_label(self, obj: AuditConfigVersion) -> str:
        if obj.name == obj.config.name:
            return f"v{obj.version}"
        return format_html("v{}<br><small>{}</small>", obj.version, obj.name)

    @admin.display(description="state")
    def state(self, obj: AuditConfigVersion) -> str:
        return _version_state(obj)

    @admin.display(description="activated", ordering="activated_at")
    def activated(self, obj: AuditConfigVersion) -> str:
        return _when(obj.activated_at)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: AuditConfigVersion) -> str:
        return _when(obj.created_at)

    @admin.display(description="active", boolean=True)
    def is_active(self, obj: AuditConfigVersion) -> bool:
        return obj.config.current_version_id == obj.pk

    @admin.display(description="activated from", ordering="activated_from")
    def activated_from_link(self, obj: AuditConfigVersion) -> str:
        return _evaluation_link(obj.activated_from_id) if obj.activated_from_id else "—"

    @admin.display(description="evaluations")
    def evaluations_link(self, obj: AuditConfigVersion) -> str:
        count = getattr(obj, "evaluations_count", 0)
        if not count:
            return "—"
        url = reverse("admin:audits_evaluation_changelist") + "?" + urlencode({"version__id__exact": obj.pk})
        return format_html('<a href="{}">{} evaluation{}</a>', url, count, "s" if count > 1 else "")


@admin.register(Audit)
class AuditAdmin(admin.ModelAdmin):
    change_form_template = "admin/audits/audit/change_form.html"
    list_display = (
        "short_id",
        "fiche",
        "version",
        "status",
        "niveau",
        "score_percentage",
        "is_compliant",
        "needs_review",
        "tools_mode",
        "purpose_badge",
        "predecessor_link",
        "created",
        "completed",
    )
    list_filter = (
        "status",
        "niveau",
        "is_compliant",
        "needs_review",
        "tools_mode",
        "purpose",
        ("predecessor", admin.EmptyFieldListFilter),
        "config",
        "created_at",
    )
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

    @admin.display(description="config version", ordering="config_version")
    def version(self, obj: Audit) -> str:
        return format_html(
            '<span style="display:inline-block;min-width:12em;max-width:16em">{}</span>', obj.config_version
        )

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Audit) -> str:
        return _when(obj.created_at)

    @admin.display(description="completed", ordering="completed_at")
    def completed(self, obj: Audit) -> str:
        return _when(obj.completed_at)

    @admin.display(description="purpose", ordering="purpose")
    def purpose_badge(self, obj: Audit) -> str:
        if obj.purpose != AuditPurpose.EVALUATION:
            return obj.purpose
        return format_html(BADGE, PURPOSE_COLOR, obj.purpose)

    @admin.display(description="re-audit of", ordering="predecessor")
    def predecessor_link(self, obj: Audit) -> str:
        if obj.predecessor_id is None:
            return "—"
        url = reverse("admin:audits_audit_change", args=[obj.predecessor_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.predecessor_id)[:8])

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        audit = (
            Audit.objects.select_related(
                "fiche",
                "config_version",
                "evaluation__version",
                "evaluation__baseline_version",
                "predecessor__config_version",
                "pinned_by",
            )
            .filter(pk=_uuid_key(object_id))
            .first()
        )
        diff = None
        if audit is not None and audit.predecessor_id is not None and audit.status == AuditStatus.COMPLETED:
            # a re-audit still running would list every point as changed
            diff = selectors.audit_diff(audit, redacted=not sees_personal_data(request.user))
        extra_context = {
            **(extra_context or {}),
            "report": (
                selectors.audit_admin_report(audit, redacted=not sees_personal_data(request.user)) if audit else None
            ),
            "audit_obj": audit,
            "diff": diff,
            "successors": list(audit.successors.order_by("created_at")) if audit else [],
        }
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


# --- Evaluations: a config version beside the active one --------------------------------------------------

EVALUATION_COLORS: dict[str, str] = {
    EvaluationStatus.COMPLETED: "#1b7f3b",
    EvaluationStatus.FAILED: "#b00020",
    EvaluationStatus.RUNNING: "#2f6fb0",
    EvaluationStatus.PENDING: "#888",
}


def _kappa(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _signed(value: float | None, digits: int = 3, unit: str = "") -> str:
    if value is None:
        return ""
    return "±0" if round(value, digits) == 0 else f"{value:+.{digits}f}{unit}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{value:.1f} s"


def _agreement(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _figures(figures: dict[str, Any] | None) -> dict[str, Any] | None:
    """One version's figures on a control point (or overall), as the page shows them."""
    if figures is None:
        return None
    return {
        "reviewed": figures["reviewed"],
        "agreement": _agreement(figures["agreement"]),
        "kappa": _kappa(figures["kappa"]),
    }


def _delta(candidate: float | None, baseline: float | None) -> float | None:
    return None if candidate is None or baseline is None else candidate - baseline


def _card(
    label: str, value: str, baseline: str | None = None, delta: float | None = None, text: str = ""
) -> dict[str, Any]:
    return {
        "label": label,
        "value": value,
        "baseline": baseline,
        "delta": text or _signed(delta),
        "worse": delta is not None and delta < 0,
        "better": delta is not None and delta > 0,
    }


def _header(result: dict[str, Any], baseline_label: str) -> list[dict[str, Any]]:
    """The overall cards: agreement and kappa of the evaluated version vs the active one, and what each cost."""
    overall, spent = result["overall"], result["spent"]
    mine, theirs = overall["candidate"], overall["baseline"]
    cost, their_cost = spent["candidate"] or {}, spent["baseline"]
    agreement_delta = _delta(mine["agreement"], theirs and theirs["agreement"])
    cards = [
        _card(
            "Agreement with reviewers",
            _agreement(mine["agreement"]),
            theirs and f"{baseline_label}: {_agreement(theirs['agreement'])}",
            agreement_delta,
            text=_signed(None if agreement_delta is None else agreement_delta * 100, 1, " pts"),
        ),
        _card(
            "Cohen's kappa",
            _kappa(mine["kappa"]),
            theirs and f"{baseline_label}: {_kappa(theirs['kappa'])}",
            _delta(mine["kappa"], theirs and theirs["kappa"]),
        ),
        _card("Reviewed points covered", str(mine["reviewed"]), theirs and f"{baseline_label}: {theirs['reviewed']}"),
        _card(
            "Tokens",
            f"{cost.get('tokens', 0):,}",
            their_cost and f"{baseline_label}: {their_cost['tokens']:,}",
        ),
        _card(
            "Wall time",
            _seconds(cost.get("wall_seconds")),
            their_cost and f"{baseline_label}: {_seconds(their_cost['wall_seconds'])}",
        ),
        _card(
            "Audits failed",
            f"{cost.get('failed', 0)} of {cost.get('audits', 0)}",
            their_cost and f"{baseline_label}: {their_cost['failed']} of {their_cost['audits']}",
        ),
    ]
    for card in cards[3:]:  # costs: no better or worse
        card["worse"] = card["better"] = False
    return cards


def _evaluation_report(evaluation: Evaluation, *, redacted: bool = False) -> dict[str, Any]:
    """What the evaluation page shows: its audits by status (the progress of a running one), links to them,
    and the result at a glance — the overall figures of both versions, each control point's, and the verdicts
    that changed with both verified quotes and which version the reviewer agrees with."""
    audits = list(
        Audit.objects.filter(evaluation=evaluation).values_list("pk", "fiche__fiche_id", "config_version_id", "status")
    )
    by_status = Counter(status for *_, status in audits)
    versions = 2 if evaluation.baseline_version_id else 1
    total = max(len(audits), len(evaluation.fiche_ids) * versions)
    done = by_status[AuditStatus.COMPLETED] + by_status[AuditStatus.FAILED]
    progress = {
        "statuses": [
            {
                "status": status,
                "count": by_status[status],
                "url": _audits_url(evaluation__id__exact=evaluation.pk, status__exact=status),
            }
            for status in AuditStatus.values
            if by_status[status]
        ],
        "made": len(audits),
        "done": done,
        "total": total,
        "percent": round(done / total * 100) if total else 100,
    }
    candidate_label = f"v{evaluation.version.version}"
    baseline_label = f"v{evaluation.baseline_version.version}" if evaluation.baseline_version else ""
    links = [{"label": f"all {len(audits)} audits", "url": _audits_url(evaluation__id__exact=evaluation.pk)}]
    for version, label in ((evaluation.version, "evaluated"), (evaluation.baseline_version, "active")):
        if version is not None:
            count = sum(1 for a in audits if a[2] == version.pk)
            url = _audits_url(evaluation__id__exact=evaluation.pk, config_version__id__exact=version.pk)
            links.append({"label": f"{count} of the {label} version v{version.version}", "url": url})
    report: dict[str, Any] = {
        "progress": progress,
        "links": links,
        "candidate_label": candidate_label,
        "baseline_label": baseline_label,
        "result": None,
    }
    result = selectors.evaluation_dict(evaluation, redacted=redacted)["result"]  # quotes shown as the reader may
    if not result:
        return report
    audit_of = {(fiche, version_id): pk for pk, fiche, version_id, _ in audits}
    questions = {(p["step_position"], p["control_point_index"]): p["question"] for p in result["control_points"]}
    points = [
        {
            "point": f"{p['step_position']}.{p['control_point_index']}",
            "question": p["question"],
            "candidate": _figures(p["candidate"]),
            "baseline": _figures(p["baseline"]),
            "delta": _signed(p["kappa_delta"]),
            "worse": p["kappa_delta"] is not None and p["kappa_delta"] < 0,
            "better": p["kappa_delta"] is not None and p["kappa_delta"] > 0,
        }
        for p in result["control_points"]
    ]
    changed = []
    for c in result["changed"]:
        reviewer = c["reviewer"]
        sides = {}
        for side, version in (("baseline", evaluation.baseline_version), ("candidate", evaluation.version)):
            pk = audit_of.get((c["fiche_id"], version.pk)) if version is not None else None
            sides[side] = {
                **c[side],
                "agrees": reviewer is not None and c[side]["status"] == reviewer,
                "audit_url": reverse("admin:audits_audit_change", args=[pk]) if pk else None,
            }
        changed.append(
            {
                "fiche_id": c["fiche_id"],
                "point": f"{c['step_position']}.{c['control_point_index']}",
                "question": questions.get((c["step_position"], c["control_point_index"]), ""),
                "reviewer": reviewer,
                "outcome": "worse" if sides["baseline"]["agrees"] else "better" if sides["candidate"]["agrees"] else "",
                **sides,
            }
        )
    # What a QA lead reads first: the verdicts the evaluated version got wrong where the active one was right,
    # then those it fixed, then other reviewed ones, then the points no reviewer judged.
    rank = {"worse": 0, "better": 1, "": 2}
    changed.sort(key=lambda c: (rank[c["outcome"]] + (c["reviewer"] is None), c["fiche_id"], c["point"]))
    report["result"] = {
        "fiches": result["fiches"],
        "reviewed_points": result["reviewed_points"],
        "computed_at": _when(datetime.fromisoformat(result["computed_at"])) if result.get("computed_at") else None,
        "has_baseline": result["overall"]["baseline"] is not None,
        "header": _header(result, baseline_label),
        "points": points,
        "worse_points": sum(1 for p in points if p["worse"]),
        "better_points": sum(1 for p in points if p["better"]),
        "changed": changed,
        "fixed": sum(1 for c in changed if c["candidate"]["agrees"]),
        "broken": sum(1 for c in changed if c["baseline"]["agrees"]),
    }
    return report


@admin.register(Evaluation)
class EvaluationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: an evaluation is started through the API and settles as its audits end. Its page shows the
    result (the evaluated version beside the active one, judged against the reviewers) or, while it runs, its
    audits by status."""

    change_form_template = "admin/audits/evaluation/change_form.html"
    list_display = (
        "short_id",
        "config_name",
        "versions",
        "status_badge",
        "fiches_count",
        "changed_count",
        "kappas",
        "requested_by",
        "created",
        "completed",
    )
    list_filter = ("status", "config")
    list_select_related = ("config", "version", "baseline_version", "requested_by")
    search_fields = ("id",)
    date_hierarchy = "created_at"
    fields = (
        "config",
        "version",
        "baseline_version",
        "status_badge",
        "tools_mode",
        "fiches",
        "audits_link",
        "requested_by",
        "created_at",
        "started_at",
        "completed_at",
        "error",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Evaluation]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                audits_made=Count("audits"),
                audits_done=Count("audits", filter=Q(audits__status__in=Audit.TERMINAL_STATUSES)),
            )
        )

    @admin.display(description="evaluation", ordering="created_at")
    def short_id(self, obj: Evaluation) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="config", ordering="config__name")
    def config_name(self, obj: Evaluation) -> str:
        return format_html('<span style="display:inline-block;max-width:16em">{}</span>', obj.config)

    @admin.display(description="versions", ordering="version__version")
    def versions(self, obj: Evaluation) -> str:
        if obj.baseline_version is None:
            return f"v{obj.version.version} (the active one)"
        return f"v{obj.version.version} vs v{obj.baseline_version.version}"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Evaluation) -> str:
        badge = format_html(BADGE, EVALUATION_COLORS.get(obj.status, "#888"), obj.status)
        if obj.is_terminal:
            return badge
        done, made = getattr(obj, "audits_done", 0), getattr(obj, "audits_made", 0)
        return format_html('{} <span style="white-space:nowrap">{} / {} audits</span>', badge, done, made)

    @admin.display(description="fiches")
    def fiches_count(self, obj: Evaluation) -> int:
        return len(obj.fiche_ids)

    @admin.display(description="changed")
    def changed_count(self, obj: Evaluation) -> int | str:
        return len(obj.result["changed"]) if obj.result else "—"

    def _overall_kappa(self, obj: Evaluation, side: str) -> float | None:
        figures = obj.result["overall"][side] if obj.result else None
        return figures["kappa"] if figures else None

    @admin.display(description="kappa (version / active)")
    def kappas(self, obj: Evaluation) -> str:
        """The overall kappa of the evaluated version (red when below the active one's, green above) and the
        active version's."""
        mine, theirs = self._overall_kappa(obj, "candidate"), self._overall_kappa(obj, "baseline")
        delta = _delta(mine, theirs)
        color = "inherit" if delta is None or delta == 0 else "#b00020" if delta < 0 else "#1b7f3b"
        if obj.baseline_version_id is None or mine is None:
            return _kappa(mine)
        return format_html(
            '<span style="white-space:nowrap"><span style="color:{};font-weight:600">{}</span> / {}</span>',
            color,
            _kappa(mine),
            _kappa(theirs),
        )

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Evaluation) -> str:
        return _when(obj.created_at)

    @admin.display(description="completed", ordering="completed_at")
    def completed(self, obj: Evaluation) -> str:
        return _when(obj.completed_at)

    @admin.display(description="fiches")
    def fiches(self, obj: Evaluation) -> str:
        return f"{len(obj.fiche_ids)}: " + ", ".join(obj.fiche_ids) if obj.fiche_ids else "—"

    @admin.display(description="audits")
    def audits_link(self, obj: Evaluation) -> str:
        return format_html('<a href="{}">the audits of this evaluation</a>', _audits_url(evaluation__id__exact=obj.pk))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        evaluation = (
            Evaluation.objects.select_related("config", "version", "baseline_version")
            .filter(pk=_uuid_key(object_id))
            .first()
        )
        extra_context = {
            **(extra_context or {}),
            "evaluation": evaluation,
            "evaluation_report": (
                _evaluation_report(evaluation, redacted=not sees_personal_data(request.user)) if evaluation else None
            ),
        }
        return super().change_view(request, object_id, form_url, extra_context)
