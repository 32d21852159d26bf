"""Reads of automation for the API and the admin: schedules in the API's camelCase shape (the webhook
secret never leaves: only ``hasWebhookSecret``), runs newest first, and a run's detail with its
per-fiche rows and the legacy ``resultSummary`` rebuilt from them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db.models import QuerySet
from django.db.models.fields.json import KT

from automation.fields import schedule_settings
from automation.models import AutomationRun, AutomationRunFicheResult, AutomationSchedule, FicheStatus
from config.exceptions import NotFoundError
from config.formats import iso

# --- Schedules ----------------------------------------------------------------------------------------------


def schedule_not_found(schedule_id: object) -> NotFoundError:
    return NotFoundError(
        f"No automation schedule {schedule_id}.", code="schedule_not_found", details={"schedule_id": schedule_id}
    )


def schedules_queryset(*, is_active: bool | None = None) -> QuerySet[AutomationSchedule]:
    queryset = AutomationSchedule.objects.order_by("name", "id")
    if is_active is not None:
        queryset = queryset.filter(is_active=is_active)
    return queryset


def schedule_get(schedule_id: int) -> AutomationSchedule:
    schedule = AutomationSchedule.objects.filter(pk=schedule_id).first()
    if schedule is None:
        raise schedule_not_found(schedule_id)
    return schedule


def schedule_dict(schedule: AutomationSchedule) -> dict[str, Any]:
    """The schedule as the API returns it: its settings in the front end's names plus ``id``,
    ``hasWebhookSecret`` and its timestamps. The secret itself is never included."""
    settings = schedule_settings(schedule)
    settings.pop("webhookSecret", None)  # schedule_settings leaves it out; never let it through
    return {
        "id": schedule.pk,
        **settings,
        "hasWebhookSecret": bool(schedule.webhook_secret),
        "nextRunAt": iso(schedule.next_run_at),
        "lastRunAt": iso(schedule.last_run_at),
        "createdAt": iso(schedule.created_at),
        "updatedAt": iso(schedule.updated_at),
    }


# --- Runs ---------------------------------------------------------------------------------------------------

RUN_COLUMNS = (
    "id",
    "schedule_id",
    "trigger",
    "slot",
    "status",
    "date_from",
    "date_to",
    "revalidation",
    "total_fiches",
    "successful",
    "failed",
    "ignored",
    "skipped",
    "error",
    "created_at",
    "started_at",
    "completed_at",
)


def runs_queryset(*, schedule_id: int | None = None, status: str | None = None) -> QuerySet[AutomationRun, Any]:
    """Runs newest first as rows of ``RUN_COLUMNS`` plus ``schedule_name`` (from the run's config
    snapshot, read in SQL: the snapshot itself is not loaded for a list)."""
    queryset = AutomationRun.objects.all()
    if schedule_id is not None:
        queryset = queryset.filter(schedule_id=schedule_id)
    if status:
        queryset = queryset.filter(status=status)
    return queryset.order_by("-created_at", "-id").values(*RUN_COLUMNS, schedule_name=KT("config__name"))


def schedule_runs_queryset(*, schedule_id: int, status: str | None = None) -> QuerySet[AutomationRun, Any]:
    """The runs of a schedule that exists (else 404 ``schedule_not_found``)."""
    if not AutomationSchedule.objects.filter(pk=schedule_id).exists():
        raise schedule_not_found(schedule_id)
    return runs_queryset(schedule_id=schedule_id, status=status)


def _duration_ms(row: Mapping[str, Any]) -> int | None:
    completed = row["completed_at"]
    if completed is None:
        return None
    started = row["started_at"] or row["created_at"]
    return max(0, int((completed - started).total_seconds() * 1000))


def run_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A run in the API's shape, from a ``runs_queryset`` row."""
    return {
        "id": str(row["id"]),
        "scheduleId": row["schedule_id"],
        "scheduleName": row["schedule_name"],
        "trigger": row["trigger"],
        "slot": iso(row["slot"]),
        "status": row["status"],
        "dateFrom": iso(row["date_from"]),
        "dateTo": iso(row["date_to"]),
        "revalidation": row["revalidation"],
        "totalFiches": row["total_fiches"],
        "successful": row["successful"],
        "failed": row["failed"],
        "ignored": row["ignored"],
        "skipped": row["skipped"],
        "error": row["error"],
        "createdAt": iso(row["created_at"]),
        "startedAt": iso(row["started_at"]),
        "completedAt": iso(row["completed_at"]),
        "durationMs": _duration_ms(row),
    }


FICHE_COLUMNS = (
    "fiche_id",
    "status",
    "step",
    "reason",
    "error",
    "recordings_count",
    "transcription_run_id",
    "transcription_attempts",
    "audit_ids",
)


def run_fiche_rows(run: AutomationRun) -> list[dict[str, Any]]:
    return list(AutomationRunFicheResult.objects.filter(run=run).order_by("id").values(*FICHE_COLUMNS))


def fiche_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "ficheId": row["fiche_id"],
        "status": row["status"],
        "step": row["step"],
        "reason": row["reason"],
        "error": row["error"],
        "recordingsCount": row["recordings_count"],
        "transcriptionAttempts": row["transcription_attempts"],
        "auditIds": list(row["audit_ids"] or []),
    }


def result_summary(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The original's ``result_summary`` rebuilt from the per-fiche rows: the fiche ids by outcome
    (pending fiches are in none of the lists), how many fiches had a transcription run, and how
    many audits were started."""
    summary: dict[str, Any] = {
        "total": 0,
        "successful": [],
        "failed": [],
        "ignored": [],
        "skipped": [],
        "transcriptions": 0,
        "audits": 0,
    }
    for row in rows:
        summary["total"] += 1
        fiche_id, status = row["fiche_id"], row["status"]
        if status == FicheStatus.SUCCESSFUL:
            summary["successful"].append(fiche_id)
        elif status == FicheStatus.FAILED:
            summary["failed"].append({"ficheId": fiche_id, "error": row["error"]})
        elif status in (FicheStatus.IGNORED, FicheStatus.SKIPPED):
            summary[status].append({"ficheId": fiche_id, "reason": row["reason"]})
        if row["transcription_run_id"] is not None:
            summary["transcriptions"] += 1
        summary["audits"] += len(row["audit_ids"] or [])
    return summary


def run_detail(run_id: object) -> dict[str, Any]:
    """A run with its settings snapshot, its per-fiche rows and ``resultSummary``
    (404 ``run_not_found`` for an unknown or malformed id)."""
    from automation.services.runs import run_for_id

    run = run_for_id(run_id)
    config = dict(run.config or {})
    config.pop("webhookSecret", None)  # the snapshot leaves it out; never let it through
    row = {column: getattr(run, column) for column in RUN_COLUMNS}
    row["schedule_name"] = config.get("name")
    fiches = run_fiche_rows(run)
    return {
        **run_dict(row),
        "config": config,
        "fiches": [fiche_dict(f) for f in fiches],
        "resultSummary": result_summary(fiches),
    }
