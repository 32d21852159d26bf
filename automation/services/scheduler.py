"""When automation schedules run: their slots (DST-correct, in the schedule's own timezone) and the
beat's tick that starts the runs that are due.

A schedule's slot is a local wall-clock time (``time_of_day``, "HH:MM") in its IANA ``timezone``:

* DAILY: every local calendar day at ``time_of_day``;
* WEEKLY: every ``day_of_week`` (1 = Monday ... 7 = Sunday) at ``time_of_day``;
* MONTHLY: every month on ``day_of_month`` (1 ... 31) at ``time_of_day``; in a month shorter than
  ``day_of_month``, on the month's last day (31 → 28/29 February, 30 April...);
* MANUAL (and inactive schedules) have no slot.

Slots are found by walking local calendar dates and turning each candidate date + time into an
instant with ``zoneinfo`` (never by adding 24 h in UTC), so a daily 09:00 stays 09:00 local on both
sides of a DST change. Two local times need a rule:

* a local time that does not exist (spring forward: 02:30 on 2026-03-29 in Europe/Paris, where clocks
  jump from 02:00 to 03:00) runs at the first instant after the gap: 03:00 local (01:00 UTC), the
  moment the clocks jump. It runs once that day, and the next day at 02:30 again;
* a local time that happens twice (fall back: 02:30 on 2026-10-25 in Europe/Paris) runs once, at its
  first occurrence (``fold=0``: 02:30 CEST, 00:30 UTC), not again an hour later.

``tick`` (the beat, every minute) starts the due slots: ``next_run_at`` (UTC) is the next slot a
schedule runs; a schedule without one gets ``next_slot(after=now)`` (a new or re-activated schedule
does not fire for a slot already past). A due slot creates a run (``run_create``: the unique
(schedule, slot) row makes sure a slot runs once, whichever beat or retry gets there) and moves
``next_run_at`` to the first slot after now, so slots missed while the beat was down run once, not once
each. That move is a conditional update (``next_run_at`` still the slot we fired): two beats ticking
at once do not both move it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from automation.models import AutomationSchedule, ScheduleType, Trigger
from automation.services.runs import run_create

logger = logging.getLogger("automation.scheduler")

_TIME_OF_DAY = re.compile(r"^(\d{1,2}):(\d{2})$")
# More candidate dates than any rule needs (DAILY 3, WEEKLY 9, MONTHLY 3): a guard, not a limit.
_MAX_CANDIDATES = 64


# --- Slots ----------------------------------------------------------------------------------------------


def parse_time_of_day(value: str | None) -> time | None:
    """``"HH:MM"`` (24 h; "9:05" accepted) as a time, or None when absent or invalid."""
    match = _TIME_OF_DAY.match((value or "").strip())
    if match is None:
        return None
    hour, minute = int(match.group(1)), int(match.group(2))
    if hour > 23 or minute > 59:
        return None
    return time(hour, minute)


def schedule_zone(name: str | None) -> ZoneInfo | None:
    """The schedule's IANA timezone, or None when it is not one."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def next_slot(schedule: AutomationSchedule, *, after: datetime) -> datetime | None:
    """The schedule's first slot strictly after ``after`` (an aware datetime), in UTC.

    None for MANUAL or inactive schedules and for incomplete or invalid settings (no or bad
    ``time_of_day``, an unknown timezone, WEEKLY without a ``day_of_week`` in 1..7, MONTHLY without a
    ``day_of_month`` in 1..31).

    Rules (see the module docstring): DAILY every local day, WEEKLY on ``day_of_week`` (1 = Monday),
    MONTHLY on ``day_of_month`` (the month's last day when it is shorter), all at ``time_of_day`` local
    time in ``schedule.timezone``. Local dates are walked one by one (never 24 h added in UTC). A local
    time inside a spring-forward gap runs at the first instant after the gap (the moment the clocks
    jump: 02:30 on 2026-03-29 in Europe/Paris runs at 03:00 local, 01:00 UTC); an ambiguous local time
    (fall back) runs once, at its first occurrence (``fold=0``).
    """
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("next_slot needs an aware datetime")
    if not schedule.is_active or schedule.schedule_type not in (
        ScheduleType.DAILY,
        ScheduleType.WEEKLY,
        ScheduleType.MONTHLY,
    ):
        return None
    at = parse_time_of_day(schedule.time_of_day)
    tz = schedule_zone(schedule.timezone)
    if at is None or tz is None:
        return None
    # The day before too: a slot is never before its local date's midnight, so this misses nothing.
    start = after.astimezone(tz).date() - timedelta(days=1)
    candidates = _candidate_dates(schedule, start)
    if candidates is None:
        return None
    for _, day in zip(range(_MAX_CANDIDATES), candidates, strict=False):
        instant = local_instant(day, at, tz)
        if instant > after:
            return instant
    return None  # unreachable with valid settings


def _candidate_dates(schedule: AutomationSchedule, start: date) -> Iterator[date] | None:
    """The local dates the schedule runs on, from ``start`` on; None when its day is missing or invalid."""
    if schedule.schedule_type == ScheduleType.DAILY:
        return (start + timedelta(days=n) for n in range(_MAX_CANDIDATES))
    if schedule.schedule_type == ScheduleType.WEEKLY:
        weekday = schedule.day_of_week
        if weekday is None or not 1 <= weekday <= 7:
            return None
        first = start + timedelta(days=(weekday - start.isoweekday()) % 7)
        return (first + timedelta(weeks=n) for n in range(_MAX_CANDIDATES))
    day = schedule.day_of_month
    if day is None or not 1 <= day <= 31:
        return None
    return _monthly_dates(start, day)


def _monthly_dates(start: date, day: int) -> Iterator[date]:
    year, month = start.year, start.month
    for _ in range(_MAX_CANDIDATES):
        yield date(year, month, min(day, _days_in_month(year, month)))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _days_in_month(year: int, month: int) -> int:
    following = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return (following - timedelta(days=1)).day


def local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of local ``day`` + ``at`` in ``tz``: an ambiguous time's first occurrence; a
    time that does not exist (a DST gap), the first instant after the gap."""
    wall = datetime.combine(day, at)
    first = wall.replace(tzinfo=tz, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant  # exists (once, or twice and fold=0 is the first occurrence)
    # In a gap, fold=1 reads the wall time with the offset after the jump (an instant before the jump)
    # and fold=0 with the offset before it (an instant after the jump): the jump lies between them.
    low = int(wall.replace(tzinfo=tz, fold=1).timestamp())
    high = int(instant.timestamp())
    jumped = instant.astimezone(tz).utcoffset()
    while high - low > 1:  # low: still the old offset; high: already the new one
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == jumped:
            high = mid
        else:
            low = mid
    return datetime.fromtimestamp(high, UTC)


# --- The beat's tick ------------------------------------------------------------------------------------


def tick(*, now: datetime | None = None) -> list[str]:
    """Start the runs whose slot is due (the beat, every minute); returns the ids of the runs created.

    For each active non-MANUAL schedule whose ``next_run_at`` is null or <= now: a null one gets
    ``next_slot(after=now)`` and does not fire (no run for a slot already past); a due one runs its
    slot (``next_run_at``) once and its ``next_run_at`` becomes ``next_slot(after=now)`` (missed slots
    are skipped: one run however long the beat was down), by a conditional update. A schedule whose
    settings are broken gets ``next_run_at`` None (logged) and does not fire. Inactive and MANUAL
    schedules have their stale ``next_run_at`` cleared, so re-activating one does not fire a slot that
    passed while it was off. Each schedule is its own short transaction; one failing is logged and
    tried again at the next tick (its ``next_run_at`` did not move).
    """
    now = now or timezone.now()
    AutomationSchedule.objects.filter(
        Q(is_active=False) | Q(schedule_type=ScheduleType.MANUAL), next_run_at__isnull=False
    ).update(next_run_at=None)
    due = (
        AutomationSchedule.objects.filter(is_active=True)
        .exclude(schedule_type=ScheduleType.MANUAL)
        .filter(Q(next_run_at__isnull=True) | Q(next_run_at__lte=now))
        .order_by("pk")
    )
    created: list[str] = []
    for schedule in due:
        try:
            run_id = tick_schedule(schedule, now=now)
        except Exception:
            logger.exception("automation_tick_failed", extra={"schedule_id": schedule.pk})
            continue
        if run_id is not None:
            created.append(run_id)
    return created


def tick_schedule(schedule: AutomationSchedule, *, now: datetime) -> str | None:
    """One schedule's tick (``schedule`` as read by this beat, perhaps stale): the id of the run it
    created, or None (not due, slot already run, or broken settings)."""
    due = schedule.next_run_at
    following = next_slot(schedule, after=now)
    if following is None:
        logger.warning(
            "automation_schedule_unschedulable",
            extra={
                "schedule_id": schedule.pk,
                "schedule_type": schedule.schedule_type,
                "time_of_day": schedule.time_of_day,
                "day_of_week": schedule.day_of_week,
                "day_of_month": schedule.day_of_month,
                "timezone": schedule.timezone,
            },
        )
    if due is None:
        if following is not None:
            AutomationSchedule.objects.filter(pk=schedule.pk, next_run_at__isnull=True).update(next_run_at=following)
        return None
    if following is None:
        AutomationSchedule.objects.filter(pk=schedule.pk, next_run_at=due).update(next_run_at=None)
        return None
    if due > now:
        return None
    with transaction.atomic():
        # The run first, then the move: a beat dying in between leaves the slot due, and the next tick
        # finds its run (None) and only moves next_run_at.
        run = run_create(schedule=schedule, trigger=Trigger.SCHEDULED, slot=due)
        moved = AutomationSchedule.objects.filter(pk=schedule.pk, next_run_at=due).update(next_run_at=following)
    logger.info(
        "automation_schedule_ticked",
        extra={
            "schedule_id": schedule.pk,
            "slot": due.isoformat(),
            "run_id": str(run.pk) if run is not None else None,
            "next_run_at": following.isoformat(),
            "moved": bool(moved),
        },
    )
    return str(run.pk) if run is not None else None
