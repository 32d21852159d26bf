"""P-queue ``review_queues``: review queues at scale, default settings, no workers (the services themselves).

10 000 completed audits of 200 agents over 10 weeks of sales (one step of four control points each: 10 %
REJET, 20 % needing review with an uncertain point, 5 % with an advisory point), three active queues (every
rule + 10 % sample; 25 % sample only, one group; untrusted points only). Measured:

- backfill of the whole range into the first queue (rules, sample, closed weeks topped up);
- the finish hook's work per audit (``enter_audit``: every active queue), over 200 audits;
- the beat's sweep at the default ``REVIEW_QUEUE_SWEEP_HOURS`` with every audit completed in that window
  (the worst case) — once when the queues hold nothing yet, then again (the steady state: every minute's
  sweep after the first);
- ``item_claim_next`` p50 / p99 over 500 claims by 5 reviewers in turn, 2 000+ items waiting, and by a GROUP
  reviewer (a scope join).
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from accounts.grants import Scope
from accounts.models import Role, RolePermission, User
from audits.defaults import DEFAULT_CONFIG
from audits.models import Audit, AuditStepResult, ControlPointResult
from audits.services.configs import config_create
from fiches.models import FicheCache
from review_queues import services
from review_queues.models import ItemState, QueueItem, ReviewQueue

AGENTS, PER_AGENT, WEEKS = 200, 50, 10
GROUPS = ("Lyon-1", "Lyon-2", "Marseille", "Paris")


def _truncate() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE review_queue_items, review_queues, audits, audit_configs, fiche_cache_details, "
            "fiche_cache_mail_devis, fiche_cache CASCADE"
        )
    User.objects.filter(email__startswith="bench-").delete()
    Role.objects.filter(key__startswith="bench-").delete()


def _seed() -> tuple[int, list[Audit]]:
    config = config_create(data={**DEFAULT_CONFIG, "name": "bench: queues"})
    version = config.current_version
    assert version is not None
    step = version.steps.order_by("position").first()
    assert step is not None
    this_monday = timezone.localdate() - timedelta(days=timezone.localdate().weekday())
    first_monday = this_monday - timedelta(weeks=WEEKS)  # ten closed weeks: the sweep tops up the last two
    fiches = []
    for agent in range(AGENTS):
        for n in range(PER_AGENT):
            fiches.append(
                FicheCache(
                    fiche_id=f"B{agent:03d}{n:03d}",
                    sales_date=first_monday + timedelta(days=(n * 7 * WEEKS) // PER_AGENT),
                    groupe=GROUPS[agent % len(GROUPS)],
                    crm_user_id=f"u-{agent}",
                    agent_name=f"Agent {agent}",
                )
            )
    FicheCache.objects.bulk_create(fiches, batch_size=2000)
    now = timezone.now()
    audits = []
    for i, fiche in enumerate(FicheCache.objects.order_by("fiche_id")):
        rejet, review = i % 10 == 0, i % 5 == 1
        audits.append(
            Audit(
                fiche=fiche,
                config=config,
                config_version=version,
                status="completed",
                niveau="REJET" if rejet else "BON",
                is_compliant=not rejet,
                needs_review=review or i % 20 == 3,
                completed_at=now - timedelta(minutes=i % 600),
            )
        )
    Audit.objects.bulk_create(audits, batch_size=2000)
    rows = AuditStepResult.objects.bulk_create(
        [AuditStepResult(audit=a, step=step, position=step.position, status="completed") for a in audits],
        batch_size=2000,
    )
    points = []
    for i, row in enumerate(rows):
        for index in range(4):
            status = "uncertain" if (i % 5 == 1 and index == 0) else "pass"
            points.append(
                ControlPointResult(
                    step_result=row,
                    index=index,
                    ai_status=status,
                    status=status,
                    unguided_status=status,
                    advisory=i % 20 == 3 and index == 1,
                )
            )
    ControlPointResult.objects.bulk_create(points, batch_size=5000)
    return config.pk, audits


def _reviewers() -> tuple[list[User], User]:
    every = Role.objects.create(key="bench-reviewer", name="Bench reviewer")
    RolePermission.objects.create(role=every, permission_key="audits", can_read=True, can_write=True, scope=Scope.ALL)
    team = Role.objects.create(key="bench-team", name="Bench team")
    RolePermission.objects.create(role=team, permission_key="audits", can_read=True, can_write=True, scope=Scope.GROUP)
    reviewers = []
    for n in range(5):
        user = User.objects.create_user(email=f"bench-reviewer-{n}@example.com", password="x")
        user.roles.set([every])
        reviewers.append(user)
    lead = User.objects.create_user(email="bench-team@example.com", password="x", groupes=["Lyon-2"])
    lead.roles.set([team])
    return reviewers, lead


def _ms(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"


def run(args: Any) -> None:
    _truncate()
    began = time.perf_counter()
    config_id, audits = _seed()
    print(
        f"\n== review_queues: {len(audits)} audits, {AGENTS} agents, {WEEKS} weeks (seeded in "
        f"{time.perf_counter() - began:.1f} s) =="
    )
    everything = ReviewQueue.objects.create(name="bench: rules + 10 %", sample_percent=10, seed=1)
    sampled = ReviewQueue.objects.create(
        name="bench: 25 % Lyon-2",
        sample_percent=25,
        seed=2,
        include_rejet=False,
        include_needs_review=False,
        include_uncertain=False,
        include_untrusted=False,
        groupes=["Lyon-2"],
    )
    untrusted = ReviewQueue.objects.create(
        name="bench: untrusted",
        include_rejet=False,
        include_needs_review=False,
        include_uncertain=False,
        seed=3,
    )
    started = time.perf_counter()
    counts = services.backfill(everything, date_from=None, date_to=None)
    print(
        f"backfill, 1 queue:        {time.perf_counter() - started:6.2f} s  "
        f"({counts['entered']} entered, {counts['sample_floor']} sample floor)"
    )
    QueueItem.objects.all().delete()
    hook = []
    for audit in audits[:200]:
        t = time.perf_counter()
        services.enter_audit(audit_id=str(audit.pk))
        hook.append(time.perf_counter() - t)
    print(f"enter_audit, 3 queues:    {_ms(hook)} per audit")
    QueueItem.objects.all().delete()
    t = time.perf_counter()
    first = services.sweep()
    print(f"sweep, empty queues:      {time.perf_counter() - t:6.2f} s  ({first})")
    t = time.perf_counter()
    again = services.sweep()
    print(f"sweep, steady state:      {time.perf_counter() - t:6.2f} s  ({again})")
    waiting = QueueItem.objects.filter(queue=everything, state=ItemState.WAITING).count()
    reviewers, lead = _reviewers()
    claims = []
    for n in range(500):
        reviewer = reviewers[n % len(reviewers)]
        t = time.perf_counter()
        claim = services.item_claim_next(queue=everything, user=reviewer)
        claims.append(time.perf_counter() - t)
        assert claim is not None
        QueueItem.objects.filter(pk=claim.item.pk).update(state=ItemState.DONE, done_at=timezone.now())
    print(f"claim next ({waiting} waiting): {_ms(claims)}")
    team = []
    for _ in range(100):
        t = time.perf_counter()
        claim = services.item_claim_next(queue=everything, user=lead)
        team.append(time.perf_counter() - t)
        assert claim is not None
        QueueItem.objects.filter(pk=claim.item.pk).update(state=ItemState.DONE, done_at=timezone.now())
    print(f"claim next, GROUP scope:  {_ms(team)}")
    _ = (sampled, untrusted, config_id)
