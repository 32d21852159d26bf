"""The schedule's settings as the original front end names them (camelCase) and as the model stores
them, and the snapshot a run keeps of them."""

from __future__ import annotations

from typing import Any

from automation.models import AutomationSchedule

# API name -> model field (fiche selection keeps its camelCase keys inside its JSON column).
SCHEDULE_FIELDS: dict[str, str] = {
    "name": "name",
    "isActive": "is_active",
    "scheduleType": "schedule_type",
    "timeOfDay": "time_of_day",
    "dayOfWeek": "day_of_week",
    "dayOfMonth": "day_of_month",
    "timezone": "timezone",
    "ficheSelection": "fiche_selection",
    "auditConfigIds": "audit_config_ids",
    "runTranscription": "run_transcription",
    "runAudits": "run_audits",
    "skipIfTranscribed": "skip_if_transcribed",
    "continueOnError": "continue_on_error",
    "retryFailed": "retry_failed",
    "maxRetries": "max_retries",
    "notifyOnComplete": "notify_on_complete",
    "notifyOnError": "notify_on_error",
    "webhookUrl": "webhook_url",
    "webhookSecret": "webhook_secret",
    "notifyEmails": "notify_emails",
}

# ficheSelection keys and their defaults.
SELECTION_DEFAULTS: dict[str, Any] = {
    "mode": "relative",  # dateRange | relative | manual
    "startDate": None,  # YYYY-MM-DD (dateRange)
    "endDate": None,
    "relativeDays": 1,  # relative: the last N days up to today (in the schedule's timezone)
    "ficheIds": [],  # manual
    "groupes": [],  # empty: every group
    "onlyUnaudited": False,
    "onlyWithRecordings": True,
    "maxRecordingsPerFiche": None,  # else AUTOMATION_MAX_RECORDINGS_PER_FICHE
    "maxFiches": None,
    "useRlm": False,
}


def selection_of(schedule: AutomationSchedule) -> dict[str, Any]:
    """The schedule's fiche selection with every key, defaults filled in."""
    return {**SELECTION_DEFAULTS, **(schedule.fiche_selection or {})}


def schedule_settings(schedule: AutomationSchedule) -> dict[str, Any]:
    """The schedule's settings in the API's names (the webhook secret left out)."""
    values = {api: getattr(schedule, field) for api, field in SCHEDULE_FIELDS.items() if api != "webhookSecret"}
    values["ficheSelection"] = selection_of(schedule)
    values["auditConfigIds"] = list(schedule.audit_config_ids or [])
    values["notifyEmails"] = list(schedule.notify_emails or [])
    return values
