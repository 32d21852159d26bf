"""Identical pending work is not paid twice: an audit request identical to one still pending, waiting
for its transcripts or running (same fiche, same config version, same mode) returns that audit with
``reused: true`` instead of a second one — also for concurrent requests (threads against the real
database), and for batch items, which follow the running audit and end when it ends."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, date, datetime

import pytest
from django.core.management import call_command

from audits.models import Audit, AuditConfig
from audits.services import configs, finish
from audits.services import request as audit_requests
from batches import services as batches
from batches.models import Batch, BatchItem
from fiches.models import FicheCache
from tests.support import queued_tasks, run_threads

RUN = "/api/audits/run"
T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.LLM_API_KEY = "sk-test"
    settings.CRM_BASE_URL = "http://127.0.0.1:9"  # nothing listens: no test may need the CRM


@pytest.fixture
def config(db) -> AuditConfig:
    call_command("seed_audit_configs", verbosity=0)
    return AuditConfig.objects.get()


@pytest.fixture
def fiche(db) -> FicheCache:
    return FicheCache.objects.create(
        fiche_id="F-LYON", sales_date=date(2026, 2, 2), groupe="Lyon-2", details_success=True, details_fetched_at=T0
    )


@pytest.fixture
def auditor(make_role, make_user):
    return make_user(make_role("auditor", audits=("rw", "ALL")), email="auditor@example.com")


def audit_runs_queued() -> list[str]:
    return [t.args[0] for t in queued_tasks("default") if t.name == "audits.tasks.audit_run"]


# --- The API ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_identical_request_returns_the_audit_still_going(
    config, fiche, auditor, auth_client, django_capture_on_commit_callbacks
):
    client = auth_client(auditor)
    payload = {"fiche_id": "F-LYON", "audit_config_id": config.pk}
    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(RUN, payload, format="json")
        again = client.post(RUN, payload, format="json")
    assert (first.status_code, again.status_code) == (202, 202)
    audit_id = first.json()["audit_id"]
    assert first.json() == {"audit_id": audit_id, "status": "pending", "reused": False}
    assert again.json() == {"audit_id": audit_id, "status": "pending", "reused": True}

    for status in ("waiting_transcription", "running"):
        Audit.objects.filter(pk=audit_id).update(status=status)
        with django_capture_on_commit_callbacks(execute=True):
            same = client.post(RUN, payload, format="json").json()
        assert same == {"audit_id": audit_id, "status": status, "reused": True}
    assert Audit.objects.count() == 1
    assert audit_runs_queued() == [audit_id]  # one orchestrator: the reused requests sent nothing


@pytest.mark.django_db
def test_another_mode_another_version_or_an_ended_audit_makes_a_new_one(
    config, fiche, auditor, auth_client, django_capture_on_commit_callbacks
):
    client = auth_client(auditor)
    payload = {"fiche_id": "F-LYON", "audit_config_id": config.pk}
    with django_capture_on_commit_callbacks(execute=True):
        prompt_mode = client.post(RUN, payload, format="json").json()
        tools_mode = client.post(RUN, {**payload, "use_rlm": True}, format="json").json()
    assert tools_mode["reused"] is False and tools_mode["audit_id"] != prompt_mode["audit_id"]

    configs.config_update(config_id=config.pk, patch={"description": "Version 2."}, user=None)
    with django_capture_on_commit_callbacks(execute=True):
        version_2 = client.post(RUN, payload, format="json").json()
    assert version_2["reused"] is False and version_2["audit_id"] != prompt_mode["audit_id"]

    for status in ("completed", "failed"):
        Audit.objects.filter(pk=version_2["audit_id"]).update(status=status)
        with django_capture_on_commit_callbacks(execute=True):
            fresh = client.post(RUN, payload, format="json").json()
        assert fresh["reused"] is False and fresh["audit_id"] != version_2["audit_id"]
        version_2 = fresh
    assert Audit.objects.count() == 5
    assert sorted(audit_runs_queued()) == sorted(str(pk) for pk in Audit.objects.values_list("pk", flat=True))


# --- Concurrent identical requests ----------------------------------------------------------------------


def _race(n: int, **request) -> list[Audit]:
    """``n`` threads send the same request at once (a barrier), each on its own database connection."""
    barrier = threading.Barrier(n)
    results: list[Audit] = []
    lock = threading.Lock()

    def one():
        barrier.wait(timeout=10)
        audit = audit_requests.audit_request(**request)  # what the API, batches and automation call
        with lock:
            results.append(audit)

    assert not run_threads([one] * n)
    return results


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_requests_make_one_audit(config, fiche, auditor, caplog):
    caplog.set_level(logging.INFO, logger="audits.request")
    for round_no in range(3):
        tools_mode = round_no == 1
        caplog.clear()
        results = _race(8, fiche=fiche, config_id=config.pk, tools_mode=tools_mode, user=auditor)
        assert len(results) == 8 and len({str(a.pk) for a in results}) == 1, f"round {round_no}"
        assert Audit.objects.filter(tools_mode=tools_mode).exclude(status__in=["completed", "failed"]).count() == 1
        messages = [r.getMessage() for r in caplog.records if r.name == "audits.request"]
        assert sorted(messages) == ["audit_created"] + ["audit_reused"] * 7
        Audit.objects.update(status="failed")  # ended: the next round makes a new one
    assert Audit.objects.count() == 3
    assert len(audit_runs_queued()) == 3  # one orchestrator per audit


# --- Batch items follow the audit already going -------------------------------------------------------------


def make_batch(user, fiche_ids: list[str], config: AuditConfig) -> Batch:
    batch = Batch.objects.create(
        operation_type="audit",
        total=len(fiche_ids),
        options={"audit_config_id": config.pk, "tools_mode": False},
        requested_by=user,
        scope_snapshot={"kind": "ALL", "groupes": [], "crm_user_id": None},
    )
    BatchItem.objects.bulk_create(BatchItem(batch=batch, fiche_id=f) for f in fiche_ids)
    return batch


def item_of(batch: Batch) -> BatchItem:
    return BatchItem.objects.get(batch=batch)


@pytest.mark.django_db
def test_a_batch_item_follows_a_users_running_audit_and_ends_with_it(
    config, fiche, auditor, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        audit = audit_requests.audit_request(fiche=fiche, config_id=config.pk, user=auditor)
    batch = make_batch(auditor, ["F-LYON"], config)
    with django_capture_on_commit_callbacks(execute=True):
        assert batches.batch_start_items(batch_id=str(batch.pk)) == 1
    assert Audit.objects.count() == 1 and item_of(batch).ref_id == str(audit.pk)
    assert item_of(batch).status == "pending"

    with django_capture_on_commit_callbacks(execute=True):
        assert finish.audit_fail_now(audit_id=str(audit.pk), reason="the LLM is gone", phase="analysis")
    item = item_of(batch)
    assert (item.status, item.error) == ("failed", "the LLM is gone")  # at once, not at the reconciler's pass
    batch.refresh_from_db()
    assert (batch.status, batch.completed, batch.failed) == ("completed", 0, 1)


@pytest.mark.django_db
def test_two_batches_over_the_same_fiche_share_one_audit_and_both_end_with_it(
    config, fiche, auditor, django_capture_on_commit_callbacks
):
    first, second = make_batch(auditor, ["F-LYON"], config), make_batch(auditor, ["F-LYON"], config)
    with django_capture_on_commit_callbacks(execute=True):
        batches.batch_start_items(batch_id=str(first.pk))
        batches.batch_start_items(batch_id=str(second.pk))
    audit = Audit.objects.get()
    assert str(audit.batch_id) == str(first.pk)  # the batch that made it
    assert item_of(first).ref_id == item_of(second).ref_id == str(audit.pk)

    with django_capture_on_commit_callbacks(execute=True):
        finish.audit_fail_now(audit_id=str(audit.pk), reason="timed out (no progress)", phase="analysis")
    for batch in (first, second):
        batch.refresh_from_db()
        assert (batch.status, batch.failed) == ("completed", 1)
        assert item_of(batch).error == "timed out (no progress)"


@pytest.mark.django_db
def test_an_item_that_followed_an_audit_whose_end_report_was_lost_ends_at_the_reconcilers_pass(
    config, fiche, auditor, django_capture_on_commit_callbacks
):
    first, second = make_batch(auditor, ["F-LYON"], config), make_batch(auditor, ["F-LYON"], config)
    with django_capture_on_commit_callbacks(execute=True):
        batches.batch_start_items(batch_id=str(first.pk))
        batches.batch_start_items(batch_id=str(second.pk))
    Audit.objects.update(status="completed")  # ended without telling anyone (a lost on-commit callback)
    actions = batches.batch_reconcile()
    assert sorted(actions["reported"]) == sorted(f"{b.pk}:F-LYON" for b in (first, second))
    for batch in (first, second):
        batch.refresh_from_db()
        assert (batch.status, batch.completed) == ("completed", 1)
