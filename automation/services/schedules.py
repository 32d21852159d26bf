"""Writes of automation schedules. The input arrives checked field by field (the API's
``ScheduleInput``; the model's field names, ``fiche_selection`` keys in snake_case too); here it is
checked again as a whole on the **effective** config (the stored schedule with the input on top): what
a schedule type needs, what a fiche selection mode needs and the range caps, the audit config ids, the
webhook URL (SSRF guard) and secret. Every error is a 400 naming the field with a dotted path
(``details: {"fiche_selection.relative_days": [..]}``, message ``"fiche_selection.relative_days: .."``;
the API shows it in its camelCase names). The messages' prose names fields as the API does.

``next_run_at`` follows the schedule's timing: set on create, and on update when a timing field
(active, type, time, day, timezone) changed or it is missing. It is deliberately not recomputed when
only other fields change: a slot that is due but not yet started by the beat would be skipped.

**Owner and scope.** The user who creates a schedule (API or admin) is its ``owner``; a run acts for
the owner with their grants as they are then (``automation.access``). On create, and on an update
that changes ``fiche_selection``, ``run_transcription`` or ``run_audits``, the effective ``fiche_ids``
and ``groupes`` must be in the scope of the owner **and** of the user making the change (an editor cannot
use a wider owner's scope to name fiches they could not touch themselves) for every key the run uses
(``fiches`` read, ``transcriptions`` write when it transcribes, ``audits`` write when it audits).
Otherwise: 403 ``scope_denied`` naming the field, never a fiche: an id that does not exist and one
outside the scope get the same answer. An id not in the fiche cache cannot be placed in a SELF or
GROUP scope without a CRM call, so it is refused the same way unless every needed grant is ALL (an
ALL user may name any id; a run reports an unknown one ``failed``, "fiche not found in the CRM").

``fiche_selection.max_fiches`` may lower ``AUTOMATION_MAX_FICHES``, never raise it: a greater value is a
400 naming the field when given (a schedule saved before the setting was lowered is capped at run
time).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.grants import Scope, scope_for
from audits.models import AuditConfig
from automation import access
from automation.fields import SELECTION_DEFAULTS, SETTING_FIELDS
from automation.models import AutomationRun, AutomationSchedule, ScheduleType, Trigger
from automation.selectors import schedule_not_found
from automation.services.runs import run_create
from core.exceptions import ConflictError, InvalidInput, PermissionDeniedError
from realtime.url_safety import UnsafeWebhookUrl, validate_webhook_url
from realtime.webhooks import validate_secret

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("automation.schedules")

TIMING_FIELDS = ("is_active", "schedule_type", "time_of_day", "day_of_week", "day_of_month", "timezone")


def _user_id(user: User | None) -> int | None:
    return user.pk if user is not None else None


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _selection_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _to_fields(data: Mapping[str, Any], current: AutomationSchedule | None) -> dict[str, Any]:
    """The model field values ``data`` (field names) writes; ``fiche_selection`` merges into the
    stored selection (dates as ISO strings, as the run engine reads them)."""
    values: dict[str, Any] = {}
    for field, value in data.items():
        if field not in SETTING_FIELDS:
            raise ValueError(f"unknown schedule field {field!r}")
        if field == "fiche_selection":
            patch = {key: _selection_value(v) for key, v in dict(value or {}).items()}
            if "fiche_ids" in patch:
                patch["fiche_ids"] = _unique(str(f).strip() for f in patch["fiche_ids"])
            stored = dict(current.fiche_selection or {}) if current is not None else {}
            value = {**stored, **patch}
        elif field in ("audit_config_ids", "notify_emails"):
            value = _unique(list(value or []))
        elif field in ("webhook_url", "webhook_secret", "time_of_day") and value == "":
            value = None
        values[field] = value
    return values


def _selection_errors(selection: Mapping[str, Any]) -> dict[str, list[str]]:
    cap = settings.REFRESH_MAX_RANGE_DAYS
    errors: dict[str, list[str]] = {}
    mode = selection.get("mode")
    if mode == "relative":
        days = selection.get("relative_days")
        if not isinstance(days, int) or days < 1:
            errors["fiche_selection.relative_days"] = ["A relative selection needs relativeDays ≥ 1."]
        elif days > cap:
            errors["fiche_selection.relative_days"] = [f"At most {cap} days (REFRESH_MAX_RANGE_DAYS); got {days}."]
    elif mode == "dateRange":
        start, end = selection.get("start_date"), selection.get("end_date")
        for key, label, value in (("start_date", "startDate", start), ("end_date", "endDate", end)):
            if not value:
                errors[f"fiche_selection.{key}"] = [f"A dateRange selection needs {label}."]
        if start and end:
            days = (date.fromisoformat(end) - date.fromisoformat(start)).days + 1
            if days < 1:
                errors["fiche_selection.end_date"] = [f"endDate ({end}) is before startDate ({start})."]
            elif days > cap:
                errors["fiche_selection.end_date"] = [
                    f"A dateRange covers at most {cap} days (REFRESH_MAX_RANGE_DAYS); this one has {days}."
                ]
    elif mode == "manual":
        if not selection.get("fiche_ids"):
            errors["fiche_selection.fiche_ids"] = ["A manual selection needs at least one fiche id."]
    else:
        errors["fiche_selection.mode"] = ["Expected dateRange, relative or manual."]
    return errors


def _timing_errors(effective: Mapping[str, Any]) -> dict[str, list[str]]:
    schedule_type = effective["schedule_type"]
    if schedule_type == ScheduleType.MANUAL:
        return {}
    needed = [("time_of_day", "timeOfDay")]
    if schedule_type == ScheduleType.WEEKLY:
        needed.append(("day_of_week", "dayOfWeek"))
    elif schedule_type == ScheduleType.MONTHLY:
        needed.append(("day_of_month", "dayOfMonth"))
    return {
        field: [f"A {schedule_type} schedule needs {label}."] for field, label in needed if effective[field] is None
    }


def _audit_config_errors(config_ids: Sequence[int]) -> dict[str, list[str]]:
    active = dict(AuditConfig.objects.filter(pk__in=config_ids).values_list("pk", "is_active"))
    unknown = [config_id for config_id in config_ids if config_id not in active]
    if unknown:
        return {"audit_config_ids": [f"Unknown audit config id(s): {', '.join(map(str, unknown))}."]}
    inactive = [config_id for config_id in config_ids if not active[config_id]]
    if inactive:  # every audit would be refused (audit_config_inactive): say it now, not per fiche later
        return {"audit_config_ids": [f"Inactive audit config id(s): {', '.join(map(str, inactive))}."]}
    return {}


def _max_fiches_errors(patch: Mapping[str, Any]) -> dict[str, list[str]]:
    """``max_fiches`` (when given) may lower ``AUTOMATION_MAX_FICHES``, never raise it."""
    value, cap = patch.get("max_fiches"), settings.AUTOMATION_MAX_FICHES
    if isinstance(value, int) and value > cap:
        return {"fiche_selection.max_fiches": [f"At most {cap} (AUTOMATION_MAX_FICHES); got {value}."]}
    return {}


SCOPE_MESSAGE = {
    "fiche_selection.fiche_ids": "One or more fiche ids are unknown, or outside the scope of the schedule's "
    "owner or your own.",
    "fiche_selection.groupes": "One or more groups are outside the scope of the schedule's owner or your own.",
}


def _check_scope(effective: Mapping[str, Any], *, owner: User | None, user: User | None, touched: bool) -> None:
    """403 ``scope_denied`` (naming the field, never a fiche) when the effective selection names
    fiche ids or groups outside the scope of the owner or of the user making the change."""
    if not touched:
        return
    selection = {**SELECTION_DEFAULTS, **(effective["fiche_selection"] or {})}
    fiche_ids = [str(f) for f in selection.get("fiche_ids") or []]
    groupes = [str(g) for g in selection.get("groupes") or []]
    wanted = access.needs(effective)
    principals = [p for p in dict.fromkeys([owner, user]) if p is not None]
    for principal in principals:
        field = None
        if fiche_ids and access.ids_in_scope(principal, fiche_ids, wanted) != set(fiche_ids):
            field = "fiche_selection.fiche_ids"
        elif not access.groupes_in_scope(principal, groupes, wanted):
            field = "fiche_selection.groupes"
        if field is not None:
            logger.info(
                "automation_schedule_scope_denied",
                extra={"field": field, "user_id": _user_id(user), "owner_id": _user_id(owner)},
            )
            raise PermissionDeniedError(
                f"{field}: {SCOPE_MESSAGE[field]}", code="scope_denied", details={field: [SCOPE_MESSAGE[field]]}
            )


def schedule_clean(
    *, data: Mapping[str, Any], current: AutomationSchedule | None = None, user: User | None = None
) -> dict[str, Any]:
    """The model field values to write for ``data`` (checked field by field, field names), checked on
    the effective config. The audit config ids, the webhook URL and the secret are checked when
    given (a config deleted since, or a host that no longer resolves, does not block an unrelated
    edit; the URL is checked again when a webhook is sent). Raises ``InvalidInput`` naming the
    fields, ``UnsafeWebhookUrl`` (``unsafe_webhook_url``, the code the fiches API uses), or
    ``PermissionDeniedError`` (``scope_denied``) when the selection names fiches or groups outside
    the scope of the owner (``current.owner``, or ``user`` for a new schedule) or of ``user``."""
    values = _to_fields(data, current)
    base = current if current is not None else AutomationSchedule()
    effective = {field: values.get(field, getattr(base, field)) for field in SETTING_FIELDS}

    errors = _timing_errors(effective)
    errors.update(_selection_errors({**SELECTION_DEFAULTS, **(effective["fiche_selection"] or {})}))
    errors.update(_max_fiches_errors(dict(data.get("fiche_selection") or {})))
    if values.get("audit_config_ids"):
        errors.update(_audit_config_errors(values["audit_config_ids"]))
    if values.get("webhook_secret") is not None:
        try:
            validate_secret(values["webhook_secret"])
        except InvalidInput as exc:
            errors["webhook_secret"] = [exc.message]
    if errors:
        field, messages = next(iter(errors.items()))
        raise InvalidInput(f"{field}: {messages[0]}", details=errors)

    owner = current.owner if current is not None else user
    touched = current is None or any(f in values for f in ("fiche_selection", "run_transcription", "run_audits"))
    _check_scope(effective, owner=owner, user=user, touched=touched)

    if values.get("webhook_url"):
        try:
            validate_webhook_url(values["webhook_url"])
        except UnsafeWebhookUrl as exc:
            exc.details = {"webhook_url": [exc.message], **exc.details}
            raise
    return values


def _set_next_run(schedule: AutomationSchedule) -> None:
    from automation.services.scheduler import next_slot

    schedule.next_run_at = next_slot(schedule, after=timezone.now())


@transaction.atomic
def schedule_create(*, data: Mapping[str, Any], user: User | None = None) -> AutomationSchedule:
    """A schedule from ``data`` (field names; omitted fields take the model's defaults), owned by
    ``user`` (None, e.g. from a script: no owner, so its runs have no fiche in scope)."""
    schedule = AutomationSchedule(**schedule_clean(data=data, user=user), created_by=user, owner=user)
    _set_next_run(schedule)
    schedule.save()
    logger.info(
        "automation_schedule_created",
        extra={"schedule_id": schedule.pk, "schedule_type": schedule.schedule_type, "user_id": _user_id(user)},
    )
    return schedule


def require_manager(schedule: AutomationSchedule, user: User | None) -> None:
    """Changing, deleting or running a schedule spends its owner's reach (a run acts in the owner's scope):
    only the owner, a user with ``automation.write`` scope ALL, or a superuser may (403 otherwise). Calls
    without a user (scripts, beat) are trusted."""
    if user is None or user.is_superuser or (schedule.owner_id is not None and schedule.owner_id == user.pk):
        return
    if scope_for(user, "automation", "write") == Scope.ALL:
        return
    raise PermissionDeniedError(
        "Only the schedule's owner or an automation manager (automation.write, scope ALL) may change or run it.",
        code="not_schedule_owner",
        details={"schedule_id": schedule.pk},
    )


@transaction.atomic
def schedule_update(*, schedule_id: int, patch: Mapping[str, Any], user: User | None = None) -> AutomationSchedule:
    """Apply a PATCH (any subset of the fields, field names), validated on the effective config."""
    schedule = AutomationSchedule.objects.select_for_update().filter(pk=schedule_id).first()
    if schedule is None:
        raise schedule_not_found(schedule_id)
    require_manager(schedule, user)
    values = schedule_clean(data=patch, current=schedule, user=user)
    changed = [field for field, value in values.items() if getattr(schedule, field) != value]
    for field in changed:
        setattr(schedule, field, values[field])
    slot_missing = schedule.next_run_at is None and schedule.is_active and schedule.schedule_type != ScheduleType.MANUAL
    if slot_missing or any(field in TIMING_FIELDS for field in changed):
        _set_next_run(schedule)
        changed.append("next_run_at")
    if changed:
        schedule.save(update_fields=[*changed, "updated_at"])
        logger.info(
            "automation_schedule_updated",
            extra={"schedule_id": schedule.pk, "fields": ",".join(changed), "user_id": _user_id(user)},
        )
    return schedule


@transaction.atomic
def schedule_set_active(*, schedule_ids: Sequence[int], is_active: bool, user: User | None = None) -> int:
    """Enable or disable schedules (``next_run_at`` follows); the number that changed."""
    changed = 0
    for schedule in AutomationSchedule.objects.select_for_update().filter(pk__in=schedule_ids).order_by("pk"):
        if schedule.is_active == is_active:
            continue
        schedule.is_active = is_active
        _set_next_run(schedule)
        schedule.save(update_fields=["is_active", "next_run_at", "updated_at"])
        changed += 1
        logger.info(
            "automation_schedule_updated",
            extra={"schedule_id": schedule.pk, "fields": "is_active,next_run_at", "user_id": _user_id(user)},
        )
    return changed


@transaction.atomic
def schedule_delete(*, schedule_id: int, user: User | None = None) -> None:
    """Delete a schedule; its runs keep their history (their ``schedule`` becomes null)."""
    schedule = AutomationSchedule.objects.select_for_update().filter(pk=schedule_id).first()
    if schedule is None:
        raise schedule_not_found(schedule_id)
    require_manager(schedule, user)
    schedule.delete()
    logger.info("automation_schedule_deleted", extra={"schedule_id": schedule_id, "user_id": _user_id(user)})


def schedule_run_now(*, schedule_id: int, user: User | None = None) -> AutomationRun:
    """A manual run of the schedule (an inactive one too); its orchestrator starts after commit."""
    schedule = AutomationSchedule.objects.filter(pk=schedule_id).first()
    if schedule is None:
        raise schedule_not_found(schedule_id)
    require_manager(schedule, user)
    run = run_create(schedule=schedule, trigger=Trigger.MANUAL, user=user)
    if run is None:  # only a slotted run can collide; a manual one has no slot
        raise ConflictError("The run could not be created.", code="run_exists", details={"schedule_id": schedule_id})
    return run
