"""A run's engine without workers: the sales dates a selection covers (in the schedule's timezone),
selection from the cache (groups, not yet audited, the cap, which maxFiches lowers and never raises),
the owner's scope (per key the run uses, at selection and again before each fiche's CRM fetch,
transcription and audits; no owner, a deactivated one or one without a needed grant fails the run
before any CRM call), the owner recorded as requester of what the run asks for, the updater's counts
and the end exactly once, continueOnError=false, events naming no fiche, and the reconciler (re-drive
after a stall, failure at the deadline)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.models import RolePermission, User
from audits.models import Audit, AuditConfig
from automation import access
from automation.models import AutomationRun, AutomationRunFicheResult, AutomationSchedule
from automation.services import runs
from fiches.models import FicheCache, Recording
from tests.automation.conftest import published
from transcriptions.models import TranscriptionRun

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("boss")]  # boss: make_schedule's default owner

DAY = date(2026, 2, 4)


@pytest.fixture
def config() -> AuditConfig:
    call_command("seed_audit_configs", verbosity=0)
    return AuditConfig.objects.get()


def make_schedule(*, owner=..., run_transcription=True, run_audits=True, **selection) -> AutomationSchedule:
    """A schedule over ``DAY`` (``selection`` on top), owned by ``owner`` (default: the ``boss``
    fixture's user, every grant a run uses with scope ALL; None: no owner)."""
    return AutomationSchedule.objects.create(
        name="s",
        fiche_selection={"mode": "dateRange", "start_date": "2026-02-04", "end_date": "2026-02-04", **selection},
        owner=User.objects.get(email="boss@example.com") if owner is ... else owner,
        run_transcription=run_transcription,
        run_audits=run_audits,
    )


def fiches(*rows: tuple[str, ...]) -> None:
    """``("F1", "Lyon-1")`` or ``("F1", "Lyon-1", "u-1")`` (the seller's CRM id)."""
    for fiche_id, groupe, *seller in rows:
        # revalidated just now: the run's cooldown skips the CRM
        FicheCache.objects.create(
            fiche_id=fiche_id,
            sales_date=DAY,
            groupe=groupe,
            crm_user_id=seller[0] if seller else None,
            last_revalidated_at=timezone.now(),
        )


def started(schedule: AutomationSchedule) -> tuple[AutomationRun, runs.Started]:
    run = runs.run_create(schedule=schedule)
    assert run is not None
    return run, runs.run_start(run_id=str(run.pk))


def rows_of(run: AutomationRun) -> dict[str, tuple[str, str | None]]:
    return {r.fiche_id: (r.status, r.reason) for r in AutomationRunFicheResult.objects.filter(run=run)}


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
    assert runs.selection_range({"mode": "relative", "relative_days": 2}, tz, now=now) == expected
    assert runs.selection_range({"mode": "manual", "fiche_ids": ["1"]}, tz, now=now) is None


def test_selection_keeps_the_groups_drops_what_is_audited_and_applies_the_cap(config):
    fiches(("F1", "Lyon-1"), ("F2", "Lyon-2"), ("F3", "Marseille"), ("F4", "Lyon-1"))
    audited = FicheCache.objects.get(fiche_id="F4")
    Audit.objects.create(fiche=audited, config=config, config_version=config.current_version, status="completed")
    plan = make_schedule(groupes=["Lyon-1", "Lyon-2"], only_unaudited=True)
    plan.audit_config_ids = [config.pk]
    plan.save()
    run = runs.run_create(schedule=plan)
    AutomationRun.objects.filter(pk=run.pk).update(created_at=timezone.now())
    started = runs.run_start(run_id=str(run.pk))
    run.refresh_from_db()
    assert run.revalidation == "skipped (cooldown)"
    assert started.fiche_ids == ["F1", "F2"]  # Marseille not in the groups; F4 already audited
    capped = make_schedule(max_fiches=1)
    assert runs.run_start(run_id=str(runs.run_create(schedule=capped).pk)).fiche_ids == ["F1"]


def test_max_fiches_lowers_the_setting_and_never_raises_it(settings):
    fiches(("F1", "Lyon-1"), ("F2", "Lyon-1"), ("F3", "Lyon-1"), ("F4", "Lyon-1"))
    settings.AUTOMATION_MAX_FICHES = 2
    # Stored before the setting was lowered (the API refuses it now): the setting still caps it.
    assert started(make_schedule(max_fiches=50))[1].fiche_ids == ["F1", "F2"]
    manual = make_schedule(mode="manual", fiche_ids=["F4", "F3", "F2"], max_fiches=3)
    assert started(manual)[1].fiche_ids == ["F4", "F3"]
    assert started(make_schedule(max_fiches=1))[1].fiche_ids == ["F1"]
    assert started(make_schedule())[1].fiche_ids == ["F1", "F2"]


# --- The owner's scope ---------------------------------------------------------------------------------------


def test_selection_keeps_the_fiches_in_the_owners_scope_for_every_key_the_run_uses(make_owner, crm):
    # fiches: ALL; transcriptions write: GROUP (Lyon-1, Lyon-2); audits write: SELF (u-1).
    owner = make_owner(
        "ALL", scopes={"transcriptions": "GROUP", "audits": "SELF"}, groupes=["Lyon-1", "Lyon-2"], crm_user_id="u-1"
    )
    fiches(("F1", "Lyon-1", "u-1"), ("F2", "Lyon-2", "u-2"), ("F3", "Marseille", "u-1"))
    assert started(make_schedule(owner=owner))[1].fiche_ids == ["F1"]
    assert started(make_schedule(owner=owner, run_audits=False))[1].fiche_ids == ["F1", "F2"]
    assert started(make_schedule(owner=owner, run_transcription=False))[1].fiche_ids == ["F1", "F3"]
    assert started(make_schedule(owner=owner, run_transcription=False, run_audits=False))[1].fiche_ids == [
        "F1",
        "F2",
        "F3",
    ]

    # Manual ids outside the scope, and one the cache does not know, are skipped alike, naming nothing.
    run, start = started(make_schedule(owner=owner, mode="manual", fiche_ids=["F3", "F1", "NOPE-1", "F2"]))
    assert start.fiche_ids == ["F1"]
    assert rows_of(run) == {
        "F1": ("pending", None),
        "F2": ("skipped", access.OUT_OF_SCOPE),
        "F3": ("skipped", access.OUT_OF_SCOPE),
        "NOPE-1": ("skipped", access.OUT_OF_SCOPE),
    }
    run.refresh_from_db()
    assert (run.total_fiches, run.skipped, run.status) == (4, 3, "running")
    assert crm.requests() == []  # the ranges were revalidated recently; nothing else asked the CRM

    # An owner with ALL on every key may name a fiche the cache does not know (fetched when its turn comes).
    everything, start = started(make_schedule(mode="manual", fiche_ids=["NOPE-1"]))
    assert start.fiche_ids == ["NOPE-1"]


def test_a_fiche_out_of_scope_at_its_turn_is_skipped_before_any_crm_call(make_owner, crm):
    owner = make_owner("GROUP", groupes=["Lyon-1"])
    fiches(("2227000", "Lyon-1"), ("2227001", "Lyon-1"))  # no details yet: its turn would fetch them
    run, start = started(make_schedule(owner=owner, mode="manual", fiche_ids=["2227000", "2227001"]))
    assert start.fiche_ids == ["2227000", "2227001"]

    owner.groupes = ["Paris-3"]  # a change since the selection applies at once
    owner.save()
    assert runs.fiche_advance(run_id=str(run.pk), fiche_id="2227000") == "skipped"
    assert rows_of(run)["2227000"] == ("skipped", access.OUT_OF_SCOPE)
    assert crm.requests() == []

    owner.groupes = ["Lyon-1"]
    owner.save()
    runs.fiche_advance(run_id=str(run.pk), fiche_id="2227001")
    assert [r["path"] for r in crm.requests()] == ["/api/fiches/by-id/2227001"]  # in scope: fetched


def with_details(fiche_id: str, groupe: str, *, recordings: int = 1) -> FicheCache:
    fiche = FicheCache.objects.create(
        fiche_id=fiche_id,
        sales_date=DAY,
        groupe=groupe,
        details_fetched_at=timezone.now(),
        last_revalidated_at=timezone.now(),
    )
    for n in range(recordings):
        Recording.objects.create(call_id=f"c-{fiche_id}-{n}", fiche=fiche, recording_url=f"http://rec/{n}")
    return fiche


def test_the_owner_requests_the_transcriptions_and_audits_and_each_is_checked_first(make_owner, config, crm):
    owner = make_owner("GROUP", groupes=["Lyon-1"])
    with_details("T1", "Lyon-1")
    run, _ = started(make_schedule(owner=owner, mode="manual", fiche_ids=["T1"], run_audits=False))
    assert runs.fiche_advance(run_id=str(run.pk), fiche_id="T1") == "waiting for the transcription"
    assert TranscriptionRun.objects.get(fiche__fiche_id="T1").requested_by == owner

    with_details("A1", "Lyon-1")
    with_details("A2", "Lyon-1")
    plan = make_schedule(owner=owner, mode="manual", fiche_ids=["A1", "A2"], run_transcription=False)
    plan.audit_config_ids = [config.pk]
    plan.save()
    run, _ = started(plan)
    assert runs.fiche_advance(run_id=str(run.pk), fiche_id="A1") == "waiting for the audits"
    assert Audit.objects.get(fiche__fiche_id="A1").requested_by == owner

    # The audits grant taken away since: the next fiche is skipped before its audit is asked for.
    RolePermission.objects.filter(role__users=owner, permission_key="audits").delete()
    assert runs.fiche_advance(run_id=str(run.pk), fiche_id="A2") == "skipped"
    assert not Audit.objects.filter(fiche__fiche_id="A2").exists()
    assert rows_of(run)["A2"] == ("skipped", access.OUT_OF_SCOPE)
    assert crm.requests() == []


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("no owner", access.NO_OWNER),
        ("deactivated", access.OWNER_INACTIVE),
        ("no fiches grant", "the schedule's owner lacks fiches.read: no fiche is in its scope"),
        ("no audits grant", "the schedule's owner lacks audits.write: no fiche is in its scope"),
    ],
)
def test_a_run_that_cannot_act_for_its_owner_fails_before_any_crm_call(make_owner, crm, case, error):
    owner = {
        "no owner": None,
        "deactivated": make_owner("ALL"),
        "no fiches grant": make_owner("ALL", scopes={"fiches": None}),
        "no audits grant": make_owner("ALL", scopes={"audits": None}),
    }[case]
    if case == "deactivated":
        owner.is_active = False
        owner.save()
    # Nothing of this range was revalidated: a run that may read fiches would ask the CRM first.
    run, start = started(make_schedule(owner=owner, start_date="2026-02-02", end_date="2026-02-02"))
    run.refresh_from_db()
    assert start == runs.Started([], True)
    assert (run.status, run.error, run.total_fiches) == ("failed", error, 0)
    assert run.notify_due_at is not None and run.notified_at is None  # notifyOnError: it is told
    assert crm.requests() == []


def test_an_owner_deactivated_during_a_run_fails_it(make_owner, crm):
    owner = make_owner("ALL")
    fiches(("F1", "Lyon-1"), ("F2", "Lyon-1"))
    run, _ = started(make_schedule(owner=owner, mode="manual", fiche_ids=["F1", "F2"]))
    owner.is_active = False
    owner.save()
    assert runs.fiche_advance(run_id=str(run.pk), fiche_id="F1") == "failed"
    run.refresh_from_db()
    assert (run.status, run.failed, run.error) == ("failed", 2, "the schedule's owner was deactivated during the run")
    assert crm.requests() == []


def test_a_runs_events_and_error_name_no_fiche(pusher_on, django_capture_on_commit_callbacks):
    fiches(("F1", "Lyon-1"), ("F2", "Lyon-1"))
    plan = make_schedule(mode="manual", fiche_ids=["F1", "F2"])
    plan.continue_on_error = False
    plan.save()
    with django_capture_on_commit_callbacks(execute=True):
        run, _ = started(plan)
        runs.fiche_done(run_id=str(run.pk), fiche_id="F1", status="failed", error="audit: F1 refused")
    run.refresh_from_db()
    assert run.status == "failed" and "F1" not in run.error and "F2" not in run.error
    events = [(name, data) for channel, name, data in published() if channel == f"private-job-automation-run-{run.pk}"]
    assert [name for name, _ in events] == [
        "automation.run.started",
        "automation.run.progress",
        "automation.run.failed",
    ]
    for _, data in events:
        assert "ficheId" not in data and "F1" not in str(data) and "F2" not in str(data)


def test_the_updater_counts_each_fiche_once_and_ends_the_run_once(config):
    fiches(("F1", "Lyon-1"), ("F2", "Lyon-1"), ("F3", "Lyon-1"))
    plan = make_schedule(mode="manual", fiche_ids=["F1", "F2", "F3"])
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
    plan = make_schedule(mode="manual", fiche_ids=["F1", "F2", "F3"])
    plan.continue_on_error = False
    plan.save()
    run = runs.run_create(schedule=plan)
    runs.run_start(run_id=str(run.pk))
    runs.fiche_done(run_id=str(run.pk), fiche_id="F2", status="failed", error="transcription: 500")
    run.refresh_from_db()
    assert (run.status, run.failed, run.skipped, run.dispatch_stopped) == ("failed", 1, 2, True)
    assert run.error == "stopped after a fiche failed (continueOnError=false)"  # the row says which
    left = AutomationRunFicheResult.objects.filter(run=run, status="skipped")
    assert set(left.values_list("reason", flat=True)) == {"stopped after a failure"}


def test_the_reconciler_redrives_a_stalled_run_then_fails_it_at_the_deadline(config, settings):
    settings.AUTOMATION_STALL_SECONDS, settings.AUTOMATION_DEADLINE_SECONDS = 60, 600
    fiches(
        ("F1", "Lyon-1"),
    )
    never_started = runs.run_create(schedule=make_schedule())
    stalled = runs.run_create(schedule=make_schedule(mode="manual", fiche_ids=["F1"]))
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


def test_a_run_whose_audit_waits_for_the_daily_budget_is_neither_redriven_nor_timed_out(config, settings):
    settings.AUTOMATION_STALL_SECONDS, settings.AUTOMATION_DEADLINE_SECONDS = 60, 600
    fiches(("F1", "Lyon-1"))
    fiche = FicheCache.objects.get(fiche_id="F1")
    run = runs.run_create(schedule=make_schedule(mode="manual", fiche_ids=["F1"]))
    runs.run_start(run_id=str(run.pk))
    waiting = Audit.objects.create(
        fiche=fiche, config=config, config_version=config.current_version, status="waiting_budget"
    )
    AutomationRunFicheResult.objects.filter(run=run, fiche_id="F1").update(audit_ids=[str(waiting.pk)])
    late = timezone.now() + timedelta(seconds=3600)
    actions = runs.run_reconcile(now=late)
    assert str(run.pk) not in actions["timed_out"] and actions["advance"] == []
    Audit.objects.filter(pk=waiting.pk).update(status="running")  # no longer waiting, still no progress
    assert str(run.pk) in runs.run_reconcile(now=late)["timed_out"]
