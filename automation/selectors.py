"""Reads of automation for the API and the admin: schedules in the API's shape (the webhook secret never
leaves: only ``has_webhook_secret``), runs newest first, and a run's detail with its per-fiche rows and
the legacy ``result_summary`` rebuilt from them. Keys are snake_case, as everywhere behind the API: the
API's renderer shows them in camelCase (``hasWebhookSecret``, ``resultSummary``...).

What a reader receives (``automation.read`` is the gate to every schedule and every run; the
``automation`` grant's scope is not used):

- fiche ids (a schedule's ``fiche_selection.fiche_ids``, a run's config snapshot, its per-fiche rows
  and ``result_summary`` lists) only for the fiches the reader may read (``fiches`` read scope; an id
  not in the cache only with scope ALL); a row's ``audit_ids`` only when the reader may also read
  that fiche's audits (``audits`` read scope). A run's counts (``total_fiches``, ``successful``...)
  stay the run's own: numbers, not data. ``result_summary`` is rebuilt from the rows shown;
- ``webhook_url`` and ``notify_emails`` (of a schedule and of a run's snapshot) only with
  ``automation.write``; ``null`` for a reader without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db.models import QuerySet
from django.db.models.fields.json import KT

from accounts.grants import Scope, has_grant, scope_for
from accounts.models import User
from accounts.permissions import scope_queryset
from automation.fields import schedule_settings
from automation.models import AutomationRun, AutomationRunFicheResult, AutomationSchedule, FicheStatus
from core.exceptions import NotFoundError
from core.formats import iso
from fiches.models import FicheCache

# --- What a reader may see ------------------------------------------------------------------------------


def readable_fiche_ids(user: User | None, fiche_ids: Iterable[str], key: str = "fiches") -> set[str]:
    """The ids of ``fiche_ids`` whose fiche ``user`` may read under ``key`` (``fiches``: the fiche;
    ``audits``: its audits). An id not in the cache: only with scope ALL (nothing places it in a
    narrower scope)."""
    ids = {str(f) for f in fiche_ids}
    scope = scope_for(user, key, "read")
    if scope is None or not ids or user is None:
        return set()
    if scope == Scope.ALL:
        return ids
    rows = scope_queryset(FicheCache.objects.filter(fiche_id__in=ids), user, key)
    return set(rows.values_list("fiche_id", flat=True))


def _visible_settings(settings: dict[str, Any], user: User | None, readable: set[str]) -> dict[str, Any]:
    """A schedule's settings (or a run's snapshot) as ``user`` may see them: the secret never, the
    notification targets only with automation.write, the fiche ids only those in ``readable``."""
    settings = dict(settings)
    settings.pop("webhook_secret", None)  # schedule_settings leaves it out; never let it through
    if not has_grant(user, "automation", "write"):
        for key in ("webhook_url", "notify_emails"):
            if key in settings:
                settings[key] = None
    selection = settings.get("fiche_selection")
    if isinstance(selection, dict) and selection.get("fiche_ids"):
        settings["fiche_selection"] = {
            **selection,
            "fiche_ids": [f for f in selection["fiche_ids"] if str(f) in readable],
        }
    return settings


def _selection_ids(settings: Mapping[str, Any]) -> list[str]:
    selection = settings.get("fiche_selection")
    if not isinstance(selection, dict):
        return []
    return [str(f) for f in selection.get("fiche_ids") or []]


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


def schedule_dicts(schedules: Iterable[AutomationSchedule], user: User | None) -> list[dict[str, Any]]:
    """The schedules as ``user`` may see them (one query for the fiche ids of them all)."""
    schedules = list(schedules)
    settings = [schedule_settings(schedule) for schedule in schedules]
    readable = readable_fiche_ids(user, [f for one in settings for f in _selection_ids(one)])
    return [_schedule_dict(s, one, user, readable) for s, one in zip(schedules, settings, strict=True)]


def schedule_dict(schedule: AutomationSchedule, user: User | None) -> dict[str, Any]:
    """The schedule as the API returns it to ``user``: its settings plus ``id``, ``owner_id``,
    ``has_webhook_secret`` and its timestamps. The secret itself is never included;
    the notification targets and fiche ids as ``_visible_settings`` says."""
    return schedule_dicts([schedule], user)[0]


def _schedule_dict(
    schedule: AutomationSchedule, settings: dict[str, Any], user: User | None, readable: set[str]
) -> dict[str, Any]:
    return {
        "id": schedule.pk,
        **_visible_settings(settings, user, readable),
        "owner_id": schedule.owner_id,
        "has_webhook_secret": bool(schedule.webhook_secret),
        "next_run_at": iso(schedule.next_run_at),
        "last_run_at": iso(schedule.last_run_at),
        "created_at": iso(schedule.created_at),
        "updated_at": iso(schedule.updated_at),
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
        "schedule_id": row["schedule_id"],
        "schedule_name": row["schedule_name"],
        "trigger": row["trigger"],
        "slot": iso(row["slot"]),
        "status": row["status"],
        "date_from": iso(row["date_from"]),
        "date_to": iso(row["date_to"]),
        "revalidation": row["revalidation"],
        "total_fiches": row["total_fiches"],
        "successful": row["successful"],
        "failed": row["failed"],
        "ignored": row["ignored"],
        "skipped": row["skipped"],
        "error": row["error"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "completed_at": iso(row["completed_at"]),
        "duration_ms": _duration_ms(row),
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


def run_fiche_rows(run: AutomationRun, user: User | None) -> list[dict[str, Any]]:
    """The run's per-fiche rows ``user`` may read (``fiches`` read scope), oldest first; ``audit_ids``
    emptied where they may not read the fiche's audits."""
    rows = AutomationRunFicheResult.objects.filter(run=run).order_by("id")
    scope = scope_for(user, "fiches", "read")
    if scope is None or user is None:
        return []
    if scope != Scope.ALL:
        readable = scope_queryset(FicheCache.objects.all(), user, "fiches").values("fiche_id")
        rows = rows.filter(fiche_id__in=readable)
    found = list(rows.values(*FICHE_COLUMNS))
    audited = {r["fiche_id"] for r in found if r["audit_ids"]}
    if audited:
        audits_readable = readable_fiche_ids(user, audited, key="audits")
        for row in found:
            if row["audit_ids"] and row["fiche_id"] not in audits_readable:
                row["audit_ids"] = []
    return found


def fiche_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "fiche_id": row["fiche_id"],
        "status": row["status"],
        "step": row["step"],
        "reason": row["reason"],
        "error": row["error"],
        "recordings_count": row["recordings_count"],
        "transcription_attempts": row["transcription_attempts"],
        "audit_ids": list(row["audit_ids"] or []),
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
            summary["failed"].append({"fiche_id": fiche_id, "error": row["error"]})
        elif status in (FicheStatus.IGNORED, FicheStatus.SKIPPED):
            summary[status].append({"fiche_id": fiche_id, "reason": row["reason"]})
        if row["transcription_run_id"] is not None:
            summary["transcriptions"] += 1
        summary["audits"] += len(row["audit_ids"] or [])
    return summary


def run_detail(run_id: object, user: User | None) -> dict[str, Any]:
    """A run as ``user`` may see it: its settings snapshot, the per-fiche rows they may read and
    ``result_summary`` rebuilt from those (404 ``run_not_found`` for an unknown or malformed id)."""
    from automation.services.runs import run_for_id

    run = run_for_id(run_id)
    snapshot = dict(run.config or {})
    config = _visible_settings(snapshot, user, readable_fiche_ids(user, _selection_ids(snapshot)))
    row = {column: getattr(run, column) for column in RUN_COLUMNS}
    row["schedule_name"] = config.get("name")
    fiches = run_fiche_rows(run, user)
    return {
        **run_dict(row),
        "config": config,
        "fiches": [fiche_dict(f) for f in fiches],
        "result_summary": result_summary(fiches),
    }
