"""The automation scheduler: slots in the schedule's own timezone, DST-correct (a local time inside the
spring-forward gap runs when the clocks jump; an ambiguous one runs once, at its first occurrence),
WEEKLY and MONTHLY rules, and the beat's tick (one run per slot, missed slots run once, two beats do
not double a slot, MANUAL and inactive schedules never fire). Time is passed in (``now``), not slept;
no broker: the orchestrator's dispatch is recorded."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.apps import apps as global_apps
from django.db import connection

from automation.models import AutomationRun, AutomationSchedule, ScheduleType, Trigger
from automation.services import runs, scheduler
from automation.services.scheduler import next_slot, tick, tick_schedule

pytestmark = pytest.mark.django_db

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def sent(dispatched):
    """The automation tasks sent to the (test) broker."""
    return dispatched


def make_schedule(**fields: Any) -> AutomationSchedule:
    values: dict[str, Any] = {
        "name": "nightly",
        "schedule_type": ScheduleType.DAILY,
        "time_of_day": "09:00",
        "timezone": "Europe/Paris",
    }
    values.update(fields)
    return AutomationSchedule.objects.create(**values)


def slots(schedule: AutomationSchedule) -> list[datetime]:
    return sorted(s for s in AutomationRun.objects.filter(schedule=schedule).values_list("slot", flat=True) if s)


def simulate(start: datetime, end: datetime, step: timedelta = timedelta(minutes=5)) -> int:
    """Tick every ``step`` of simulated time from ``start`` (included) to ``end`` (excluded)."""
    now, created = start, 0
    while now < end:
        created += len(tick(now=now))
        now += step
    return created


def walk(schedule: AutomationSchedule, after: datetime, count: int) -> list[datetime]:
    found: list[datetime] = []
    for _ in range(count):
        following = next_slot(schedule, after=after)
        assert following is not None
        found.append(following)
        after = following
    return found


# --- next_slot --------------------------------------------------------------------------------------------


def test_daily_0900_paris_is_0800z_in_winter_and_0700z_in_summer() -> None:
    schedule = make_schedule(time_of_day="09:00")
    assert next_slot(schedule, after=utc(2026, 1, 15, 0, 0)) == utc(2026, 1, 15, 8, 0)
    assert next_slot(schedule, after=utc(2026, 7, 15, 0, 0)) == utc(2026, 7, 15, 7, 0)
    # The day the clocks change, and the result is in UTC.
    spring = next_slot(schedule, after=utc(2026, 3, 29, 0, 0))
    assert spring == utc(2026, 3, 29, 7, 0) and spring is not None and spring.tzinfo is UTC
    assert next_slot(schedule, after=utc(2026, 10, 25, 0, 0)) == utc(2026, 10, 25, 8, 0)


def test_next_slot_is_strictly_after() -> None:
    schedule = make_schedule(time_of_day="09:00")
    slot = utc(2026, 1, 15, 8, 0)
    assert next_slot(schedule, after=slot - timedelta(microseconds=1)) == slot
    assert next_slot(schedule, after=slot) == utc(2026, 1, 16, 8, 0)
    # ``after`` in another timezone is the same instant.
    assert next_slot(schedule, after=slot.astimezone(NEW_YORK)) == utc(2026, 1, 16, 8, 0)
    # Just before local midnight: the next local day's slot.
    assert next_slot(schedule, after=utc(2026, 1, 15, 22, 59)) == utc(2026, 1, 16, 8, 0)


def test_next_slot_needs_an_aware_datetime() -> None:
    with pytest.raises(ValueError):
        next_slot(make_schedule(), after=datetime(2026, 1, 15, 8, 0))


def test_spring_forward_gap_runs_when_the_clocks_jump_then_at_the_usual_time() -> None:
    schedule = make_schedule(time_of_day="02:30")
    # 2026-03-29 in Paris: 02:00 CET → 03:00 CEST; 02:30 does not exist that day.
    assert walk(schedule, utc(2026, 3, 27, 12, 0), 4) == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST: the first instant after the gap
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
        utc(2026, 3, 31, 0, 30),
    ]
    assert utc(2026, 3, 29, 1, 0).astimezone(PARIS).strftime("%H:%M %Z") == "03:00 CEST"
    # A schedule at 02:00 (the gap's first minute) and one at 03:00 (after it) run at the same instant.
    assert next_slot(make_schedule(time_of_day="02:00"), after=utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 0)
    assert next_slot(make_schedule(time_of_day="03:00"), after=utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 0)
    assert next_slot(make_schedule(time_of_day="01:59"), after=utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 0, 59)


def test_fall_back_ambiguous_time_runs_once_at_its_first_occurrence() -> None:
    schedule = make_schedule(time_of_day="02:30")
    # 2026-10-25 in Paris: 03:00 CEST → 02:00 CET; 02:30 happens twice (00:30Z and 01:30Z).
    assert walk(schedule, utc(2026, 10, 23, 12, 0), 3) == [
        utc(2026, 10, 24, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST, the first occurrence (fold=0)
        utc(2026, 10, 26, 1, 30),  # 02:30 CET: not 2026-10-25 01:30Z (the second occurrence)
    ]
    # Between the two occurrences: the next day, not the second one.
    assert next_slot(schedule, after=utc(2026, 10, 25, 1, 0)) == utc(2026, 10, 26, 1, 30)


def test_weekly_on_monday() -> None:
    schedule = make_schedule(schedule_type=ScheduleType.WEEKLY, day_of_week=1, time_of_day="09:00")
    # Wednesday 2026-03-18 → Monday 2026-03-23 09:00 CET; then Monday 03-30 09:00 CEST (after the change).
    assert walk(schedule, utc(2026, 3, 18, 12, 0), 3) == [
        utc(2026, 3, 23, 8, 0),
        utc(2026, 3, 30, 7, 0),
        utc(2026, 4, 6, 7, 0),
    ]
    for slot in walk(schedule, utc(2026, 1, 1, 0, 0), 60):
        assert slot.astimezone(PARIS).isoweekday() == 1 and slot.astimezone(PARIS).strftime("%H:%M") == "09:00"
    # On a Monday: that day's slot until it has passed.
    assert next_slot(schedule, after=utc(2026, 3, 23, 7, 59)) == utc(2026, 3, 23, 8, 0)
    assert next_slot(schedule, after=utc(2026, 3, 23, 8, 0)) == utc(2026, 3, 30, 7, 0)
    sunday = make_schedule(schedule_type=ScheduleType.WEEKLY, day_of_week=7, time_of_day="23:30")
    assert next_slot(sunday, after=utc(2026, 3, 23, 0, 0)) == utc(2026, 3, 29, 21, 30)  # 23:30 CEST


def test_monthly_on_the_31st_uses_the_last_day_of_shorter_months() -> None:
    schedule = make_schedule(schedule_type=ScheduleType.MONTHLY, day_of_month=31, time_of_day="09:00")
    assert walk(schedule, utc(2026, 1, 31, 12, 0), 5) == [
        utc(2026, 2, 28, 8, 0),  # February: the 28th
        utc(2026, 3, 31, 7, 0),  # CEST since the 29th
        utc(2026, 4, 30, 7, 0),  # April: the 30th
        utc(2026, 5, 31, 7, 0),
        utc(2026, 6, 30, 7, 0),
    ]
    assert next_slot(schedule, after=utc(2028, 2, 1, 0, 0)) == utc(2028, 2, 29, 8, 0)  # a leap year
    assert next_slot(schedule, after=utc(2026, 12, 31, 8, 0)) == utc(2027, 1, 31, 8, 0)  # over the new year
    first = make_schedule(schedule_type=ScheduleType.MONTHLY, day_of_month=1, time_of_day="00:00")
    # Midnight local on the 1st is the previous day in UTC.
    assert next_slot(first, after=utc(2026, 1, 15, 0, 0)) == utc(2026, 1, 31, 23, 0)


def test_new_york_follows_its_own_dst_dates() -> None:
    schedule = make_schedule(timezone="America/New_York", time_of_day="09:00")
    paris = make_schedule(time_of_day="09:00")
    assert next_slot(schedule, after=utc(2026, 1, 15, 0, 0)) == utc(2026, 1, 15, 14, 0)  # EST
    assert next_slot(schedule, after=utc(2026, 7, 15, 0, 0)) == utc(2026, 7, 15, 13, 0)  # EDT
    # Between the US change (03-08) and the European one (03-29): New York in summer time, Paris not.
    assert next_slot(schedule, after=utc(2026, 3, 16, 0, 0)) == utc(2026, 3, 16, 13, 0)
    assert next_slot(paris, after=utc(2026, 3, 16, 0, 0)) == utc(2026, 3, 16, 8, 0)
    # Between the European fall back (10-25) and the US one (11-01).
    assert next_slot(schedule, after=utc(2026, 10, 27, 0, 0)) == utc(2026, 10, 27, 13, 0)
    assert next_slot(paris, after=utc(2026, 10, 27, 0, 0)) == utc(2026, 10, 27, 8, 0)
    night = make_schedule(timezone="America/New_York", time_of_day="02:30")
    # 2026-03-08: 02:00 EST → 03:00 EDT.
    assert walk(night, utc(2026, 3, 7, 0, 0), 3) == [
        utc(2026, 3, 7, 7, 30),
        utc(2026, 3, 8, 7, 0),
        utc(2026, 3, 9, 6, 30),
    ]
    late = make_schedule(timezone="America/New_York", time_of_day="01:30")
    # 2026-11-01: 02:00 EDT → 01:00 EST; 01:30 happens twice (05:30Z and 06:30Z).
    assert walk(late, utc(2026, 10, 31, 0, 0), 3) == [
        utc(2026, 10, 31, 5, 30),
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 2, 6, 30),
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {"schedule_type": ScheduleType.MANUAL},
        {"is_active": False},
        {"time_of_day": None},
        {"time_of_day": ""},
        {"time_of_day": "25:00"},
        {"time_of_day": "09:60"},
        {"time_of_day": "9h00"},
        {"timezone": "Mars/Olympus_Mons"},
        {"timezone": ""},
        {"schedule_type": ScheduleType.WEEKLY, "day_of_week": None},
        {"schedule_type": ScheduleType.WEEKLY, "day_of_week": 0},
        {"schedule_type": ScheduleType.WEEKLY, "day_of_week": 8},
        {"schedule_type": ScheduleType.MONTHLY, "day_of_month": None},
        {"schedule_type": ScheduleType.MONTHLY, "day_of_month": 0},
        {"schedule_type": ScheduleType.MONTHLY, "day_of_month": 32},
    ],
)
def test_no_slot_for_manual_inactive_or_incomplete_schedules(fields: dict[str, Any]) -> None:
    assert next_slot(make_schedule(**fields), after=utc(2026, 1, 15, 0, 0)) is None


def test_a_single_digit_hour_is_accepted() -> None:
    assert next_slot(make_schedule(time_of_day="9:05"), after=utc(2026, 1, 15, 0, 0)) == utc(2026, 1, 15, 8, 5)


# --- tick --------------------------------------------------------------------------------------------------


def test_a_new_schedule_gets_its_next_slot_and_does_not_fire_for_a_past_one() -> None:
    schedule = make_schedule(time_of_day="09:00")
    assert tick(now=utc(2026, 1, 15, 12, 0)) == []  # today's 09:00 has passed: not run
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 1, 16, 8, 0)
    assert tick(now=utc(2026, 1, 16, 7, 59)) == []
    assert not AutomationRun.objects.exists()


def test_a_due_slot_creates_one_scheduled_run_and_dispatches_it(
    sent: list[tuple[str, tuple[Any, ...]]], django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    schedule = make_schedule(time_of_day="09:00", next_run_at=utc(2026, 1, 16, 8, 0))
    with django_capture_on_commit_callbacks(execute=True):
        created = tick(now=utc(2026, 1, 16, 8, 0))  # exactly at the slot
    run = AutomationRun.objects.get()
    assert created == [str(run.pk)]
    assert (run.schedule_id, run.slot, run.trigger) == (schedule.pk, utc(2026, 1, 16, 8, 0), Trigger.SCHEDULED)
    assert run.config["time_of_day"] == "09:00"
    assert len(sent) == 1 and sent[0][1] == (str(run.pk),)
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 1, 17, 8, 0)  # strictly after the tick
    assert schedule.last_run_at is not None


@pytest.mark.parametrize(
    ("tz", "time_of_day", "start", "expected"),
    [
        # Paris spring forward (2026-03-29): 02:30 does not exist that day → 03:00 CEST.
        (
            "Europe/Paris",
            "02:30",
            utc(2026, 3, 28),
            [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)],
        ),
        ("Europe/Paris", "09:00", utc(2026, 3, 28), [utc(2026, 3, 28, 8), utc(2026, 3, 29, 7), utc(2026, 3, 30, 7)]),
        # Paris fall back (2026-10-25): 02:30 happens twice → once, at 00:30Z.
        (
            "Europe/Paris",
            "02:30",
            utc(2026, 10, 24),
            [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
        ),
        (
            "Europe/Paris",
            "09:00",
            utc(2026, 10, 24),
            [utc(2026, 10, 24, 7), utc(2026, 10, 25, 8), utc(2026, 10, 26, 8)],
        ),
        # New York (2026-03-08 and 2026-11-01).
        (
            "America/New_York",
            "02:30",
            utc(2026, 3, 7),
            [utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)],
        ),
        (
            "America/New_York",
            "01:30",
            utc(2026, 10, 31),
            [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)],
        ),
    ],
)
def test_ticking_every_5_minutes_over_a_dst_change_runs_once_a_day(
    tz: str, time_of_day: str, start: datetime, expected: list[datetime]
) -> None:
    schedule = make_schedule(timezone=tz, time_of_day=time_of_day)
    assert simulate(start, start + timedelta(days=3)) == 3
    assert slots(schedule) == expected
    schedule.refresh_from_db()
    assert schedule.next_run_at is not None and schedule.next_run_at > expected[-1]


def test_fall_back_runs_once_not_again_an_hour_later() -> None:
    schedule = make_schedule(time_of_day="02:30")
    tick(now=utc(2026, 10, 24, 12, 0))
    assert len(tick(now=utc(2026, 10, 25, 0, 30))) == 1  # 02:30 CEST
    assert tick(now=utc(2026, 10, 25, 1, 30)) == []  # 02:30 CET, an hour later
    assert tick(now=utc(2026, 10, 25, 1, 35)) == []
    assert slots(schedule) == [utc(2026, 10, 25, 0, 30)]


def test_spring_forward_runs_at_0300_local_then_at_0230_the_next_day() -> None:
    schedule = make_schedule(time_of_day="02:30")
    tick(now=utc(2026, 3, 28, 12, 0))
    assert tick(now=utc(2026, 3, 29, 0, 59)) == []
    assert len(tick(now=utc(2026, 3, 29, 1, 0))) == 1  # 03:00 CEST
    assert tick(now=utc(2026, 3, 29, 1, 30)) == []
    assert len(tick(now=utc(2026, 3, 30, 0, 30))) == 1  # 02:30 CEST
    assert slots(schedule) == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]


def test_slots_missed_while_beat_was_down_run_once() -> None:
    schedule = make_schedule(time_of_day="09:00")
    tick(now=utc(2026, 1, 10, 12, 0))
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 1, 11, 8, 0)
    back = utc(2026, 1, 14, 10, 0)  # beat down from the 11th to the 14th: four slots missed
    assert len(tick(now=back)) == 1
    assert slots(schedule) == [utc(2026, 1, 11, 8, 0)]  # the slot that was due
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 1, 15, 8, 0)  # in the future: the others are skipped
    assert tick(now=back + timedelta(minutes=1)) == []
    assert len(tick(now=utc(2026, 1, 15, 8, 0))) == 1
    assert AutomationRun.objects.count() == 2


def test_two_ticks_for_the_same_due_slot_create_one_run() -> None:
    schedule = make_schedule(time_of_day="09:00", next_run_at=utc(2026, 1, 16, 8, 0))
    now = utc(2026, 1, 16, 8, 1)
    assert len(tick(now=now)) == 1
    assert tick(now=now) == []
    assert AutomationRun.objects.count() == 1
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 1, 17, 8, 0)


def test_two_beats_reading_the_same_due_slot_create_one_run_and_move_it_once() -> None:
    make_schedule(time_of_day="09:00", next_run_at=utc(2026, 1, 16, 8, 0))
    first, second = list(AutomationSchedule.objects.all()), list(AutomationSchedule.objects.all())
    assert tick_schedule(first[0], now=utc(2026, 1, 16, 8, 1)) is not None
    # The second beat read the row before the first moved it, and ticks a little later.
    assert tick_schedule(second[0], now=utc(2026, 1, 16, 8, 2)) is None
    assert AutomationRun.objects.count() == 1
    assert AutomationSchedule.objects.get().next_run_at == utc(2026, 1, 17, 8, 0)


def test_run_create_twice_for_a_slot_returns_none_the_second_time() -> None:
    schedule = make_schedule()
    slot = utc(2026, 1, 16, 8, 0)
    assert runs.run_create(schedule=schedule, trigger=Trigger.SCHEDULED, slot=slot) is not None
    assert runs.run_create(schedule=schedule, trigger=Trigger.SCHEDULED, slot=slot) is None
    assert AutomationRun.objects.count() == 1


def test_a_run_created_but_next_run_at_not_moved_is_not_run_again() -> None:
    """A beat that died after creating the run (the slot still due): the next tick only moves it."""
    schedule = make_schedule(time_of_day="09:00", next_run_at=utc(2026, 1, 16, 8, 0))
    runs.run_create(schedule=schedule, trigger=Trigger.SCHEDULED, slot=utc(2026, 1, 16, 8, 0))
    assert tick(now=utc(2026, 1, 16, 8, 1)) == []
    assert AutomationRun.objects.count() == 1
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 1, 17, 8, 0)


@pytest.mark.django_db(transaction=True)
def test_concurrent_ticks_create_one_run(sent: list[tuple[str, tuple[Any, ...]]]) -> None:
    make_schedule(time_of_day="09:00", next_run_at=utc(2026, 1, 16, 8, 0))
    now = utc(2026, 1, 16, 8, 1)
    barrier = threading.Barrier(4)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def beat() -> None:
        try:
            barrier.wait()
            results.append(tick(now=now))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=beat) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sum(len(r) for r in results) == 1
    assert AutomationRun.objects.count() == 1
    assert len(sent) == 1  # dispatched once, after commit
    assert AutomationSchedule.objects.get().next_run_at == utc(2026, 1, 17, 8, 0)


def test_manual_and_inactive_schedules_never_fire() -> None:
    past = utc(2026, 1, 1, 8, 0)
    manual = make_schedule(schedule_type=ScheduleType.MANUAL, next_run_at=past)
    inactive = make_schedule(is_active=False, next_run_at=past)
    assert simulate(utc(2026, 1, 10), utc(2026, 1, 12), step=timedelta(minutes=30)) == 0
    assert not AutomationRun.objects.exists()
    # Their stale next slot is cleared: re-activating one does not fire a slot that passed meanwhile.
    manual.refresh_from_db()
    inactive.refresh_from_db()
    assert manual.next_run_at is None and inactive.next_run_at is None
    AutomationSchedule.objects.filter(pk=inactive.pk).update(is_active=True)
    assert tick(now=utc(2026, 1, 12, 12, 0)) == []
    inactive.refresh_from_db()
    assert inactive.next_run_at == utc(2026, 1, 13, 8, 0)


def test_a_schedule_with_broken_settings_is_unscheduled_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    broken = make_schedule(time_of_day="25:00", next_run_at=utc(2026, 1, 16, 8, 0))
    weekly = make_schedule(schedule_type=ScheduleType.WEEKLY, day_of_week=None)
    fine = make_schedule(time_of_day="09:00", next_run_at=utc(2026, 1, 16, 8, 0))
    with caplog.at_level(logging.WARNING, logger="automation.scheduler"):
        created = tick(now=utc(2026, 1, 16, 9, 0))
    assert len(created) == 1 and slots(fine) == [utc(2026, 1, 16, 8, 0)]  # the others do not stop it
    broken.refresh_from_db()
    weekly.refresh_from_db()
    assert broken.next_run_at is None and weekly.next_run_at is None
    assert not AutomationRun.objects.filter(schedule__in=[broken, weekly]).exists()
    logged = {r.schedule_id for r in caplog.records if r.getMessage() == "automation_schedule_unschedulable"}  # type: ignore[attr-defined]
    assert logged == {broken.pk, weekly.pk}


def test_a_failing_schedule_is_logged_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failing = make_schedule(name="a", next_run_at=utc(2026, 1, 16, 8, 0))
    fine = make_schedule(name="b", next_run_at=utc(2026, 1, 16, 8, 0))
    real = scheduler.run_create

    def run_create(*, schedule: AutomationSchedule, **kwargs: Any) -> AutomationRun | None:
        if schedule.pk == failing.pk:
            raise RuntimeError("boom")
        return real(schedule=schedule, **kwargs)

    monkeypatch.setattr(scheduler, "run_create", run_create)
    with caplog.at_level(logging.ERROR, logger="automation.scheduler"):
        assert len(tick(now=utc(2026, 1, 16, 8, 5))) == 1
    assert slots(fine) == [utc(2026, 1, 16, 8, 0)]
    failing.refresh_from_db()
    assert failing.next_run_at == utc(2026, 1, 16, 8, 0)  # still due: tried again at the next tick
    assert any(r.getMessage() == "automation_tick_failed" for r in caplog.records)


# --- Beat registration -------------------------------------------------------------------------------------


def test_the_beat_tasks_are_registered_every_minute() -> None:
    from django_celery_beat.models import PeriodicTask

    tasks = {t.name: t for t in PeriodicTask.objects.filter(name__startswith="automation: ")}
    assert {name: t.task for name, t in tasks.items()} == {
        "automation: tick (due schedules)": "automation.tasks.automation_tick",
        "automation: reconcile runs": "automation.tasks.reconcile_automation_runs",
    }
    for task in tasks.values():
        assert task.enabled and task.interval is not None
        assert (task.interval.every, task.interval.period) == (1, "minutes")

    migration = importlib.import_module("automation.migrations.0002_beat_schedules")
    migration.unregister(global_apps, None)
    assert not PeriodicTask.objects.filter(name__startswith="automation: ").exists()
    migration.register(global_apps, None)
    migration.register(global_apps, None)  # idempotent
    assert PeriodicTask.objects.filter(name__startswith="automation: ").count() == 2
