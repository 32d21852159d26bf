"""The JSON a schedule and a run keep in snake_case, as the domain reads it: a schedule's
``fiche_selection`` keys (``maxFiches`` → ``max_fiches``...) and a run's ``config`` snapshot (its keys,
``webhookSecret`` of older snapshots included, and its fiche selection's). The API keeps showing them
in camelCase (``automation.api.camel`` converts at the edge). Reversible: back to the camelCase keys.

The key maps are frozen here (a migration must mean the same thing whatever the code becomes); a key
that is not in them (``mode``, ``groupes``, ``name``, ``timezone``, or one already converted) is kept
as it is."""

from django.db import migrations

SELECTION_KEYS = {
    "startDate": "start_date",
    "endDate": "end_date",
    "relativeDays": "relative_days",
    "ficheIds": "fiche_ids",
    "onlyUnaudited": "only_unaudited",
    "onlyWithRecordings": "only_with_recordings",
    "maxRecordingsPerFiche": "max_recordings_per_fiche",
    "maxFiches": "max_fiches",
    "useRlm": "use_rlm",
}
CONFIG_KEYS = {
    "isActive": "is_active",
    "scheduleType": "schedule_type",
    "timeOfDay": "time_of_day",
    "dayOfWeek": "day_of_week",
    "dayOfMonth": "day_of_month",
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
BATCH = 500


def _renamed(value, keys):
    if not isinstance(value, dict):
        return value
    return {keys.get(key, key): item for key, item in value.items()}


def _config(value, config_keys, selection_keys, selection_key):
    config = _renamed(value, config_keys)
    if isinstance(config, dict) and selection_key in config:
        config[selection_key] = _renamed(config[selection_key], selection_keys)
    return config


def _rewrite(model, field, convert):
    """``field`` of every row of ``model`` through ``convert``; only the rows it changes are written."""
    changed = []
    for row in model.objects.only("pk", field).iterator(chunk_size=BATCH):
        value = convert(getattr(row, field))
        if value != getattr(row, field):
            setattr(row, field, value)
            changed.append(row)
        if len(changed) >= BATCH:
            model.objects.bulk_update(changed, [field])
            changed = []
    model.objects.bulk_update(changed, [field])


def _convert(apps, config_keys, selection_keys, selection_key):
    Schedule = apps.get_model("automation", "AutomationSchedule")
    Run = apps.get_model("automation", "AutomationRun")
    _rewrite(Schedule, "fiche_selection", lambda value: _renamed(value, selection_keys))
    _rewrite(Run, "config", lambda value: _config(value, config_keys, selection_keys, selection_key))


def to_snake_case(apps, schema_editor):
    _convert(apps, CONFIG_KEYS, SELECTION_KEYS, "fiche_selection")


def to_camel_case(apps, schema_editor):
    _convert(
        apps,
        {snake: camel for camel, snake in CONFIG_KEYS.items()},
        {snake: camel for camel, snake in SELECTION_KEYS.items()},
        "ficheSelection",
    )


class Migration(migrations.Migration):
    dependencies = [
        ("automation", "0003_owner_and_notifications"),
    ]

    operations = [
        migrations.RunPython(to_snake_case, to_camel_case),
    ]
