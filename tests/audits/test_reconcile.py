"""The audits reconciler (beat): every audit ends. An audit waiting for transcripts too long fails; one
whose transcription ended without resuming it is re-driven; one whose steps all ended but whose end was
lost ends now, exactly once; one without progress is re-driven once per stall window, then fails at the
deadline. Time is passed in (``now``), not slept."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from audits.models import Audit, AuditConfig, AuditStepResult, ControlPointResult
from audits.services.reconcile import audit_reconcile
from fiches.models import FicheCache
from transcriptions.models import TranscriptionRun

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _timing(settings):
    settings.AUDIT_STALL_SECONDS = 60
    settings.AUDIT_DEADLINE_SECONDS = 600
    settings.AUDIT_TRANSCRIPTION_WAIT_SECONDS = 300


@pytest.fixture
def fiche() -> FicheCache:
    return FicheCache.objects.create(fiche_id="F1", sales_date=date(2026, 2, 2), groupe="Lyon-2")


def audit_at(fiche: FicheCache, config: AuditConfig, *, ago: float, **fields) -> Audit:
    at = NOW - timedelta(seconds=ago)
    audit = Audit.objects.create(fiche=fiche, config=config, config_version=config.current_version, **fields)
    Audit.objects.filter(pk=audit.pk).update(created_at=at, last_progress_at=at)
    return Audit.objects.get(pk=audit.pk)


def test_waiting_too_long_for_transcripts_fails_and_a_lost_resume_is_redriven(fiche, config):
    TranscriptionRun.objects.create(fiche=fiche, status="running")
    stuck = audit_at(fiche, config, ago=400, status="waiting_transcription", waiting_since=NOW - timedelta(seconds=400))
    fresh = audit_at(fiche, config, ago=30, status="waiting_transcription", waiting_since=NOW - timedelta(seconds=30))
    actions = audit_reconcile(now=NOW)
    assert actions["failed"] == [str(stuck.pk)] and actions["redrive"] == []
    stuck.refresh_from_db()
    assert stuck.status == "failed" and "transcription did not finish" in stuck.error
    assert Audit.objects.get(pk=fresh.pk).status == "waiting_transcription"  # its run is still going

    TranscriptionRun.objects.update(status="completed")  # the run ended but its hook never resumed us
    assert audit_reconcile(now=NOW)["redrive"] == [str(fresh.pk)]


def test_an_audit_whose_steps_all_ended_but_whose_end_was_lost_ends_once(fiche, config):
    audit = audit_at(fiche, config, ago=10, status="running", dispatched_at=NOW - timedelta(seconds=10))
    for definition in config.current_version.steps.all():
        row = AuditStepResult.objects.create(
            audit=audit, step=definition, position=definition.position, status="completed"
        )
        for point in definition.control_points.all():
            ControlPointResult.objects.create(step_result=row, index=point.index, ai_status="pass", status="pass")
    actions = audit_reconcile(now=NOW)
    assert actions["ended"] == [str(audit.pk)]
    audit.refresh_from_db()
    assert audit.status == "completed" and audit.niveau == "EXCELLENT" and audit.score_percentage == 100
    assert audit_reconcile(now=NOW) == {"redrive": [], "ended": [], "failed": [], "steps": []}  # terminal: left alone


def test_a_stalled_audit_is_redriven_once_per_window_then_fails_at_the_deadline(fiche, config):
    audit = audit_at(fiche, config, ago=120, status="running", dispatched_at=NOW - timedelta(seconds=120))
    definition = config.current_version.steps.first()
    AuditStepResult.objects.create(audit=audit, step=definition, position=definition.position, status="running")
    assert audit_reconcile(now=NOW)["redrive"] == [str(audit.pk)]
    assert audit_reconcile(now=NOW + timedelta(seconds=30))["redrive"] == []  # within the window of its re-drive
    assert audit_reconcile(now=NOW + timedelta(seconds=61))["redrive"] == [str(audit.pk)]
    actions = audit_reconcile(now=NOW + timedelta(seconds=601))
    assert actions["failed"] == [str(audit.pk)]
    audit.refresh_from_db()
    assert audit.status == "failed" and audit.error == "timed out (no progress)"


def test_a_pending_audit_whose_dispatch_was_lost_is_redriven(fiche, config):
    lost = audit_at(fiche, config, ago=90)  # pending, its orchestrator message never arrived
    recent = audit_at(fiche, config, ago=5)
    assert audit_reconcile(now=NOW)["redrive"] == [str(lost.pk)]
    assert Audit.objects.get(pk=recent.pk).status == "pending"


def test_a_dead_workers_running_step_is_sent_again_once_its_lease_ran_out(fiche, config, settings):
    settings.CLAIM_LEASE_SECONDS = 30
    audit = audit_at(fiche, config, ago=20, status="running", dispatched_at=NOW - timedelta(seconds=20))
    first, second, third = list(config.current_version.steps.order_by("position"))[:3]
    for definition, claimed in ((first, 31), (second, 5)):  # a dead worker's claim, a live one's
        AuditStepResult.objects.create(
            audit=audit,
            step=definition,
            position=definition.position,
            status="running",
            claimed_at=NOW - timedelta(seconds=claimed),
            claim_token="t",
        )
    AuditStepResult.objects.create(audit=audit, step=third, position=third.position, status="pending")
    actions = audit_reconcile(now=NOW)
    assert actions["steps"] == [f"{audit.pk}:{first.position}"]  # the audit is not idle: its pending step waits
    assert actions["redrive"] == []


def test_the_pending_steps_of_an_idle_audit_are_sent_again_only_when_their_messages_can_only_be_lost(
    fiche, config, settings
):
    from audits.tasks import audit_step_analyze
    from config.celery import app
    from llm.slots import llm_semaphore

    settings.CLAIM_LEASE_SECONDS = 30  # idle for 45 s: past a lease, before the stall (60 s)
    audit = audit_at(fiche, config, ago=45, status="running", dispatched_at=NOW - timedelta(seconds=45))
    positions = []
    for definition in config.current_version.steps.order_by("position")[:2]:
        AuditStepResult.objects.create(audit=audit, step=definition, position=definition.position, status="pending")
        positions.append(definition.position)
    actions = audit_reconcile(now=NOW)
    assert sorted(actions["steps"]) == sorted(f"{audit.pk}:{p}" for p in positions)
    assert actions["redrive"] == []

    # A message waiting in the llm queue: the steps may be queued behind it, not lost.
    audit_step_analyze.apply_async(args=("00000000-0000-0000-0000-000000000000", 1))
    assert audit_reconcile(now=NOW)["steps"] == []
    app.control.purge()

    # Every LLM slot in live hands: a waiting step would be waiting for one.
    semaphore = llm_semaphore()
    for n in range(semaphore.limit):
        assert semaphore.acquire(f"holder-{n}")
    assert audit_reconcile(now=NOW)["steps"] == []
    semaphore.release("holder-0")
    assert len(audit_reconcile(now=NOW)["steps"]) == 2
