"""The ops console for automation: schedules (edited with the API's checks and services, so
``next_run_at`` follows, and the same scope rule: the staff user who creates a schedule owns it, and
the fiche ids and groups it names must be in the scope of its owner and of the staff user; enable,
disable and run now as actions; the webhook secret write-only) and runs (read-only, filtered by
status, trigger and schedule, with their per-fiche results and notification state). The admin is
staff-only: it shows every fiche row and notification target."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import User
from automation.api.serializers import ScheduleInput
from automation.fields import SETTING_FIELDS, selection_of
from automation.models import AutomationRun, AutomationRunFicheResult, AutomationSchedule
from automation.services import schedules
from core.exceptions import ApplicationError

# The form field where an error naming a schedule field goes (the secret has its own write-only field).
FORM_FIELD = {**{field: field for field in SETTING_FIELDS}, "webhook_secret": "new_webhook_secret"}


def _messages(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [f"{key}: {m}" for key, inner in value.items() for m in _messages(inner)]
    if isinstance(value, list | tuple):
        return [m for inner in value for m in _messages(inner)]
    return [str(value)]


class ScheduleForm(forms.ModelForm):
    """The API's checks (``ScheduleInput`` then the effective config) on what the form changes."""

    new_webhook_secret = forms.CharField(
        label="New webhook secret",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Never shown. Leave blank to keep the current secret.",
    )
    clear_webhook_secret = forms.BooleanField(label="Remove the webhook secret", required=False)

    class Meta:
        model = AutomationSchedule
        fields = [field for field in SETTING_FIELDS if field != "webhook_secret"]

    user: User | None = None  # the staff user editing (set by the admin's get_form)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["fiche_selection"] = selection_of(self.instance)  # every key, defaults filled in
        self.api_data: dict[str, Any] = {}

    def _input(self, cleaned: dict[str, Any]) -> dict[str, Any]:
        editing = self.instance.pk is not None
        data = {
            field: cleaned.get(field)
            for field in SETTING_FIELDS
            if field != "webhook_secret" and (not editing or field in self.changed_data)
        }
        if cleaned.get("clear_webhook_secret"):
            data["webhook_secret"] = None
        elif cleaned.get("new_webhook_secret"):
            data["webhook_secret"] = cleaned["new_webhook_secret"]
        return data

    def _add_errors(self, details: dict[str, Any]) -> bool:
        """Each error under its form field (``fiche_selection.mode`` → fiche_selection, "mode: ...");
        False when none names a field of the form."""
        placed = False
        for key, value in details.items():
            name, _, rest = str(key).partition(".")
            if name == "non_field_errors":
                field = None
            elif FORM_FIELD.get(name) in self.fields:
                field = FORM_FIELD[name]
            else:
                continue  # context (reason, url, ...) of an error placed by another key
            for message in _messages(value):
                self.add_error(field, f"{rest}: {message}" if rest else message)
                placed = True
        return placed

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        # The stored JSON's (snake_case) names in the refusal of an unknown fiche_selection key.
        data = ScheduleInput(data=self._input(cleaned), partial=self.instance.pk is not None, context={"name_of": str})
        if not data.is_valid():
            self._add_errors(dict(data.errors))
            return cleaned
        try:
            schedules.schedule_clean(
                data=data.validated_data, current=self.instance if self.instance.pk else None, user=self.user
            )
        except ApplicationError as exc:
            if not self._add_errors(exc.details):
                self.add_error(None, exc.message)
            return cleaned
        self.api_data = dict(data.validated_data)
        return cleaned


@admin.register(AutomationSchedule)
class AutomationScheduleAdmin(admin.ModelAdmin):
    form = ScheduleForm
    list_display = ("name", "schedule_type", "is_active", "owner", "next_run_at", "last_run_at", "updated_at")
    list_filter = ("schedule_type", "is_active")
    list_select_related = ("owner",)
    search_fields = ("name",)
    readonly_fields = (
        "has_webhook_secret",
        "next_run_at",
        "last_run_at",
        "owner",
        "created_by",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "is_active", "next_run_at", "last_run_at")}),
        ("When", {"fields": ("schedule_type", "time_of_day", "day_of_week", "day_of_month", "timezone")}),
        ("What", {"fields": ("fiche_selection", "audit_config_ids", "run_transcription", "run_audits")}),
        ("How", {"fields": ("skip_if_transcribed", "continue_on_error", "retry_failed", "max_retries")}),
        (
            "Notifications",
            {
                "fields": (
                    "notify_on_complete",
                    "notify_on_error",
                    "notify_emails",
                    "webhook_url",
                    "has_webhook_secret",
                    "new_webhook_secret",
                    "clear_webhook_secret",
                )
            },
        ),
        ("History", {"fields": ("owner", "created_by", "created_at", "updated_at")}),
    )
    actions = ["enable", "disable", "run_now"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"user": cast(User, request.user)})

    @admin.display(description="webhook secret set", boolean=True)
    def has_webhook_secret(self, obj: AutomationSchedule) -> bool:
        return bool(obj.webhook_secret)

    def save_model(self, request: HttpRequest, obj: AutomationSchedule, form: Any, change: bool) -> None:
        """Through the services (the effective-config checks, ``next_run_at``); ``obj`` then reloaded."""
        user = cast(User, request.user)
        if change:
            saved = schedules.schedule_update(schedule_id=obj.pk, patch=form.api_data, user=user)
        else:
            saved = schedules.schedule_create(data=form.api_data, user=user)
        obj.pk = saved.pk
        obj.refresh_from_db()
        obj._state.adding = False

    def delete_model(self, request: HttpRequest, obj: AutomationSchedule) -> None:
        schedules.schedule_delete(schedule_id=obj.pk, user=cast(User, request.user))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[AutomationSchedule]) -> None:
        for schedule_id in queryset.values_list("pk", flat=True):
            schedules.schedule_delete(schedule_id=schedule_id, user=cast(User, request.user))

    @admin.action(description="Enable")
    def enable(self, request: HttpRequest, queryset: QuerySet[AutomationSchedule]) -> None:
        changed = schedules.schedule_set_active(
            schedule_ids=list(queryset.values_list("pk", flat=True)), is_active=True, user=cast(User, request.user)
        )
        self.message_user(request, f"Enabled {changed} schedule(s).", messages.SUCCESS)

    @admin.action(description="Disable")
    def disable(self, request: HttpRequest, queryset: QuerySet[AutomationSchedule]) -> None:
        changed = schedules.schedule_set_active(
            schedule_ids=list(queryset.values_list("pk", flat=True)), is_active=False, user=cast(User, request.user)
        )
        self.message_user(request, f"Disabled {changed} schedule(s).", messages.SUCCESS)

    @admin.action(description="Run now")
    def run_now(self, request: HttpRequest, queryset: QuerySet[AutomationSchedule]) -> None:
        started, refused = [], []
        for schedule in queryset.order_by("name", "pk"):
            try:
                run = schedules.schedule_run_now(schedule_id=schedule.pk, user=cast(User, request.user))
            except ApplicationError as exc:
                refused.append(f"{schedule.name}: {exc.message}")
                continue
            started.append(f"{schedule.name} ({str(run.pk)[:8]})")
        if started:
            self.message_user(request, f"Started {len(started)} run(s): {', '.join(started)}.", messages.SUCCESS)
        if refused:
            self.message_user(request, "Not started: " + "; ".join(refused), messages.WARNING)


class FicheResultInline(admin.TabularInline):
    model = AutomationRunFicheResult
    extra = 0
    can_delete = False
    fields = (
        "fiche_id",
        "status",
        "step",
        "reason",
        "error",
        "recordings_count",
        "transcription_attempts",
        "audit_ids",
    )
    readonly_fields = fields
    ordering = ("id",)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(AutomationRun)
class AutomationRunAdmin(admin.ModelAdmin):
    list_display = (
        "short_id",
        "schedule_name",
        "trigger",
        "status",
        "total_fiches",
        "successful",
        "failed",
        "ignored",
        "skipped",
        "created_at",
        "completed_at",
    )
    list_filter = ("status", "trigger", "schedule")
    search_fields = ("id", "schedule__name")
    list_select_related = ("schedule",)
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in AutomationRun._meta.fields]
    inlines = [FicheResultInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # read-only page; runs change through the workflow

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # runs are the schedules' history

    @admin.display(description="run", ordering="created_at")
    def short_id(self, obj: AutomationRun) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="schedule")
    def schedule_name(self, obj: AutomationRun) -> str:
        return str((obj.config or {}).get("name") or (obj.schedule.name if obj.schedule else "—"))
