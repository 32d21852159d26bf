"""A run's engine without workers: the sales dates a selection covers (in the schedule's timezone),
selection from the cache (groups, not yet audited, the cap), the updater's counts and the end exactly
once, continueOnError=false, and the reconciler (re-drive after a stall, failure at the deadline)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from audits.models import Audit, AuditConfig
from automation.models import AutomationRun, AutomationRunFicheResult, AutomationSchedule
from automation.services import runs
from fiches.models import FicheCache

pytestmark = pytest.mark.django_db

DAY = date(2026, 2, 4)


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch):
    sent: list[tuple] = []
    monkeypatch.setattr(runs, "_send", lambda task, *args, task_id=None: sent.append((task.name, args)))
    monkeypatch.setattr("automation.notifications.run_ended", lambda run_id: None)
    return sent


@pytest.fixture
def config() -> AuditConfig:
    call_command("seed_audit_configs", verbosity=0)
    return AuditConfig.objects.get()


def make_schedule(**selection) -> AutomationSchedule:
    return AutomationSchedule.objects.create(
        name="s", fiche_selection={"mode": "dateRange", "startDate": "2026-02-04", "endDate": "2026-02-04", **selection}
    )


def fiches(*rows: tuple[str, str]) -> None:
    for fiche_id, groupe in rows:
        # revalidated just now: the run's cooldown skips the CRM
        FicheCache.objects.create(fiche_id=fiche_id, sales_date=DAY, groupe=groupe, last_revalidated_at=timezone.now())


@pytest.mark.parametrize(
    ("now", "tz", "expected"),
    [
        # 23:30 UTC on Feb 4 is already Feb 5 in Paris: the 2 days before are Feb 3 and 4.
        (datetime(2026, 2, 4, 23, 30, tzinfo=UTC), "Europe/Paris", (date(2026, 2, 3), date(2026, 2, 4))),
        (datetime(2026, 2, 4, 23, 30, tzinfo=UTC), "UTC", (date(2026, 2, 2), date(2026, 2, 3))),
        (datetime(2026, 2, 5, 3, 0, tzinfo=UTC), "America/New_York", (date(2026, 2, 2), date(2026, 2, 3))),
    ],
)
def test_a_relative_selection_covers_the_days_before_today_in_the_schedule_timezone(now, tz, expected):
    assert runs.selection_range({"mode": "relative", "relativeDays": 2}, tz, now=now) == expected
    assert runs.selection_range({"mode": "manual", "ficheIds": ["1"]}, tz, now=now) is None


def test_selection_keeps_the_groups_drops_what_is_audited_and_applies_the_cap(config):
    fiches(("F1", "Lyon-1"), ("F2", "Lyon-2"), ("F3", "Marseille"), ("F4", "Lyon-1"))
    audited = FicheCache.objects.get(fiche_id="F4")
    Audit.objects.create(fiche=audited, config=config, config_version=config.current_version, status="completed")
    plan = make_schedule(groupes=["Lyon-1", "Lyon-2"], onlyUnaudited=True)
    plan.audit_config_ids = [config.pk]
    plan.save()
    run = runs.run_create(schedule=plan)
    AutomationRun.objects.filter(pk=run.pk).update(created_at=timezone.now())
    started = runs.run_start(run_id=str(run.pk))
    run.refresh_from_db()
    assert run.revalidation == "skipped (cooldown)"
    assert started.fiche_ids == ["F1", "F2"]  # Marseille not in the groups; F4 already audited
    capped = make_schedule(maxFiches=1)
    assert runs.run_start(run_id=str(runs.run_create(schedule=capped).pk)).fiche_ids == ["F1"]


def test_the_updater_counts_each_fiche_once_and_ends_the_run_once(config):
    fiches(("F1", "Lyon-1"), ("F2", "Lyon-1"), ("F3", "Lyon-1"))
    plan = make_schedule(mode="manual", ficheIds=["F1", "F2", "F3"])
    run = runs.run_create(schedule=plan)
    runs.run_start(run_id=str(run.pk))
    run_id = str(run.pk)
    assert runs.fiche_done(run_id=run_id, fiche_id="F1", status="successful")
    assert not runs.fiche_done(run_id=run_id, fiche_id="F1", status="failed", error="late duplicate")
    assert runs.fiche_done(run_id=run_id, fiche_id="F2", status="ignored", reason="no recordings")
    assert AutomationRun.objects.get(pk=run_id).status == "running"
    assert runs.fiche_done(run_id=run_id, fiche_id="F3", status="failed", error="audit: boom")
    run.refresh_from_db()
    assert (run.status, run.successful, run.failed, run.ignored) == ("partial", 1, 1, 1)
    assert run.completed_at is not None and not runs.run_fail_now(run_id=run_id, error="too late")


def test_continue_on_error_false_stops_at_the_first_failure(config):
    fiches(("F1", "Lyon-1"), ("F2", "Lyon-1"), ("F3", "Lyon-1"))
    plan = make_schedule(mode="manual", ficheIds=["F1", "F2", "F3"])
    plan.continue_on_error = False
    plan.save()
    run = runs.run_create(schedule=plan)
    runs.run_start(run_id=str(run.pk))
    runs.fiche_done(run_id=str(run.pk), fiche_id="F2", status="failed", error="transcription: 500")
    run.refresh_from_db()
    assert (run.status, run.failed, run.skipped, run.dispatch_stopped) == ("failed", 1, 2, True)
    left = AutomationRunFicheResult.objects.filter(run=run, status="skipped")
    assert set(left.values_list("reason", flat=True)) == {"stopped after a failure"}


def test_the_reconciler_redrives_a_stalled_run_then_fails_it_at_the_deadline(config, settings):
    settings.AUTOMATION_STALL_SECONDS, settings.AUTOMATION_DEADLINE_SECONDS = 60, 600
    fiches(
        ("F1", "Lyon-1"),
    )
    never_started = runs.run_create(schedule=make_schedule())
    stalled = runs.run_create(schedule=make_schedule(mode="manual", ficheIds=["F1"]))
    runs.run_start(run_id=str(stalled.pk))
    now = timezone.now() + timedelta(seconds=120)
    actions = runs.run_reconcile(now=now)
    assert actions["restart"] == [str(never_started.pk)]
    assert actions["advance"] == [f"{stalled.pk}:F1"]
    assert runs.run_reconcile(now=now + timedelta(seconds=30))["advance"] == []  # once per stall window
    late = runs.run_reconcile(now=now + timedelta(seconds=600))
    assert set(late["timed_out"]) == {str(never_started.pk), str(stalled.pk)}
    stalled.refresh_from_db()
    assert (stalled.status, stalled.failed, stalled.error) == ("failed", 1, "timed out (no progress)")
