"""Changing a scorecard safely, with real workers and the simulators: a draft version evaluated against what
reviewers decided (the simulator misses one point under the draft's wording: that point's kappa drops against
the active version, the changed verdicts are listed, and the evaluation's audits count nowhere), then a
re-audit of a week with a new version, beside the old audits, exactly once per fiche through duplicate
deliveries and a killed worker, with a diff listing exactly the points that changed."""

from __future__ import annotations

from datetime import date

import pytest

from audits.models import Audit, Evaluation
from audits.selectors import cohen_kappa
from batches.models import Batch
from config.celery import app
from review_queues.models import QueueItem
from review_queues.services import enter_audit
from tests.workflow.conftest import wait_for
from tests.workflow.test_audits import (
    COMPLIANT,
    COMPLIANT_2,
    NO_RECORDING_NOTICE,
    audit_ended,
    client_for,
    config_id,
    detail,
    pusher_events,
    run_audit,
)
from tests.workflow.test_qa_loop import WRONG_POINT, create_queue, point_of, post, review
from tests.workflow.test_worker_loss import Beat, fiches_of, io_worker, kill, layout

pytestmark = [pytest.mark.workflow, pytest.mark.django_db(transaction=True)]

# The new wording of « copie de l'enregistrement sur demande » (step 4, point 2); the simulator is told to
# get points with these words wrong (``wrong_point``), so only a version with this wording misses it.
NEW_WORDING = "L'agent indique-t-il qu'une copie de l'enregistrement peut être obtenue sur simple demande écrite ?"
MISSED_BY_THE_SIMULATOR = "demande écrite"


@pytest.fixture
def manager(make_role, make_user):
    role = make_role("sc-manager", audits=("rw", "ALL"), fiches=("r", "ALL"), audit_configs=("rw", "ALL"))
    return make_user(role, email="sc-manager@example.com")


def reworded_steps(user) -> list[dict]:
    steps = client_for(user).get(f"/api/audit-configs/{config_id()}").json()["steps"]
    position, index = WRONG_POINT
    steps[position - 1]["control_points"][index]["question"] = NEW_WORDING
    for step in steps:
        step.pop("position", None)
        for point in step["control_points"]:
            point.pop("index", None)
    return steps


def verdicts_of(user, audit_id) -> dict[tuple[int, int], str]:
    data = detail(user, audit_id)
    return {(s["position"], p["index"]): p["status"] for s in data["steps"] for p in s["control_points"]}


def test_a_draft_that_misses_a_point_shows_its_kappa_drop_and_its_audits_count_nowhere(audit_stack, manager):
    crm, stt, llm, pusher, start = audit_stack
    start("sc1")
    cid = config_id()
    # What reviewers decided on three sales: they agree with the active version on the point.
    truth = {}
    for fiche in (COMPLIANT, COMPLIANT_2, NO_RECORDING_NOTICE):
        audit = audit_ended(run_audit(manager, fiche))
        truth[fiche] = point_of(detail(manager, audit.pk), *WRONG_POINT)["status"]
        review(manager, audit.pk, *WRONG_POINT, truth[fiche])
    assert truth == {COMPLIANT: "pass", COMPLIANT_2: "pass", NO_RECORDING_NOTICE: "fail"}
    queue_id = create_queue(manager, name="Tout", sample_percent=100, seed=1)
    production = client_for(manager).get("/api/audits").json()["count"]
    calibration = client_for(manager).get(f"/api/audits/calibration?audit_config_id={cid}").json()["reviewed"]

    # A draft with the new wording: the active version stays, and runs by default.
    patched = client_for(manager).patch(
        f"/api/audit-configs/{cid}", {"steps": reworded_steps(manager), "draft": True}, format="json"
    )
    assert patched.status_code == 200 and patched.json()["version"] == 1
    versions = client_for(manager).get(f"/api/audit-configs/{cid}/versions").json()
    assert [(v["version"], v["is_draft"], v["is_active"]) for v in versions] == [(2, True, False), (1, False, True)]
    llm.config.wrong_point = MISSED_BY_THE_SIMULATOR

    started = post(manager, f"/api/audit-configs/{cid}/evaluations", {"version": 2})
    assert started.status_code == 202, started.content
    assert started.json()["fiches"] == 3
    evaluation_id = started.json()["evaluation_id"]
    wait_for(
        lambda: Evaluation.objects.get(pk=evaluation_id).status == "completed",
        timeout=180,
        interval=0.5,
        message="the evaluation",
    )
    data = client_for(manager).get(f"/api/evaluations/{evaluation_id}").json()
    assert (data["version"], data["baseline_version"], data["audits"]) == (2, 1, {"completed": 6})
    result = data["result"]
    point = next(p for p in result["control_points"] if (p["step_position"], p["control_point_index"]) == WRONG_POINT)
    truths = [truth[f] for f in (COMPLIANT, COMPLIANT_2, NO_RECORDING_NOTICE)]
    assert point["baseline"] == {"reviewed": 3, "agreement": 1.0, "kappa": cohen_kappa([(t, t) for t in truths])}
    missed = cohen_kappa([("fail", t) for t in truths])
    assert point["candidate"] == {"reviewed": 3, "agreement": round(1 / 3, 4), "kappa": missed}
    assert point["kappa_delta"] == round(missed - 1.0, 4) and point["kappa_delta"] < 0
    assert point["question"] == NEW_WORDING
    changed = {(c["fiche_id"], c["step_position"], c["control_point_index"]): c for c in result["changed"]}
    assert set(changed) == {(COMPLIANT, *WRONG_POINT), (COMPLIANT_2, *WRONG_POINT)}
    for change in changed.values():
        assert change["reviewer"] == "pass"
        assert change["baseline"]["status"] == "pass" and change["baseline"]["quotes"]
        assert change["candidate"] == {"status": "fail", "quotes": []}
    assert result["spent"]["candidate"]["tokens"] > 0 and result["spent"]["baseline"]["audits"] == 3
    completed = pusher_events(pusher, f"private-user-{manager.pk}", "audit.evaluation_completed")
    assert [p["changed_points"] for _, p in completed] == [2]

    # Its audits are in no compliance figure: listings, calibration, queues, trust.
    evaluation_audits = Audit.objects.filter(evaluation_id=evaluation_id)
    assert evaluation_audits.count() == 6 and set(evaluation_audits.values_list("purpose", flat=True)) == {"evaluation"}
    assert client_for(manager).get("/api/audits").json()["count"] == production
    listed = client_for(manager).get("/api/audits?purpose=evaluation").json()
    assert listed["count"] == 6 and not any(a["counts"] for a in listed["results"])
    assert client_for(manager).get(f"/api/audits/calibration?audit_config_id={cid}").json()["reviewed"] == calibration
    assert all(enter_audit(audit_id=str(a.pk)) == 0 for a in evaluation_audits)
    assert not QueueItem.objects.filter(queue_id=queue_id, audit__in=evaluation_audits).exists()
    dispute = post(manager, f"/api/audits/{evaluation_audits.first().pk}/steps/1/control-points/0/disputes", {})
    assert dispute.status_code in (400, 403, 409)

    # Activating records who and the evaluation it was based on.
    activated = post(manager, f"/api/audit-configs/{cid}/versions/2/activate", {"evaluation_id": evaluation_id})
    assert activated.status_code == 200, activated.content
    assert (activated.json()["is_active"], activated.json()["is_draft"]) == (True, False)
    assert activated.json()["activated_from_evaluation"] == evaluation_id
    assert activated.json()["activated_by"] == manager.email


def test_a_reaudit_of_a_week_adds_one_audit_per_fiche_once_keeps_the_old_ones_and_diffs_exactly_the_changes(
    audit_stack, manager
):
    crm, stt, llm, pusher, _ = audit_stack
    orchestration, env = layout(crm, stt, llm, pusher, "llm", "llm")
    first = io_worker(env, "sc-llm-a", "llm")
    workers = [orchestration, first]
    try:
        cid = config_id()
        fiche_ids = fiches_of(date(2026, 2, 4), 4) + fiches_of(date(2026, 2, 5), 2)
        response = post(manager, "/api/audits/batch", {"fiche_ids": fiche_ids, "audit_config_id": cid})
        assert response.status_code == 202, response.content
        wait_for(
            lambda: Batch.objects.get(pk=response.json()["batch_id"]).status == "completed",
            timeout=240,
            interval=0.5,
            message="the first audits",
        )
        old = {a.fiche.fiche_id: a for a in Audit.objects.filter(status="completed").select_related("fiche")}
        assert set(old) == set(fiche_ids)
        kept = {f: (a.pk, a.niveau, a.score_percentage) for f, a in old.items()}

        # Version 2 rewords one point, which the simulator then misses.
        patched = client_for(manager).patch(
            f"/api/audit-configs/{cid}", {"steps": reworded_steps(manager)}, format="json"
        )
        assert patched.json()["version"] == 2
        llm.config.wrong_point = MISSED_BY_THE_SIMULATOR
        llm.config.latency_ms = 3000  # calls in flight for seconds: the kill lands mid-call
        started = post(
            manager,
            "/api/audits/reaudit",
            {"audit_config_id": cid, "date_from": "2026-02-02", "date_to": "2026-02-08"},
        )
        assert started.status_code == 202, started.content
        assert started.json()["fiches"] == 6
        batch_id = started.json()["batch_id"]
        for _ in range(3):  # duplicate deliveries of the batch's start
            app.send_task("batches.tasks.batch_start", args=[batch_id])
        wait_for(lambda: llm.current_in_flight() >= 4, timeout=120, interval=0.05, message="LLM calls in flight")
        kill(first)
        llm.config.latency_ms = 200
        workers.append(io_worker(env, "sc-llm-b", "llm"))
        with Beat("audits.tasks.reconcile_audits", "batches.tasks.reconcile_batches"):
            batch = wait_for(
                lambda: (b := Batch.objects.get(pk=batch_id)).status == "completed" and b,
                timeout=240,
                interval=0.5,
                message="the re-audit",
            )
        assert (batch.total, batch.completed, batch.failed) == (6, 6, 0)
    finally:
        for worker in workers:
            worker.stop()

    new = list(Audit.objects.filter(batch_id=batch_id).select_related("fiche", "config_version"))
    assert sorted(a.fiche.fiche_id for a in new) == sorted(fiche_ids)  # one new audit a fiche, exactly once
    assert Audit.objects.count() == 12
    for audit in new:
        assert (audit.status, audit.config_version.version) == ("completed", 2)
        assert audit.predecessor_id == kept[audit.fiche.fiche_id][0]
        assert len(pusher_events(pusher, f"private-audit-{audit.pk}", "audit.completed")) == 1
    for pk, niveau, score in kept.values():  # the old verdicts stay as they were
        again = Audit.objects.get(pk=pk)
        assert (again.status, again.niveau, again.score_percentage, again.config_version.version) == (
            "completed",
            niveau,
            score,
            1,
        )

    moved = 0
    for audit in new:
        diff = client_for(manager).get(f"/api/audits/{audit.pk}/diff").json()
        before, after = verdicts_of(manager, diff["predecessor_id"]), verdicts_of(manager, audit.pk)
        expected = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        listed = {(c["step_position"], c["control_point_index"]) for c in diff["changed_points"]}
        assert listed == expected, (audit.fiche.fiche_id, listed, expected)
        assert (before[WRONG_POINT] == "pass") == (WRONG_POINT in listed)
        moved += WRONG_POINT in listed
        assert diff["niveau"]["before"] == kept[audit.fiche.fiche_id][1]
    assert moved >= 1
    summary = client_for(manager).get(f"/api/audits/reaudit/{batch_id}").json()
    assert (summary["fiches"], summary["completed"]) == (6, 6)
    top = summary["points_moved"][0]
    assert ((top["step_position"], top["control_point_index"]), top["fiches"]) == (WRONG_POINT, moved)

    # The audit that counts: the latest of the active version, unless a reviewer pinned another.
    counting = client_for(manager).get("/api/audits?counts=true&limit=50").json()["results"]
    assert {a["audit_id"] for a in counting} == {str(a.pk) for a in new}
    old_one = kept[fiche_ids[0]][0]
    assert post(manager, f"/api/audits/{old_one}/pin").json()["counts"] is True
    listed = {a["audit_id"]: a for a in client_for(manager).get("/api/audits?limit=50").json()["results"]}
    assert listed[str(old_one)]["counts"] and listed[str(old_one)]["pinned"]
    replaced = next(a for a in new if a.fiche.fiche_id == fiche_ids[0])
    assert listed[str(replaced.pk)]["counts"] is False
