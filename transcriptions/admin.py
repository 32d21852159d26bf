"""The ops console for transcriptions: per recording (status filters, a retry action), runs, and the
transcription status on the fiche admin (batches have theirs in ``batches.admin``)."""

from __future__ import annotations

from typing import cast

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from accounts.models import User
from fiches.admin import FicheCacheAdmin
from fiches.models import FicheCache
from transcriptions.models import Transcription, TranscriptionRun, TranscriptionStatus
from transcriptions.services.runs import transcription_request


@admin.register(Transcription)
class TranscriptionAdmin(admin.ModelAdmin):
    list_display = (
        "call_id",
        "fiche",
        "status",
        "language",
        "duration_seconds",
        "attempts",
        "transcribed_at",
        "short_error",
    )
    list_filter = ("status", "language", "provider")
    search_fields = ("call_id", "fiche__fiche_id")
    list_select_related = ("fiche",)
    readonly_fields = [f.name for f in Transcription._meta.fields]
    actions = ["retry"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="error")
    def short_error(self, obj: Transcription) -> str:
        return (obj.error or "")[:80]

    @admin.action(description="Retry (transcribe these recordings' fiches again, failed ones first)")
    def retry(self, request: HttpRequest, queryset: QuerySet[Transcription]) -> None:
        queued = 0
        for fiche_pk in queryset.values_list("fiche", flat=True).distinct():
            fiche = FicheCache.objects.get(pk=fiche_pk)
            force = queryset.filter(fiche=fiche, status=TranscriptionStatus.COMPLETED).exists()
            result = transcription_request(fiche=fiche, force=force, user=cast(User, request.user))
            queued += bool(result.run_id)
        self.message_user(request, f"Queued {queued} transcription run(s).", messages.SUCCESS)


@admin.register(TranscriptionRun)
class TranscriptionRunAdmin(admin.ModelAdmin):
    list_display = ("id", "fiche", "status", "priority", "force", "progress", "created_at", "completed_at")
    list_filter = ("status", "priority")
    search_fields = ("id", "fiche__fiche_id")
    list_select_related = ("fiche",)
    readonly_fields = [f.name for f in TranscriptionRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="done / failed / total")
    def progress(self, obj: TranscriptionRun) -> str:
        return f"{len(obj.done_call_ids)} / {len(obj.failed_call_ids)} / {len(obj.call_ids)}"


# The fiche admin, with the fiche's transcription status (transcriptions depends on fiches, not
# the other way round: extend its admin here).
admin.site.unregister(FicheCache)


@admin.register(FicheCache)
class FicheWithTranscriptionsAdmin(FicheCacheAdmin):
    list_display = (*FicheCacheAdmin.list_display, "transcription_status")  # type: ignore[assignment]
    readonly_fields = [*FicheCacheAdmin.readonly_fields, "transcription_status"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[FicheCache]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                tx_done=Count("transcriptions", filter=Q(transcriptions__status=TranscriptionStatus.COMPLETED)),
                tx_failed=Count("transcriptions", filter=Q(transcriptions__status=TranscriptionStatus.FAILED)),
                tx_any=Count("transcriptions"),
            )
        )

    @admin.display(description="transcriptions")
    def transcription_status(self, obj: FicheCache) -> str:
        done, failed, rows = getattr(obj, "tx_done", 0), getattr(obj, "tx_failed", 0), getattr(obj, "tx_any", 0)
        if not rows:
            return "none"
        text = f"{done}/{obj.recordings_count} transcribed"
        return f"{text}, {failed} failed" if failed else text
