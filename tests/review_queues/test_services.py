"""Review queues, the service level: which completed audits enter (rules with their reasons, config and group
filters), the sample (reproducible from the seed whatever the order audits complete in, close to its share),
the per-agent per-week floor of closed weeks, backfill (idempotent; the management command), the sweep, and
entering through the audits' finish hook (a task on the broker)."""

from __future__ import annotations

import copy
import hashlib
import uuid
from datetime import UTC, date, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from freezegun import freeze_time

from audits.defaults import DEFAULT_CONFIG
from audits.models import Audit, AuditConfig, AuditStepResult, ControlPointResult
from audits.services import finish
from audits.services.configs import config_create
from audits.services.reviews import recompute_audit, rescore_step
from fiches.models import FicheCache
from review_queues import services
from review_queues.models import QueueItem, ReviewQueue
from review_queues.tasks import review_queue_enter_audit
from tests.support import queued_tasks

pytestmark = pytest.mark.django_db

WITHDRAWAL = 7  # critical step, one critical point
PRESENTATION = 1  # critical step, point 0 critical
NEEDS = 5  # "Analyse des besoins": not critical; points 0, 1 not critical


@pytest.fixture
def config(db) -> AuditConfig:
    """The seeded default config (nine steps)."""
    call_command("seed_audit_configs", verbosity=0)
    return AuditConfig.objects.get()


def make_fiche(fiche_id: str, *, groupe: str = "Lyon-2", agent: str = "agent-1", sold: date | None = None):
    return FicheCache.objects.create(
        fiche_id=fiche_id,
        sales_date=sold or timezone.localdate(),
        groupe=groupe,
        crm_user_id=agent,
        details_success=True,
        details_fetched_at=timezone.now(),
    )


def scored_audit(
    fiche: FicheCache,
    config: AuditConfig,
    verdicts: dict[tuple[int, int], str] | None = None,
    *,
    advisory: tuple[tuple[int, int], ...] = (),
    human: dict[tuple[int, int], str] | None = None,
) -> Audit:
    """A completed audit scored in code: every point passed but ``verdicts``; ``advisory`` points were stored
    while their trust was withdrawn; ``human`` points were decided by a reviewer."""
    verdicts, human = verdicts or {}, human or {}
    version = config.current_version
    assert version is not None
    audit = Audit.objects.create(
        fiche=fiche,
        config=config,
        config_version=version,
        status="completed",
        completed_at=timezone.now(),
    )
    for step in version.steps.all():
        row = AuditStepResult.objects.create(audit=audit, step=step, position=step.position, status="completed")
        for point in step.control_points.all():
            key = (step.position, point.index)
            status = verdicts.get(key, "pass")
            ControlPointResult.objects.create(
                step_result=row,
                index=point.index,
                ai_status=status,
                status=status,
                advisory=key in advisory,
                human_status=human.get(key),
            )
        rescore_step(row)
    recompute_audit(audit)
    audit.refresh_from_db()
    return audit


def plain_audits(config: AuditConfig, fiches: list[FicheCache], n: int, *, salt: str = "") -> list[Audit]:
    """``n`` completed, compliant audits no rule picks (fixed ids: the draws are fixed too)."""
    now = timezone.now()
    version = config.current_version
    assert version is not None
    return Audit.objects.bulk_create(
        Audit(
            id=uuid.uuid5(uuid.NAMESPACE_URL, f"audit-{salt}{i}"),
            fiche=fiches[i % len(fiches)],
            config=config,
            config_version=version,
            status="completed",
            completed_at=now,
            niveau="EXCELLENT",
            is_compliant=True,
            score_percentage=100.0,
            overall_score=100.0,
            max_score=100.0,
        )
        for i in range(n)
    )


def draw(seed: int, audit_id: object) -> float:
    """The documented draw, written out here: the first 8 bytes of sha256("{seed}:{audit_id}") over 2^64."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{audit_id}".encode()).digest()[:8], "big") / 2**64


def items(queue: ReviewQueue) -> dict[str, list[str]]:
    return {str(a): r for a, r in QueueItem.objects.filter(queue=queue).values_list("audit_id", "reasons")}


def queue_of(**fields) -> ReviewQueue:
    fields.setdefault("sample_percent", 0.0)
    return ReviewQueue.objects.create(name=fields.pop("name", "File"), **fields)


def test_rules_let_audits_in_with_their_reasons_within_the_configs_and_groups(config):
    lyon, paris = make_fiche("F-LYON"), make_fiche("F-PARIS", groupe="Paris-Est", agent="agent-2")
    other = config_create(data={**copy.deepcopy(DEFAULT_CONFIG), "name": "Autre grille"})
    clean = scored_audit(lyon, config)
    rejet = scored_audit(lyon, config, {(WITHDRAWAL, 0): "fail"})
    uncertain = scored_audit(lyon, config, {(NEEDS, 0): "uncertain"})
    critical_uncertain = scored_audit(lyon, config, {(PRESENTATION, 0): "uncertain"})
    untrusted = scored_audit(lyon, config, advisory=((NEEDS, 1),))
    decided = scored_audit(lyon, config, {(NEEDS, 0): "uncertain"}, human={(NEEDS, 0): "pass"})
    paris_rejet = scored_audit(paris, config, {(WITHDRAWAL, 0): "fail"})
    other_rejet = scored_audit(lyon, other, {(WITHDRAWAL, 0): "fail"})
    # What compliance made of them (the rules read these).
    assert (rejet.niveau, rejet.needs_review) == ("REJET", False)
    assert (uncertain.niveau, uncertain.needs_review) == ("EXCELLENT", True)
    assert (untrusted.niveau, untrusted.needs_review) == ("EXCELLENT", True)  # a pending point, not critical
    assert (decided.needs_review, clean.needs_review) == (False, False)

    every = queue_of(name="Tout")
    assert services.enter_audits(every, Audit.objects.all()) == 6
    assert items(every) == {
        str(rejet.pk): ["rejet"],
        str(uncertain.pk): ["needs_review", "uncertain"],
        str(critical_uncertain.pk): ["rejet", "needs_review", "uncertain"],
        str(untrusted.pk): ["needs_review", "untrusted"],
        str(paris_rejet.pk): ["rejet"],
        str(other_rejet.pk): ["rejet"],
    }
    assert set(QueueItem.objects.filter(queue=every).values_list("priority", flat=True)) == {0}
    item = QueueItem.objects.get(queue=every, audit=rejet)
    assert (item.state, item.agent, item.week) == ("waiting", "agent-1", services.week_of(lyon.sales_date))
    assert services.enter_audits(every, Audit.objects.all()) == 0  # once per queue

    # Each rule on its own.
    only_needs = queue_of(include_rejet=False, include_uncertain=False, include_untrusted=False)
    services.enter_audits(only_needs, Audit.objects.all())
    assert items(only_needs) == {
        str(uncertain.pk): ["needs_review"],
        str(critical_uncertain.pk): ["needs_review"],
        str(untrusted.pk): ["needs_review"],
    }
    only_uncertain = queue_of(include_rejet=False, include_needs_review=False, include_untrusted=False)
    services.enter_audits(only_uncertain, Audit.objects.all())
    assert items(only_uncertain) == {str(uncertain.pk): ["uncertain"], str(critical_uncertain.pk): ["uncertain"]}
    only_untrusted = queue_of(include_rejet=False, include_needs_review=False, include_uncertain=False)
    services.enter_audits(only_untrusted, Audit.objects.all())
    assert items(only_untrusted) == {str(untrusted.pk): ["untrusted"]}

    # Configs and groups restrict; an inactive queue takes nothing.
    other_only = queue_of(include_needs_review=False, include_uncertain=False, include_untrusted=False)
    other_only.configs.set([other])
    services.enter_audits(other_only, Audit.objects.all())
    assert items(other_only) == {str(other_rejet.pk): ["rejet"]}
    paris_only = queue_of(groupes=["Paris-Est"])
    services.enter_audits(paris_only, Audit.objects.all())
    assert items(paris_only) == {str(paris_rejet.pk): ["rejet"]}
    asleep = queue_of(is_active=False)
    assert services.enter_audits(asleep, Audit.objects.all()) == 0 and not items(asleep)
    # A running audit never enters.
    Audit.objects.filter(pk=rejet.pk).update(status="running")
    late = queue_of()
    services.enter_audits(late, Audit.objects.all())
    assert str(rejet.pk) not in items(late)


def test_the_sample_is_reproducible_from_its_seed_and_close_to_its_share(config):
    fiches = [make_fiche(f"F-{n}", agent=f"agent-{n}") for n in range(8)]
    audits = plain_audits(config, fiches, 400)
    expected = {str(a.pk) for a in audits if draw(2026, a.pk) < 0.25}
    # 400 audits at 25 %: 100 expected, standard deviation sqrt(400 · 0.25 · 0.75) ≈ 8.7.
    assert 70 <= len(expected) <= 130

    first = queue_of(name="A", sample_percent=25, seed=2026)
    assert services.enter_audits(first, Audit.objects.all()) == len(expected)
    assert set(items(first)) == expected
    assert {tuple(r) for r in items(first).values()} == {("sample",)}
    assert set(QueueItem.objects.filter(queue=first).values_list("priority", flat=True)) == {1}

    # The same seed, the audits completing one at a time in the opposite order: the same sample.
    twin = queue_of(name="B", sample_percent=25, seed=2026)
    for audit in reversed(audits):
        services.enter_audits(twin, Audit.objects.filter(pk=audit.pk))
    assert set(items(twin)) == expected

    # Another seed, another sample (of about the same size).
    other = queue_of(name="C", sample_percent=25, seed=7)
    services.enter_audits(other, Audit.objects.all())
    assert set(items(other)) != expected and 70 <= len(items(other)) <= 130
    assert set(items(other)) == {str(a.pk) for a in audits if draw(7, a.pk) < 0.25}


def test_closed_weeks_get_one_sample_per_agent_and_backfill_is_idempotent(config):
    today = timezone.localdate()
    this_monday = services.week_of(today)
    last_week = this_monday - timedelta(days=5)  # a Wednesday of the closed week before
    quiet_old = make_fiche("F-Q-OLD", agent="agent-q", sold=last_week)
    quiet_new = make_fiche("F-Q-NEW", agent="agent-q", sold=today)
    busy_old = make_fiche("F-B-OLD", agent="agent-b", sold=last_week)
    quiet_closed = plain_audits(config, [quiet_old], 3, salt="q-old")
    quiet_current = plain_audits(config, [quiet_new], 3, salt="q-new")
    plain_audits(config, [busy_old], 2, salt="b-old")
    busy_rejet = scored_audit(busy_old, config, {(WITHDRAWAL, 0): "fail"})

    seed = 11
    queue = queue_of(name="Plancher", sample_percent=0.01, seed=seed)
    assert all(draw(seed, a.pk) >= 0.0001 for a in Audit.objects.exclude(pk=busy_rejet.pk))  # none sampled

    assert services.backfill(queue, date_from=None, date_to=None) == {"entered": 1, "sample_floor": 1}
    floor = QueueItem.objects.get(queue=queue, reasons=["sample_floor"])
    # agent-q's closed week: the audit of smallest draw; their current week: none; agent-b's closed week
    # already has an item (the REJET): no floor.
    assert str(floor.audit_id) == str(min(quiet_closed, key=lambda a: draw(seed, a.pk)).pk)
    assert (floor.agent, floor.week, floor.priority) == ("agent-q", services.week_of(last_week), 1)
    assert not QueueItem.objects.filter(queue=queue, audit__in=quiet_current).exists()
    assert list(QueueItem.objects.filter(queue=queue, agent="agent-b").values_list("audit_id", "reasons")) == [
        (busy_rejet.pk, ["rejet"])
    ]
    assert services.backfill(queue, date_from=None, date_to=None) == {"entered": 0, "sample_floor": 0}
    assert QueueItem.objects.filter(queue=queue).count() == 2

    # Next week, today's week is closed too: the sweep-like top-up gives agent-q one for it.
    assert services.top_up_closed_weeks(queue, Audit.objects.all(), today=today + timedelta(days=7)) == 1
    assert QueueItem.objects.filter(queue=queue, audit__in=quiet_current).count() == 1

    # The management command: the same counts, printed; idempotent; bad input refused.
    other = queue_of(name="Commande", sample_percent=0.01, seed=seed)
    day = today.isoformat()
    out = StringIO()
    call_command("review_queue_backfill", f"--queue={other.pk}", f"--from={day}", f"--to={day}", stdout=out)
    assert out.getvalue().strip() == f"queue {other.pk} (Commande): 1 entered, 1 sample floor"
    out = StringIO()
    call_command("review_queue_backfill", f"--queue={other.pk}", stdout=out)
    assert out.getvalue().strip() == f"queue {other.pk} (Commande): 0 entered, 0 sample floor"
    with pytest.raises(CommandError, match="Not a date"):
        call_command("review_queue_backfill", f"--queue={other.pk}", "--from=2026-13-01")
    with pytest.raises(CommandError, match="after"):
        call_command("review_queue_backfill", f"--queue={other.pk}", f"--from={day}", "--to=2020-01-01")
    with pytest.raises(CommandError):
        call_command("review_queue_backfill", "--queue=999999")
    ReviewQueue.objects.filter(pk=other.pk).update(is_active=False)
    with pytest.raises(CommandError, match="inactive"):
        call_command("review_queue_backfill", f"--queue={other.pk}")
    # A range that holds none of the audits enters nothing.
    empty = queue_of(name="Vide", sample_percent=100, seed=seed)
    yesterday = (today - timedelta(days=1)).isoformat()
    out = StringIO()
    call_command("review_queue_backfill", f"--queue={empty.pk}", f"--from={yesterday}", f"--to={yesterday}", stdout=out)
    assert out.getvalue().strip() == f"queue {empty.pk} (Vide): 0 entered, 0 sample floor"


def test_the_sweep_returns_expired_claims_and_enters_recent_audits_it_missed(config, make_role, make_user):
    reviewer = make_user(make_role("reviewer", audits=("rw", "ALL")))
    lyon = make_fiche("F-LYON")
    queue = queue_of()
    first = scored_audit(lyon, config, {(WITHDRAWAL, 0): "fail"})
    services.enter_audits(queue, Audit.objects.all())
    claim = services.item_claim_next(queue=queue, user=reviewer)
    assert claim is not None and claim.item.state == "claimed"
    missed = scored_audit(lyon, config, {(WITHDRAWAL, 0): "fail"})  # its entry task was lost
    assert services.sweep()["returned_queues"] == 0  # a live claim stays
    assert QueueItem.objects.get(audit=first).state == "claimed"

    QueueItem.objects.filter(pk=claim.item.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert services.sweep() == {"returned_queues": 1, "entered": 0, "sample_floor": 0}
    returned = QueueItem.objects.get(audit=first)
    assert (returned.state, returned.claimed_by, returned.lease_expires_at) == ("waiting", None, None)
    assert QueueItem.objects.get(audit=missed).reasons == ["rejet"]  # entered by the first sweep


def test_the_beat_sweep_gives_an_agents_closed_week_its_floor_sample(config):
    """The module's promise: a closed week of an agent without items gets its floor sample "from the backfill
    and the beat sweep, so every agent gets reviewed every week". An agent sells on Tuesday and the audits
    complete that day; the beat sweeps all along (daily here, every five minutes in production). Once the
    week has closed (Monday), a sweep must give that week its one sample_floor item — without anyone running
    a backfill."""
    tuesday = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)  # 12:00 in Paris
    seed = 11
    queue = queue_of(name="Plancher", sample_percent=0.01, seed=seed)
    with freeze_time(tuesday):
        fiche = make_fiche("F-Q", agent="agent-q", sold=date(2026, 11, 24))
        audits = plain_audits(config, [fiche], 3, salt="sweep")
    assert all(draw(seed, a.pk) >= 0.0001 for a in audits)  # none sampled: only the floor can pick one
    for day in range(9):  # Tuesday 24 → Wednesday 2 December (the week closed on Monday 30)
        with freeze_time(tuesday + timedelta(days=day)):
            services.sweep()
    floor = QueueItem.objects.filter(queue=queue, reasons=["sample_floor"])
    assert list(floor.values_list("agent", "week")) == [("agent-q", date(2026, 11, 23))]


def test_a_completed_audit_enters_the_queues_through_the_finish_hook_and_its_task(
    config, django_capture_on_commit_callbacks
):
    lyon = make_fiche("F-LYON")
    queue = queue_of()
    now = timezone.now()
    version = config.current_version
    assert version is not None

    def ending(verdict: str) -> Audit:
        audit = Audit.objects.create(
            fiche=lyon,
            config=config,
            config_version=version,
            status="running",
            started_at=now,
            dispatched_at=now,
        )
        for step in version.steps.all():
            row = AuditStepResult.objects.create(audit=audit, step=step, position=step.position, status="completed")
            for p in step.control_points.all():
                status = verdict if (step.position, p.index) == (WITHDRAWAL, 0) else "pass"
                ControlPointResult.objects.create(step_result=row, index=p.index, ai_status=status, status=status)
        return audit

    rejected = ending("fail")
    with django_capture_on_commit_callbacks(execute=True):
        assert finish.audit_step_settled(audit_id=str(rejected.pk)) is True
    sent = [t for t in queued_tasks("default") if t.name == "review_queues.tasks.review_queue_enter_audit"]
    assert [t.args for t in sent] == [[str(rejected.pk)]]
    assert not QueueItem.objects.exists()  # the task enters it, not the hook
    assert review_queue_enter_audit.apply(args=sent[0].args).get() == 1
    assert items(queue) == {str(rejected.pk): ["rejet"]}
    assert review_queue_enter_audit.apply(args=sent[0].args).get() == 0  # idempotent (a redelivery)

    # A failed audit is told to the hook too, but never enters.
    failed = ending("pass")
    with django_capture_on_commit_callbacks(execute=True):
        finish.fail(failed, "boom", phase="analysis")
    sent = [t for t in queued_tasks("default") if t.name == "review_queues.tasks.review_queue_enter_audit"]
    assert len(sent) == 1
