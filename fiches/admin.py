from django.contrib import admin
from django.db.models import Q

from fiches.models import FicheCache, Recording, SalesDateState


class RecordingInline(admin.TabularInline):
    model = Recording
    extra = 0
    can_delete = False
    fields = ("call_id", "started_at", "duration_seconds", "direction", "from_number", "to_number", "recording_url",
              "transcription_status")
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
    list_display = ("fiche_id", "sales_date", "groupe", "agent_name", "prospect_name", "statut", "produit",
                    "recordings_count", "has_details", "last_revalidated_at")
    list_filter = ("sales_date", "groupe", HasDetailsFilter, "has_recordings")
    search_fields = ("fiche_id", "prospect_nom", "prospect_prenom")
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
                Q(prospect_prenom__iexact=a, prospect_nom__iexact=b) | Q(prospect_prenom__iexact=b, prospect_nom__iexact=a)
            )
        return queryset, distinct

    @admin.display(boolean=True, description="details")
    def has_details(self, obj):
        return obj.has_details


@admin.register(Recording)
class RecordingAdmin(admin.ModelAdmin):
    list_display = ("call_id", "fiche", "started_at", "duration_seconds", "direction", "transcription_status")
    list_filter = ("direction", "transcription_status")
    search_fields = ("call_id", "fiche__fiche_id")
    list_select_related = ("fiche",)
    raw_id_fields = ("fiche",)
    readonly_fields = ("created_at", "updated_at")


@admin.register(SalesDateState)
class SalesDateStateAdmin(admin.ModelAdmin):
    list_display = ("sales_date", "last_fetched_at", "fiche_count", "last_error_at")
    list_filter = ("last_fetched_at",)
    readonly_fields = ("sales_date", "last_fetched_at", "fiche_count", "last_error", "last_error_at")
