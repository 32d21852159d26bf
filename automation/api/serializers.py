"""Input validation and documented output shapes of the automation API, in the original front end's
camelCase names.

The serializers check each field on its own (types, ranges, ``HH:MM``, the timezone, unknown
``ficheSelection`` keys); the services check what needs the effective config or the database (a
DAILY schedule without ``timeOfDay``, a relative range over the cap, unknown audit config ids, the
webhook URL's SSRF guard). Both name the field the same way: errors are flat, nested keys joined with
dots (``details: {"ficheSelection.relativeDays": ["..."]}``, ``{"notifyEmails.1": ["..."]}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from automation.fields import SELECTION_DEFAULTS
from automation.models import RunStatus, ScheduleType
from fiches.api.serializers import StrictDateField

TIME_OF_DAY = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
SELECTION_MODES = ("dateRange", "relative", "manual")


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, Any]:
    """DRF's nested error structure as flat dotted keys: ``{"ficheSelection": {"mode": [..]}}`` →
    ``{"ficheSelection.mode": [..]}``; a list field's ``{1: [..]}`` → ``{"notifyEmails.1": [..]}``."""
    if isinstance(detail, Mapping):
        flat: dict[str, Any] = {}
        for key, value in detail.items():
            name = str(key) if key != "non_field_errors" else ""
            path = f"{prefix}.{name}" if prefix and name else (prefix or name or "non_field_errors")
            flat.update(flatten_errors(value, path))
        return flat
    return {prefix or "non_field_errors": detail}


class FlatErrorsSerializer(serializers.Serializer):
    """Reports its errors with flat dotted field names."""

    def to_internal_value(self, data: Any) -> Any:
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError(flatten_errors(exc.detail)) from None


# --- Schedules ----------------------------------------------------------------------------------------------


class FicheSelectionInput(serializers.Serializer):
    """Which fiches a run takes. Every key is optional here (a PATCH merges it into the stored
    selection); what a mode needs is checked on the effective selection. Unknown keys are refused."""

    mode = serializers.ChoiceField(choices=SELECTION_MODES, required=False)
    startDate = StrictDateField(required=False, allow_null=True, help_text="dateRange: first sales date.")
    endDate = StrictDateField(required=False, allow_null=True, help_text="dateRange: last sales date (inclusive).")
    relativeDays = serializers.IntegerField(
        min_value=1, required=False, help_text="relative: the last N days before today (the schedule's timezone)."
    )
    ficheIds = serializers.ListField(
        child=serializers.CharField(max_length=64, allow_blank=False), required=False, help_text="manual: fiche ids."
    )
    groupes = serializers.ListField(
        child=serializers.CharField(max_length=200, allow_blank=False),
        required=False,
        help_text="Only these groups (empty: every group).",
    )
    onlyUnaudited = serializers.BooleanField(required=False)
    onlyWithRecordings = serializers.BooleanField(required=False)
    maxRecordingsPerFiche = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    maxFiches = serializers.IntegerField(
        min_value=1,
        required=False,
        allow_null=True,
        help_text="At most AUTOMATION_MAX_FICHES (lowers it, never raises it; a greater value is a 400).",
    )
    useRlm = serializers.BooleanField(required=False, help_text="Audits in transcript tools mode.")

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(key) for key in data if key not in self.fields)
            if unknown:
                message = f"Unknown key; expected one of {', '.join(SELECTION_DEFAULTS)}."
                raise serializers.ValidationError({key: [message] for key in unknown})
        return super().to_internal_value(data)


class ScheduleInput(FlatErrorsSerializer):
    """A schedule. On create the omitted fields take their defaults; on PATCH (``partial=True``)
    only the given fields change (``ficheSelection`` keys merge into the stored selection)."""

    name = serializers.CharField(max_length=200)
    isActive = serializers.BooleanField(required=False, default=True)
    scheduleType = serializers.ChoiceField(choices=ScheduleType.choices, required=False, default=ScheduleType.MANUAL)
    timeOfDay = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        help_text='"HH:MM" (00:00–23:59) in the schedule\'s timezone; null or empty for none.',
    )
    dayOfWeek = serializers.IntegerField(
        min_value=1, max_value=7, required=False, allow_null=True, default=None, help_text="1 (Monday) to 7 (Sunday)."
    )
    dayOfMonth = serializers.IntegerField(
        min_value=1,
        max_value=31,
        required=False,
        allow_null=True,
        default=None,
        help_text="1 to 31 (the month's last day when it is shorter).",
    )
    timezone = serializers.CharField(max_length=64, required=False, default="Europe/Paris")
    ficheSelection = FicheSelectionInput(required=False, default=dict)
    auditConfigIds = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        default=list,
        help_text="Audit config ids (empty: the config of each fiche's product).",
    )
    runTranscription = serializers.BooleanField(required=False, default=True)
    runAudits = serializers.BooleanField(required=False, default=True)
    skipIfTranscribed = serializers.BooleanField(required=False, default=True)
    continueOnError = serializers.BooleanField(required=False, default=True)
    retryFailed = serializers.BooleanField(required=False, default=False)
    maxRetries = serializers.IntegerField(min_value=0, max_value=10, required=False, default=1)
    notifyOnComplete = serializers.BooleanField(required=False, default=False)
    notifyOnError = serializers.BooleanField(required=False, default=True)
    webhookUrl = serializers.CharField(
        max_length=2048,
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        help_text="Receives the run's outcome (SSRF-guarded; null or empty removes it).",
    )
    webhookSecret = serializers.CharField(
        max_length=255,
        required=False,
        allow_null=True,
        default=None,
        write_only=True,
        help_text="Signing secret (Standard Webhooks; `whsec_…` base64 or any string). Never returned; "
        "omit it to keep the current one, null removes it.",
    )
    notifyEmails = serializers.ListField(child=serializers.EmailField(), required=False, default=list)

    def validate_timeOfDay(self, value: str | None) -> str | None:
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

    def validate_webhookUrl(self, value: str | None) -> str | None:
        return value or None  # "" removes it, as null does


class ScheduleListQuery(serializers.Serializer):
    isActive = serializers.BooleanField(required=False, allow_null=True, default=None)


class FicheSelectionOutput(serializers.Serializer):
    mode = serializers.ChoiceField(choices=SELECTION_MODES)
    startDate = serializers.DateField(allow_null=True)
    endDate = serializers.DateField(allow_null=True)
    relativeDays = serializers.IntegerField()
    ficheIds = serializers.ListField(child=serializers.CharField(), help_text="Only the fiches you may read.")
    groupes = serializers.ListField(child=serializers.CharField())
    onlyUnaudited = serializers.BooleanField()
    onlyWithRecordings = serializers.BooleanField()
    maxRecordingsPerFiche = serializers.IntegerField(allow_null=True)
    maxFiches = serializers.IntegerField(allow_null=True)
    useRlm = serializers.BooleanField()


class ScheduleOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    isActive = serializers.BooleanField()
    scheduleType = serializers.ChoiceField(choices=ScheduleType.choices)
    timeOfDay = serializers.CharField(allow_null=True)
    dayOfWeek = serializers.IntegerField(allow_null=True)
    dayOfMonth = serializers.IntegerField(allow_null=True)
    timezone = serializers.CharField()
    ficheSelection = FicheSelectionOutput()
    auditConfigIds = serializers.ListField(child=serializers.IntegerField())
    runTranscription = serializers.BooleanField()
    runAudits = serializers.BooleanField()
    skipIfTranscribed = serializers.BooleanField()
    continueOnError = serializers.BooleanField()
    retryFailed = serializers.BooleanField()
    maxRetries = serializers.IntegerField()
    notifyOnComplete = serializers.BooleanField()
    notifyOnError = serializers.BooleanField()
    webhookUrl = serializers.CharField(allow_null=True, help_text="Null unless you hold automation.write.")
    hasWebhookSecret = serializers.BooleanField(help_text="The secret itself is never returned.")
    notifyEmails = serializers.ListField(
        child=serializers.EmailField(), allow_null=True, help_text="Null unless you hold automation.write."
    )
    ownerId = serializers.IntegerField(
        allow_null=True, help_text="Whose grants bound what its runs touch (the creator; null: runs fail)."
    )
    nextRunAt = serializers.DateTimeField(allow_null=True, help_text="The next scheduled slot (null: MANUAL/inactive).")
    lastRunAt = serializers.DateTimeField(allow_null=True)
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()


class RunStartedOutput(serializers.Serializer):
    runId = serializers.UUIDField()


# --- Runs ---------------------------------------------------------------------------------------------------


@extend_schema_field({"type": "string", "enum": list(RunStatus.values)}, component_name="AutomationRunStatusEnum")
class RunStatusField(serializers.ChoiceField):
    """A run's status, documented as its own named enum (not merged with other apps' "status" enums)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=RunStatus.choices, **kwargs)


class RunListQuery(serializers.Serializer):
    status = RunStatusField(required=False)


class RunOutput(serializers.Serializer):
    id = serializers.UUIDField()
    scheduleId = serializers.IntegerField(allow_null=True, help_text="Null once the schedule is deleted.")
    scheduleName = serializers.CharField(allow_null=True, help_text="The schedule's name when the run started.")
    trigger = serializers.ChoiceField(choices=["manual", "scheduled"])
    slot = serializers.DateTimeField(allow_null=True)
    status = RunStatusField()
    dateFrom = serializers.DateField(allow_null=True)
    dateTo = serializers.DateField(allow_null=True)
    revalidation = serializers.CharField()
    totalFiches = serializers.IntegerField()
    successful = serializers.IntegerField()
    failed = serializers.IntegerField()
    ignored = serializers.IntegerField()
    skipped = serializers.IntegerField()
    error = serializers.CharField(allow_null=True)
    createdAt = serializers.DateTimeField()
    startedAt = serializers.DateTimeField(allow_null=True)
    completedAt = serializers.DateTimeField(allow_null=True)
    durationMs = serializers.IntegerField(allow_null=True, help_text="Null until the run ends.")


class RunFicheOutput(serializers.Serializer):
    ficheId = serializers.CharField()
    status = serializers.CharField()
    step = serializers.CharField()
    reason = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    recordingsCount = serializers.IntegerField(allow_null=True)
    transcriptionAttempts = serializers.IntegerField()
    auditIds = serializers.ListField(child=serializers.CharField())


class FicheErrorOutput(serializers.Serializer):
    ficheId = serializers.CharField()
    error = serializers.CharField(allow_null=True)


class FicheReasonOutput(serializers.Serializer):
    ficheId = serializers.CharField()
    reason = serializers.CharField(allow_null=True)


class ResultSummaryOutput(serializers.Serializer):
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
    resultSummary = ResultSummaryOutput(help_text="Rebuilt from the fiches you may read.")
