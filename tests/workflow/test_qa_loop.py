"""The QA team's loop with real worker processes and the CRM / speech-to-text / LLM simulators over HTTP:
review queues (a seeded sample gives the same items twice; reviewers pulling at once never share an item;
an expired lease returns it), disputes (the agent disputes, a reviewer accepts once, the rules hold), and
trust per control point (an LLM wrong on one point loses the AI's trust after the minimum sample, new audits
route to review, trust returns when reviews agree again)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import date, timedelta

import pytest
from django.utils import timezone

from audits.models import Audit, Dispute, HumanReview
from fiches.models import FicheCache
from review_queues.models import QueueItem
from review_queues.services import enter_audit, sample_draw, sweep, week_of
from tests.workflow.conftest import wait_for
from tests.workflow.test_audits import (
    COMPLIANT,
    COMPLIANT_2,
    NO_RECORDING_NOTICE,
    RECORDING_STEP,
    audit_ended,
    client_for,
    config_id,
    detail,
    pusher_events,
    run_audit,
)

pytestmark = [pytest.mark.workflow, pytest.mark.django_db(transaction=True)]

WRONG_QUESTION = "copie de l'enregistrement"  # step 4, point 2: "... une copie de l'enregistrement ... sur demande ?"
WRONG_POINT = (RECORDING_STEP, 2)


@pytest.fixture
def manager(make_role, make_user):
    """A QA manager: reviews every audit and owns the scorecards and the queues."""
    role = make_role("qa-manager", audits=("rw", "ALL"), fiches=("r", "ALL"), audit_configs=("rw", "ALL"))
    return make_user(role, email="qa-manager@example.com")


def post(user, path: str, body: dict | None = None):
    return client_for(user).post(path, body or {}, format="json")


def review(user, audit_id, position: int, index: int, status: str, comment: str = "Vérifié à l'écoute.") -> dict:
    response = post(
        user,
        f"/api/audits/{audit_id}/steps/{position}/reviews",
        {"control_point_index": index, "status": status, "comment": comment},
    )
    assert response.status_code == 201, response.content
    return response.json()


def point_of(data: dict, position: int, index: int) -> dict:
    step = next(s for s in data["steps"] if s["position"] == position)
    return next(p for p in step["control_points"] if p["index"] == index)


def trust_of(user, position: int, index: int) -> dict:
    response = client_for(user).get(f"/api/audit-configs/{config_id()}/trust")
    assert response.status_code == 200, response.content
    return next(
        p["trust"]
        for p in response.json()["control_points"]
        if (p["step_position"], p["control_point_index"]) == (position, index)
    )


def create_queue(user, **rules) -> int:
    body = {
        "name": rules.pop("name", "File QA"),
        "include_rejet": False,
        "include_needs_review": False,
        "include_uncertain": False,
        "include_untrusted": False,
        **rules,
    }
    response = post(user, "/api/review-queues", body)
    assert response.status_code == 201, response.content
    return response.json()["id"]


def queue_items(queue_id: int) -> dict[str, list[str]]:
    return {
        str(a): sorted(r) for a, r in QueueItem.objects.filter(queue_id=queue_id).values_list("audit_id", "reasons")
    }


# --- Trust per control point ------------------------------------------------------------------------------


def test_a_point_the_ai_gets_wrong_loses_trust_routes_new_audits_to_review_and_regains_it(
    audit_stack, settings, manager
):
    """The LLM fails the « copie sur demande » point of calls where it was said; reviewers say it passed. At
    the minimum sample (4 here, 20 by default) kappa is 0: trust is withdrawn, recorded and announced; the
    next audit's verdict on that point is advice (pending, needs_review) and the audit enters the queue of
    untrusted points. Once the model is right again and the window holds only agreeing reviews, trust
    returns and new audits decide the point on their own."""
    crm, stt, llm, pusher, start = audit_stack
    start("qa1")
    settings.AUDIT_TRUST_WINDOW = settings.AUDIT_TRUST_MIN_REVIEWS = 4
    queue_id = create_queue(manager, name="Points sans confiance", include_untrusted=True)
    llm.config.wrong_point = WRONG_QUESTION

    for n in range(4):
        audit = audit_ended(run_audit(manager, (COMPLIANT, COMPLIANT_2)[n % 2]))
        assert audit.status == "completed"
        point = point_of(detail(manager, audit.pk), *WRONG_POINT)
        assert (point["status"], point["advisory"]) == ("fail", False)
        assert trust_of(manager, *WRONG_POINT)["state"] == "trusted"
        review(manager, audit.pk, *WRONG_POINT, "pass", "La copie sur demande est bien annoncée.")
    trust = trust_of(manager, *WRONG_POINT)
    assert (trust["state"], trust["kappa"], trust["agreement"], trust["sample_size"]) == ("withdrawn", 0.0, 0.0, 4)
    assert [(c["previous_state"], c["state"], c["sample_size"]) for c in trust["changes"]] == [
        ("trusted", "withdrawn", 4)
    ]
    assert trust_of(manager, RECORDING_STEP, 0)["state"] == "trusted"  # the other points keep theirs
    calibration = client_for(manager).get(f"/api/audits/calibration?audit_config_id={config_id()}").json()
    row = next(
        r for r in calibration["control_points"] if (r["step_position"], r["control_point_index"]) == WRONG_POINT
    )
    assert (row["reviewed"], row["kappa"], row["trust"]["state"]) == (4, 0.0, "withdrawn")
    announced = wait_for(
        lambda: pusher_events(pusher, "private-global", "audit.trust_changed"), message="the trust change event"
    )
    assert [p for _, p in announced] == [{"config_id": str(config_id()), "status": "withdrawn", "redacted": True}]

    # The model is right again, but its verdict on the point is advice until reviewers have agreed enough.
    llm.config.wrong_point = ""
    for n in range(4):
        audit = audit_ended(run_audit(manager, (COMPLIANT, COMPLIANT_2)[n % 2]))
        data = detail(manager, audit.pk)
        point = point_of(data, *WRONG_POINT)
        assert (point["status"], point["ai_status"], point["advisory"], point["pending_review"]) == (
            "pending",
            "pass",
            True,
            True,
        )
        assert data["needs_review"] is True
        others = [p for s in data["steps"] for p in s["control_points"] if (s["position"], p["index"]) != WRONG_POINT]
        assert not any(p["advisory"] for p in others)
        item = wait_for(
            lambda audit=audit: QueueItem.objects.filter(queue_id=queue_id, audit=audit).first(),
            message="the audit to enter the queue",
        )
        assert item.reasons == ["untrusted"]
        claimed = post(manager, f"/api/review-queues/{queue_id}/next")
        assert claimed.status_code == 200 and claimed.json()["audit"]["audit_id"] == str(audit.pk)
        reviewed = review(manager, audit.pk, *WRONG_POINT, "pass")
        assert point_of({"steps": [reviewed["step"]]}, *WRONG_POINT)["status"] == "pass"
        assert QueueItem.objects.get(pk=item.pk).state == "done"
        assert trust_of(manager, *WRONG_POINT)["state"] == ("trusted" if n == 3 else "withdrawn")
    trust = trust_of(manager, *WRONG_POINT)
    assert (trust["kappa"], trust["agreement"], trust["sample_size"]) == (1.0, 1.0, 4)
    assert [c["state"] for c in trust["changes"]] == ["withdrawn", "trusted"]

    audit = audit_ended(run_audit(manager, COMPLIANT))
    point = point_of(detail(manager, audit.pk), *WRONG_POINT)
    assert (point["status"], point["advisory"]) == ("pass", False)
    assert enter_audit(audit_id=str(audit.pk)) == 0  # nothing lets it in the untrusted queue any more
    assert not QueueItem.objects.filter(audit=audit).exists()
    progress = client_for(manager).get(f"/api/review-queues/{queue_id}").json()["progress"]
    assert (progress["waiting"], progress["claimed"], progress["done"], progress["scope"]) == (0, 0, 4, "queue")


# --- Review queues ----------------------------------------------------------------------------------------


def sales_with_recordings(count: int) -> list[str]:
    from fiches.simulator import data as crm_data

    fiche_ids, day = [], date(2026, 2, 2)
    while len(fiche_ids) < count:
        for i in range(crm_data.sales_count(day, seed=42, fiches_per_day=6)):
            fiche = crm_data.fiche_details(crm_data.fiche_id_for(day, i), seed=42, fiches_per_day=6, revision=0)
            if fiche["fiche"].get("recordings") and len(fiche_ids) < count:
                fiche_ids.append(fiche["fiche"]["information"]["fiche_id"])
        day += timedelta(days=1)
    return fiche_ids


def test_a_seeded_sample_gives_the_same_items_twice_and_reviewers_pulling_at_once_never_share_one(
    audit_stack, settings, manager, make_role, make_user
):
    from batches.models import Batch

    crm, stt, llm, pusher, start = audit_stack
    start("qa2")
    seed = 20261206
    sampled = create_queue(manager, name="Échantillon 50 %", sample_percent=50, seed=seed)
    response = post(
        manager, "/api/audits/batch", {"fiche_ids": sales_with_recordings(8), "audit_config_id": config_id()}
    )
    assert response.status_code == 202, response.content
    batch_id = response.json()["batch_id"]
    wait_for(
        lambda: Batch.objects.get(pk=batch_id).status == "completed", timeout=240, interval=0.5, message="the batch"
    )
    completed = list(Audit.objects.filter(batch_id=batch_id, status="completed").select_related("fiche"))
    assert len(completed) >= 6
    # As they complete, audits enter through the worker: exactly those the seed draws.
    drawn = {str(a.pk) for a in completed if sample_draw(seed, a.pk) < 0.5}
    wait_for(lambda: set(queue_items(sampled)) == drawn, message="the drawn audits to enter")
    # A backfill of the range gives each agent's closed week without an item its audit of smallest draw (the
    # beat's sweep does it for the weeks that closed lately; these sales are older); the sweep then adds nothing.
    floors = post(manager, f"/api/review-queues/{sampled}/backfill", {}).json()
    assert floors["entered"] == 0
    assert sweep()["entered"] == 0
    online = queue_items(sampled)
    assert len(online) == len(drawn) + floors["sample_floor"]
    strata = {(a.fiche.crm_user_id or "", week_of(a.fiche.sales_date)) for a in completed}
    covered = set(QueueItem.objects.filter(queue_id=sampled).values_list("agent", "week"))
    assert strata <= covered
    assert all(reasons in (["sample"], ["sample_floor"]) for reasons in online.values())

    # The same seed over the same audits, entered by a backfill: the same items, twice.
    twin = create_queue(manager, name="Jumelle", sample_percent=50, seed=seed)
    backfilled = post(manager, f"/api/review-queues/{twin}/backfill", {})
    assert backfilled.status_code == 200, backfilled.content
    assert backfilled.json()["entered"] + backfilled.json()["sample_floor"] == len(online)
    assert queue_items(twin) == online
    again = post(manager, f"/api/review-queues/{sampled}/backfill", {}).json()
    assert again == {"entered": 0, "sample_floor": 0} and queue_items(sampled) == online

    # Side door: a reviewer of another group gets nothing of this queue and may not follow its channel.
    elsewhere = make_user(make_role("qa-elsewhere", audits=("rw", "GROUP")), groupes=["Nowhere"])
    assert post(elsewhere, f"/api/review-queues/{sampled}/next").status_code == 204
    mine = client_for(elsewhere).get(f"/api/review-queues/{sampled}").json()["progress"]
    assert (mine["waiting"], mine["scope"]) == (0, "yours")
    channel = {"socket_id": "123.456", "channel_name": f"private-review-queue-{sampled}"}
    assert post(elsewhere, "/api/realtime/pusher/auth", channel).status_code == 403
    assert post(manager, "/api/realtime/pusher/auth", channel).status_code == 200

    reviewer_role = make_role("qa-reviewer", audits=("rw", "ALL"))
    reviewers = [make_user(reviewer_role, email=f"reviewer{n}@example.com") for n in range(3)]

    # An expired lease returns the item: the next reviewer gets it, and the first can no longer renew it.
    settings.REVIEW_QUEUE_LEASE_SECONDS = 1
    first = post(reviewers[0], f"/api/review-queues/{sampled}/next").json()
    time.sleep(1.2)
    settings.REVIEW_QUEUE_LEASE_SECONDS = 900
    taken = post(reviewers[1], f"/api/review-queues/{sampled}/next").json()
    assert (taken["id"], taken["claimed_by"], taken["resumed"]) == (first["id"], "reviewer1@example.com", False)
    renew = post(reviewers[0], f"/api/review-queues/{sampled}/items/{first['id']}/renew")
    assert renew.status_code == 409 and renew.json()["error"]["code"] == "item_not_claimed_by_you"
    assert post(reviewers[1], f"/api/review-queues/{sampled}/next").json()["resumed"] is True
    assert post(reviewers[1], f"/api/review-queues/{sampled}/items/{first['id']}/release").status_code == 200

    # Three reviewers drain the queue at once: each item given to exactly one, each done by its review.
    barrier = threading.Barrier(len(reviewers))
    given: dict[str, list[int]] = {r.email: [] for r in reviewers}
    errors: list[str] = []

    def drain(reviewer) -> None:
        try:
            barrier.wait(timeout=10)
            while True:
                response = post(reviewer, f"/api/review-queues/{sampled}/next")
                if response.status_code == 204:
                    return
                assert response.status_code == 200, response.content
                item = response.json()
                assert item["resumed"] is False, item
                given[reviewer.email].append(item["id"])
                review(reviewer, item["audit"]["audit_id"], 1, 0, "pass")
        except Exception as exc:  # reported below: an assertion in a thread would be lost
            errors.append(repr(exc))
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=drain, args=(r,)) for r in reviewers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    handed = Counter(i for items in given.values() for i in items)
    assert set(handed.values()) == {1} and set(handed) == set(
        QueueItem.objects.filter(queue_id=sampled).values_list("pk", flat=True)
    )
    assert set(QueueItem.objects.filter(queue_id=sampled).values_list("state", flat=True)) == {"done"}
    progress = client_for(manager).get(f"/api/review-queues/{sampled}").json()["progress"]
    assert (progress["waiting"], progress["claimed"], progress["done"]) == (0, 0, len(online))
    assert progress["median_review_seconds"] is not None
    events = wait_for(
        lambda: (
            [p for _, p in pusher_events(pusher, f"private-review-queue-{sampled}", "review_queue.progress")]
            if any(
                p["done"] == len(online)
                for _, p in pusher_events(pusher, f"private-review-queue-{sampled}", "review_queue.progress")
            )
            else None
        ),
        message="the queue's last progress event",
    )
    assert events[-1]["waiting"] == 0 and events[-1]["claimed"] == 0


# --- Disputes ---------------------------------------------------------------------------------------------


def test_the_agent_disputes_a_verdict_a_reviewer_accepts_it_once_and_the_dispute_rules_hold(
    audit_stack, manager, make_role, make_user
):
    crm, stt, llm, pusher, start = audit_stack
    start("qa3")
    audit = audit_ended(run_audit(manager, NO_RECORDING_NOTICE))
    assert (audit.status, audit.niveau) == ("completed", "REJET")
    fiche = FicheCache.objects.get(fiche_id=NO_RECORDING_NOTICE)
    self_role = make_role("qa-agent", audits=("r", "SELF"), fiches=("r", "SELF"))
    agent = make_user(self_role, email="agent@example.com", crm_user_id=fiche.crm_user_id)
    another_agent = make_user(self_role, email="other-agent@example.com", crm_user_id="someone-else")
    team_lead = make_user(
        make_role("qa-team-reader", audits=("r", "GROUP")), groupes=[fiche.groupe], crm_user_id="lead-1"
    )
    reviewer = make_user(
        make_role("qa-group-reviewer", audits=("rw", "GROUP")),
        email="group-reviewer@example.com",
        groupes=[fiche.groupe],
    )
    outsider = make_user(make_role("qa-outsider", audits=("rw", "GROUP")), groupes=["Nowhere"])
    position, index = RECORDING_STEP, 0
    url = f"/api/audits/{audit.pk}/steps/{position}/control-points/{index}/disputes"
    claim = {"comment": "J'annonce l'enregistrement dès le début de l'appel, à 00:12."}
    before = detail(manager, audit.pk)
    assert point_of(before, position, index)["status"] == "fail"

    opened = post(agent, url, claim)
    assert opened.status_code == 201, opened.content
    dispute = opened.json()
    assert (dispute["status"], dispute["verdict_before"], dispute["proposed_status"]) == ("open", "fail", "pass")
    second = post(agent, url, claim)
    assert second.status_code == 409 and second.json()["error"]["code"] == "dispute_open"
    assert post(another_agent, url, claim).status_code == 403  # outside their scope
    refused = post(team_lead, url, claim)  # in scope, but not their sale
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_the_agent"
    accept_url = f"/api/disputes/{dispute['id']}/accept"
    assert post(outsider, accept_url, {"comment": "ok"}).status_code == 403
    assert post(agent, accept_url, {"comment": "ok"}).status_code == 403  # an agent cannot judge their own case

    accepted = post(reviewer, accept_url, {"comment": "Annonce entendue à 00:12, le modèle l'a manquée."})
    assert accepted.status_code == 200, accepted.content
    assert (accepted.json()["status"], accepted.json()["verdict_after"]) == ("accepted", "pass")
    after = detail(manager, audit.pk)
    assert point_of(after, position, index)["status"] == "pass"
    assert after["overall_score"] > before["overall_score"]
    reviews = HumanReview.objects.filter(step_result__audit=audit)
    assert reviews.count() == 1 and reviews.get().control_point_index == index
    history = client_for(agent).get(f"/api/audits/{audit.pk}/history").json()["entries"]
    assert [e["type"] for e in history] == ["dispute", "review"]
    assert history[0]["status"] == "accepted"
    seen = client_for(agent).get(f"/api/audits/{audit.pk}/disputes").json()
    assert [(d["status"], d["resolution_comment"]) for d in seen] == [
        ("accepted", "Annonce entendue à 00:12, le modèle l'a manquée.")
    ]
    again = post(agent, url, claim)
    assert again.status_code == 409 and again.json()["error"]["code"] == "dispute_already_resolved"
    resolved = wait_for(
        lambda: pusher_events(pusher, f"private-audit-{audit.pk}", "audit.dispute_resolved"),
        message="the dispute_resolved event",
    )
    assert resolved[-1][1]["verdict_after"] == "pass"

    # A rejected dispute leaves the verdict and the score as they were; the agent reads why.
    other_url = f"/api/audits/{audit.pk}/steps/{position}/control-points/1/disputes"
    rejected_id = post(agent, other_url, {"comment": "J'ai parlé de la conservation."}).json()["id"]
    rejected = post(reviewer, f"/api/disputes/{rejected_id}/reject", {"comment": "Aucune mention de la durée."})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert detail(manager, audit.pk)["overall_score"] == after["overall_score"]
    assert HumanReview.objects.filter(step_result__audit=audit).count() == 1

    # After the window, no more disputes.
    Audit.objects.filter(pk=audit.pk).update(completed_at=timezone.now() - timedelta(days=15))
    late = post(agent, f"/api/audits/{audit.pk}/steps/1/control-points/0/disputes", claim)
    assert late.status_code == 422 and late.json()["error"]["code"] == "dispute_window_closed"
    assert Dispute.objects.filter(audit=audit).count() == 2

    metrics = client_for(reviewer).get(f"/api/disputes/metrics?audit_config_id={config_id()}").json()
    assert (metrics["disputes"], metrics["acceptance_rate"]) == (2, 0.5)
    assert client_for(outsider).get(f"/api/disputes/metrics?audit_config_id={config_id()}").json()["disputes"] == 0
