"""A schedule's settings as the domain names them (the model's snake_case fields), its fiche selection's
keys and defaults, and the snapshot a run keeps of them (``AutomationRun.config``). The API speaks
camelCase: ``automation.api`` converts at the edge (``djangorestframework-camel-case``)."""

from __future__ import annotations

from typing import Any

from automation.models import AutomationSchedule

# The settings a schedule's input may change (model fields), in the order the API shows them.
SETTING_FIELDS: tuple[str, ...] = (
    "name",
    "is_active",
    "schedule_type",
    "time_of_day",
    "day_of_week",
    "day_of_month",
    "timezone",
    "fiche_selection",
    "audit_config_ids",
    "run_transcription",
    "run_audits",
    "skip_if_transcribed",
    "continue_on_error",
    "retry_failed",
    "max_retries",
    "notify_on_complete",
    "notify_on_error",
    "webhook_url",
    "webhook_secret",
    "notify_emails",
)

# fiche_selection keys and their defaults.
SELECTION_DEFAULTS: dict[str, Any] = {
    "mode": "relative",  # dateRange | relative | manual
    "start_date": None,  # YYYY-MM-DD (dateRange)
    "end_date": None,
    "relative_days": 1,  # relative: the last N days up to today (in the schedule's timezone)
    "fiche_ids": [],  # manual
    "groupes": [],  # empty: every group
    "only_unaudited": False,
    "only_with_recordings": True,
    "max_recordings_per_fiche": None,  # else AUTOMATION_MAX_RECORDINGS_PER_FICHE
    "max_fiches": None,
    "use_rlm": False,
}


def selection_of(schedule: AutomationSchedule) -> dict[str, Any]:
    """The schedule's fiche selection with every key, defaults filled in."""
    return {**SELECTION_DEFAULTS, **(schedule.fiche_selection or {})}


def schedule_settings(schedule: AutomationSchedule) -> dict[str, Any]:
    """The schedule's settings (the webhook secret left out): what a run snapshots and the API shows."""
    values = {field: getattr(schedule, field) for field in SETTING_FIELDS if field != "webhook_secret"}
    values["fiche_selection"] = selection_of(schedule)
    values["audit_config_ids"] = list(schedule.audit_config_ids or [])
    values["notify_emails"] = list(schedule.notify_emails or [])
    return values
