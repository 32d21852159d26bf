from django.contrib import admin, messages
from django.db.models import Q
from django.utils.html import format_html, format_html_join

from core.dispatch import dispatch_on_commit
from fiches.job_snapshots import derived_status
from fiches.models import FicheCache, ProgressiveFetchJob, Recording, SalesDateState, WorkflowLog
from fiches.notifications import JOB_WEBHOOK_SOURCE
from fiches.services.jobs import progressive_fetch_finalize_now
from fiches.tasks import progressive_fetch_continue
from privacy.admin import erase_prospect_data
from realtime.selectors import deliveries_of


class RecordingInline(admin.TabularInline):
    model = Recording
    extra = 0
    can_delete = False
    fields = (
        "call_id",
        "started_at",
        "duration_seconds",
        "direction",
        "from_number",
        "to_number",
        "recording_url",
    )
    readonly_fields = fields
    show_change_link = True


class HasDetailsFilter(admin.SimpleListFilter):
    title = "has details"
    parameter_name = "has_details"

    def lookups(self, request, model_admin):
        return (("yes", "Full details"), ("no", "Sales list only"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(details_fetched_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(details_fetched_at__isnull=True)
        return queryset


@admin.register(FicheCache)
class FicheCacheAdmin(admin.ModelAdmin):
    list_display = (
        "fiche_id",
        "sales_date",
        "groupe",
        "agent_name",
        "prospect_name",
        "statut",
        "produit",
        "recordings_count",
        "has_details",
        "last_revalidated_at",
    )
    list_filter = ("sales_date", "groupe", HasDetailsFilter, "has_recordings", "erased_at")
    search_fields = ("fiche_id", "prospect_nom", "prospect_prenom")
    actions = [erase_prospect_data]  # users.write only (privacy.admin)
    date_hierarchy = "sales_date"
    ordering = ("-sales_date", "fiche_id")
    readonly_fields = [f.name for f in FicheCache._meta.fields]
    inlines = [RecordingInline]
    list_per_page = 50

    def get_search_results(self, request, queryset, search_term):
        queryset, distinct = super().get_search_results(request, queryset, search_term)
        parts = search_term.split()
        if len(parts) == 2:  # "Julie Durand" matches first + last name
            a, b = parts
            queryset |= self.model.objects.filter(
                Q(prospect_prenom__iexact=a, prospect_nom__iexact=b)
                | Q(prospect_prenom__iexact=b, prospect_nom__iexact=a)
            )
        return queryset, distinct

    @admin.display(boolean=True, description="details")
    def has_details(self, obj):
        return obj.has_details


@admin.register(Recording)
class RecordingAdmin(admin.ModelAdmin):
    list_display = ("call_id", "fiche", "started_at", "duration_seconds", "direction")
    list_filter = ("direction",)
    search_fields = ("call_id", "fiche__fiche_id")
    list_select_related = ("fiche",)
    raw_id_fields = ("fiche",)
    readonly_fields = ("created_at", "updated_at")


@admin.register(SalesDateState)
class SalesDateStateAdmin(admin.ModelAdmin):
    list_display = ("sales_date", "last_fetched_at", "fiche_count", "last_error_at")
    list_filter = ("last_fetched_at",)
    readonly_fields = ("sales_date", "last_fetched_at", "fiche_count", "last_error", "last_error_at")


@admin.register(ProgressiveFetchJob)
class ProgressiveFetchJobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "status_badge",
        "progress_bar",
        "start_date",
        "end_date",
        "force_refresh",
        "total_fiches",
        "requested_by",
        "created_at",
        "completed_at",
    )
    list_filter = ("status", "force_refresh")
    search_fields = ("id",)
    ordering = ("-created_at",)
    list_select_related = ("requested_by",)
    actions = ["redrive_remaining_dates", "finalize_now"]
    exclude = ("webhook_secret",)  # never shown
    readonly_fields = [f.name for f in ProgressiveFetchJob._meta.fields if f.name != "webhook_secret"] + [
        "webhook_secret_set",
        "dates_completed_list",
        "dates_remaining_list",
        "dates_failed_list",
        "deliveries",
    ]
    fieldsets = (
        (None, {"fields": ("id", "status", "progress", "start_date", "end_date", "force_refresh", "error")}),
        (
            "Dates",
            {
                "fields": (
                    "total_days",
                    "completed_days",
                    "dates_completed_list",
                    "dates_remaining_list",
                    "dates_failed_list",
                    "total_fiches",
                )
            },
        ),
        ("Requester", {"fields": ("requested_by", "scope_kind", "scope_groupes", "scope_crm_user_id")}),
        (
            "Webhook",
            {
                "fields": (
                    "webhook_url",
                    "webhook_secret_set",
                    "webhook_attempts",
                    "webhook_last_status_code",
                    "webhook_last_error",
                    "webhook_last_attempt_at",
                    "webhooks_disabled",
                    "deliveries",
                )
            },
        ),
        (
            "Timeline",
            {
                "fields": (
                    "created_at",
                    "dispatched_at",
                    "started_at",
                    "last_progress_at",
                    "redriven_at",
                    "updated_at",
                    "completed_at",
                )
            },
        ),
    )

    def has_add_permission(self, request):
        return False

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        colors = {"pending": "#888", "processing": "#1f6feb", "complete": "#1a7f37", "failed": "#cf222e"}
        status = derived_status(obj)
        return format_html('<b style="color:{}">{}</b>', colors.get(status, "#000"), status)

    @admin.display(description="progress", ordering="progress")
    def progress_bar(self, obj):
        return format_html(
            '<div style="width:120px;background:#eee;border-radius:3px">'
            '<div style="width:{}%;background:#1f6feb;color:#fff;font-size:10px;padding:1px 3px;'
            'border-radius:3px;white-space:nowrap">{}%</div></div>',
            obj.progress,
            obj.progress,
        )

    @admin.display(description="webhook secret")
    def webhook_secret_set(self, obj):
        return "set (hidden)" if obj.webhook_secret else "-"

    def _dates(self, values):
        return ", ".join(d.isoformat() for d in sorted(values)) or "-"

    @admin.display(description="dates completed")
    def dates_completed_list(self, obj):
        return self._dates(obj.dates_already_fetched)

    @admin.display(description="dates remaining")
    def dates_remaining_list(self, obj):
        return self._dates(obj.dates_remaining)

    @admin.display(description="dates failed")
    def dates_failed_list(self, obj):
        return self._dates(obj.dates_failed)

    @admin.display(description="webhook deliveries")
    def deliveries(self, obj):
        rows = deliveries_of(source=JOB_WEBHOOK_SOURCE, source_id=str(obj.pk), limit=10)
        if not rows:
            return "-"
        return format_html_join(
            "",
            "<div>#{} {} — {} ({} attempts, last HTTP {})</div>",
            ((d["id"], d["event"], d["status"], d["attempts"], d["lastStatusCode"]) for d in rows),
        )

    @admin.action(description="Re-drive remaining dates (idempotent)")
    def redrive_remaining_dates(self, request, queryset):
        count = 0
        for job in queryset:
            if not job.is_terminal and job.dates_remaining:
                dispatch_on_commit(progressive_fetch_continue, str(job.pk), redrive=True)
                count += 1
        self.message_user(request, f"Re-dispatched the remaining dates of {count} job(s).", messages.SUCCESS)

    @admin.action(description="Finalize now (remaining dates are marked failed)")
    def finalize_now(self, request, queryset):
        done = sum(progressive_fetch_finalize_now(job_id=str(job.pk)) for job in queryset)
        self.message_user(request, f"Finalized {done} job(s).", messages.SUCCESS)


@admin.register(WorkflowLog)
class WorkflowLogAdmin(admin.ModelAdmin):
    """Filter by job with ?job_id=<uuid> (or search the id)."""

    list_display = ("created_at", "level", "event", "job_id", "date", "data")
    list_filter = ("event", "level", "workflow")
    search_fields = ("job_id",)
    readonly_fields = [f.name for f in WorkflowLog._meta.fields]

    def has_add_permission(self, request):
        return False
