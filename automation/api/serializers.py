"""Input validation and documented output shapes of the automation API. Fields are declared in
snake_case, as the domain names them; the API shows them in the original front end's camelCase names
(``automation.api.camel``: the views' parsers and renderer convert, the schema documents camelCase).

The serializers check each field on its own (types, ranges, ``HH:MM``, the timezone, unknown
``ficheSelection`` keys); the services check what needs the effective config or the database (a
DAILY schedule without ``timeOfDay``, a relative range over the cap, unknown audit config ids, the
webhook URL's SSRF guard). Both name the field the same way: errors are flat, nested keys joined with
dots (``details: {"ficheSelection.relativeDays": ["..."]}``, ``{"notifyEmails.1": ["..."]}``; here
``fiche_selection.relative_days``, put in the API's names by the views).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from automation.api.camel import CamelCaseSerializer, api_name
from automation.fields import SELECTION_DEFAULTS
from automation.models import RunStatus, ScheduleType
from fiches.api.serializers import StrictDateField

TIME_OF_DAY = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
SELECTION_MODES = ("dateRange", "relative", "manual")


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, Any]:
    """DRF's nested error structure as flat dotted keys: ``{"fiche_selection": {"mode": [..]}}`` →
    ``{"fiche_selection.mode": [..]}``; a list field's ``{1: [..]}`` → ``{"notify_emails.1": [..]}``."""
    if isinstance(detail, Mapping):
        flat: dict[str, Any] = {}
        for key, value in detail.items():
            name = str(key) if key != "non_field_errors" else ""
            path = f"{prefix}.{name}" if prefix and name else (prefix or name or "non_field_errors")
            flat.update(flatten_errors(value, path))
        return flat
    return {prefix or "non_field_errors": detail}


class FlatErrorsSerializer(CamelCaseSerializer):
    """Reports its errors with flat dotted field names."""

    def to_internal_value(self, data: Any) -> Any:
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError(flatten_errors(exc.detail)) from None


# --- Schedules ----------------------------------------------------------------------------------------------


class FicheSelectionInput(CamelCaseSerializer):
    """Which fiches a run takes. Every key is optional here (a PATCH merges it into the stored
    selection); what a mode needs is checked on the effective selection. Unknown keys are refused."""

    # An unknown key's refusal lists the keys in the API's names; ``context["name_of"]`` gives another
    # naming (the admin's: it edits the stored snake_case JSON). Not in the docstring: that is the schema's.

    mode = serializers.ChoiceField(choices=SELECTION_MODES, required=False)
    start_date = StrictDateField(required=False, allow_null=True, help_text="dateRange: first sales date.")
    end_date = StrictDateField(required=False, allow_null=True, help_text="dateRange: last sales date (inclusive).")
    relative_days = serializers.IntegerField(
        min_value=1, required=False, help_text="relative: the last N days before today (the schedule's timezone)."
    )
    fiche_ids = serializers.ListField(
        child=serializers.CharField(max_length=64, allow_blank=False), required=False, help_text="manual: fiche ids."
    )
    groupes = serializers.ListField(
        child=serializers.CharField(max_length=200, allow_blank=False),
        required=False,
        help_text="Only these groups (empty: every group).",
    )
    only_unaudited = serializers.BooleanField(required=False)
    only_with_recordings = serializers.BooleanField(required=False)
    max_recordings_per_fiche = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    max_fiches = serializers.IntegerField(
        min_value=1,
        required=False,
        allow_null=True,
        help_text="At most AUTOMATION_MAX_FICHES (lowers it, never raises it; a greater value is a 400).",
    )
    use_rlm = serializers.BooleanField(required=False, help_text="Audits in transcript tools mode.")

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(key) for key in data if key not in self.fields)
            if unknown:
                name_of = self.context.get("name_of", api_name)
                message = f"Unknown key; expected one of {', '.join(name_of(key) for key in SELECTION_DEFAULTS)}."
                raise serializers.ValidationError({key: [message] for key in unknown})
        return super().to_internal_value(data)


class ScheduleInput(FlatErrorsSerializer):
    """A schedule. On create the omitted fields take their defaults; on PATCH (``partial=True``)
    only the given fields change (``ficheSelection`` keys merge into the stored selection)."""

    name = serializers.CharField(max_length=200)
    is_active = serializers.BooleanField(required=False, default=True)
    schedule_type = serializers.ChoiceField(choices=ScheduleType.choices, required=False, default=ScheduleType.MANUAL)
    time_of_day = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        help_text='"HH:MM" (00:00–23:59) in the schedule\'s timezone; null or empty for none.',
    )
    day_of_week = serializers.IntegerField(
        min_value=1, max_value=7, required=False, allow_null=True, default=None, help_text="1 (Monday) to 7 (Sunday)."
    )
    day_of_month = serializers.IntegerField(
        min_value=1,
        max_value=31,
        required=False,
        allow_null=True,
        default=None,
        help_text="1 to 31 (the month's last day when it is shorter).",
    )
    timezone = serializers.CharField(max_length=64, required=False, default="Europe/Paris")
    fiche_selection = FicheSelectionInput(required=False, default=dict)
    audit_config_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        default=list,
        help_text="Audit config ids (empty: the config of each fiche's product).",
    )
    run_transcription = serializers.BooleanField(required=False, default=True)
    run_audits = serializers.BooleanField(required=False, default=True)
    skip_if_transcribed = serializers.BooleanField(required=False, default=True)
    continue_on_error = serializers.BooleanField(required=False, default=True)
    retry_failed = serializers.BooleanField(required=False, default=False)
    max_retries = serializers.IntegerField(min_value=0, max_value=10, required=False, default=1)
    notify_on_complete = serializers.BooleanField(required=False, default=False)
    notify_on_error = serializers.BooleanField(required=False, default=True)
    webhook_url = serializers.CharField(
        max_length=2048,
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        help_text="Receives the run's outcome (SSRF-guarded; null or empty removes it).",
    )
    webhook_secret = serializers.CharField(
        max_length=255,
        required=False,
        allow_null=True,
        default=None,
        write_only=True,
        help_text="Signing secret (Standard Webhooks; `whsec_…` base64 or any string). Never returned; "
        "omit it to keep the current one, null removes it.",
    )
    notify_emails = serializers.ListField(child=serializers.EmailField(), required=False, default=list)

    def validate_time_of_day(self, value: str | None) -> str | None:
        if not value:
            return None
        if not TIME_OF_DAY.fullmatch(value):
            raise serializers.ValidationError('Expected "HH:MM" between 00:00 and 23:59.')
        return value

    def validate_timezone(self, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise serializers.ValidationError(f"Unknown timezone {value!r}.") from None
        return value

    def validate_webhook_url(self, value: str | None) -> str | None:
        return value or None  # "" removes it, as null does


class ScheduleListQuery(CamelCaseSerializer):
    is_active = serializers.BooleanField(required=False, allow_null=True, default=None)


class FicheSelectionOutput(CamelCaseSerializer):
    mode = serializers.ChoiceField(choices=SELECTION_MODES)
    start_date = serializers.DateField(allow_null=True)
    end_date = serializers.DateField(allow_null=True)
    relative_days = serializers.IntegerField()
    fiche_ids = serializers.ListField(child=serializers.CharField(), help_text="Only the fiches you may read.")
    groupes = serializers.ListField(child=serializers.CharField())
    only_unaudited = serializers.BooleanField()
    only_with_recordings = serializers.BooleanField()
    max_recordings_per_fiche = serializers.IntegerField(allow_null=True)
    max_fiches = serializers.IntegerField(allow_null=True)
    use_rlm = serializers.BooleanField()


class ScheduleOutput(CamelCaseSerializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    is_active = serializers.BooleanField()
    schedule_type = serializers.ChoiceField(choices=ScheduleType.choices)
    time_of_day = serializers.CharField(allow_null=True)
    day_of_week = serializers.IntegerField(allow_null=True)
    day_of_month = serializers.IntegerField(allow_null=True)
    timezone = serializers.CharField()
    fiche_selection = FicheSelectionOutput()
    audit_config_ids = serializers.ListField(child=serializers.IntegerField())
    run_transcription = serializers.BooleanField()
    run_audits = serializers.BooleanField()
    skip_if_transcribed = serializers.BooleanField()
    continue_on_error = serializers.BooleanField()
    retry_failed = serializers.BooleanField()
    max_retries = serializers.IntegerField()
    notify_on_complete = serializers.BooleanField()
    notify_on_error = serializers.BooleanField()
    webhook_url = serializers.CharField(allow_null=True, help_text="Null unless you hold automation.write.")
    has_webhook_secret = serializers.BooleanField(help_text="The secret itself is never returned.")
    notify_emails = serializers.ListField(
        child=serializers.EmailField(), allow_null=True, help_text="Null unless you hold automation.write."
    )
    owner_id = serializers.IntegerField(
        allow_null=True, help_text="Whose grants bound what its runs touch (the creator; null: runs fail)."
    )
    next_run_at = serializers.DateTimeField(
        allow_null=True, help_text="The next scheduled slot (null: MANUAL/inactive)."
    )
    last_run_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class RunStartedOutput(CamelCaseSerializer):
    run_id = serializers.UUIDField()


# --- Runs ---------------------------------------------------------------------------------------------------


@extend_schema_field({"type": "string", "enum": list(RunStatus.values)}, component_name="AutomationRunStatusEnum")
class RunStatusField(serializers.ChoiceField):
    """A run's status, documented as its own named enum (not merged with other apps' "status" enums)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=RunStatus.choices, **kwargs)


class RunListQuery(CamelCaseSerializer):
    status = RunStatusField(required=False)


class RunOutput(CamelCaseSerializer):
    id = serializers.UUIDField()
    schedule_id = serializers.IntegerField(allow_null=True, help_text="Null once the schedule is deleted.")
    schedule_name = serializers.CharField(allow_null=True, help_text="The schedule's name when the run started.")
    trigger = serializers.ChoiceField(choices=["manual", "scheduled"])
    slot = serializers.DateTimeField(allow_null=True)
    status = RunStatusField()
    date_from = serializers.DateField(allow_null=True)
    date_to = serializers.DateField(allow_null=True)
    revalidation = serializers.CharField()
    total_fiches = serializers.IntegerField()
    successful = serializers.IntegerField()
    failed = serializers.IntegerField()
    ignored = serializers.IntegerField()
    skipped = serializers.IntegerField()
    error = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True, help_text="Null until the run ends.")


class RunFicheOutput(CamelCaseSerializer):
    fiche_id = serializers.CharField()
    status = serializers.CharField()
    step = serializers.CharField()
    reason = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    recordings_count = serializers.IntegerField(allow_null=True)
    transcription_attempts = serializers.IntegerField()
    audit_ids = serializers.ListField(child=serializers.CharField())


class FicheErrorOutput(CamelCaseSerializer):
    fiche_id = serializers.CharField()
    error = serializers.CharField(allow_null=True)


class FicheReasonOutput(CamelCaseSerializer):
    fiche_id = serializers.CharField()
    reason = serializers.CharField(allow_null=True)


class ResultSummaryOutput(CamelCaseSerializer):
    total = serializers.IntegerField()
    successful = serializers.ListField(child=serializers.CharField())
    failed = FicheErrorOutput(many=True)
    ignored = FicheReasonOutput(many=True)
    skipped = FicheReasonOutput(many=True)
    transcriptions = serializers.IntegerField(help_text="Fiches that had a transcription run.")
    audits = serializers.IntegerField(help_text="Audits started.")


class RunDetailOutput(RunOutput):
    config = serializers.DictField(
        help_text="The schedule's settings when the run started (no secret; webhookUrl and notifyEmails null "
        "without automation.write; ficheSelection.ficheIds only the fiches you may read)."
    )
    fiches = RunFicheOutput(many=True, help_text="Only the fiches you may read.")
    result_summary = ResultSummaryOutput(help_text="Rebuilt from the fiches you may read.")
