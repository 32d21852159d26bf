"""Batch items start exactly once: a reconciler pass that re-drives a batch while its first pass is
still starting items one by one (each a slow CRM details fetch, through the CRM simulator with
latency) never starts an item the other pass has claimed, so each fiche gets one audit; a claim
outlives a killed worker only until its lease; an infrastructure error gives the claim back."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from audits.models import Audit, AuditConfig
from batches import services as batches
from batches.models import Batch, BatchItem
from fiches.models import FicheCache
from fiches.simulator.data import sales_for_date
from fiches.simulator.server import CrmSimulator, SimulatorConfig
from tests.support import run_threads

DAY = date(2026, 2, 2)  # a Monday: 6 ± 30 % sales in the simulator (seed 42)
T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)
LATENCY_MS = 250


@pytest.fixture(scope="module")
def slow_crm():
    with CrmSimulator(SimulatorConfig(seed=42, fiches_per_day=6, latency_ms=LATENCY_MS)) as sim:
        yield sim


@pytest.fixture(autouse=True)
def _settings(settings, slow_crm):
    settings.CRM_BASE_URL = slow_crm.url
    settings.LLM_API_KEY = "sk-test"
    slow_crm.clear_requests()


@pytest.fixture
def config(db) -> AuditConfig:
    call_command("seed_audit_configs", verbosity=0)
    return AuditConfig.objects.get()


@pytest.fixture
def auditor(make_role, make_user):
    return make_user(make_role("auditor", audits=("rw", "ALL")), email="auditor@example.com")


def crm_fiche_ids(n: int) -> list[str]:
    ids = [s["fiche_id"] for s in sales_for_date(DAY, seed=42, fiches_per_day=6, revision=0, include_recordings=False)]
    assert len(ids) >= n
    return ids[:n]


def make_batch(user, fiche_ids: list[str], config: AuditConfig) -> Batch:
    """An audit batch as ``POST /api/audits/batch`` makes it (its first pass is run by the test)."""
    batch = Batch.objects.create(
        operation_type="audit",
        total=len(fiche_ids),
        options={"audit_config_id": config.pk, "use_rlm": False},
        requested_by=user,
        scope_snapshot={"kind": "ALL", "groupes": [], "crm_user_id": None},
    )
    BatchItem.objects.bulk_create(BatchItem(batch=batch, fiche_id=f) for f in fiche_ids)
    return batch


@pytest.mark.django_db(transaction=True)
def test_a_reconciler_pass_beside_a_slow_first_pass_starts_each_fiche_once(config, auditor, slow_crm, caplog):
    caplog.set_level(logging.INFO, logger="audits.request")
    fiche_ids = crm_fiche_ids(4)  # none cached: starting each one fetches its details (LATENCY_MS)
    batch = make_batch(auditor, fiche_ids, config)
    batch_id = str(batch.pk)
    barrier = threading.Barrier(2)
    restarted: list[list[str]] = []

    def first_pass():
        barrier.wait(timeout=10)
        batches.batch_start_items(batch_id=batch_id)

    def reconciler_pass():  # what reconcile_batches does, its batch_start run here
        barrier.wait(timeout=10)
        actions = batches.batch_reconcile()
        restarted.append(actions["restarted"])
        for batch_id_ in actions["restarted"]:
            batches.batch_start_items(batch_id=batch_id_)

    assert not run_threads([first_pass, reconciler_pass], timeout=120)

    assert restarted == [[batch_id]]  # the reconciler did re-drive the batch while its first pass ran
    per_fiche = {f: list(Audit.objects.filter(fiche__fiche_id=f).values_list("pk", flat=True)) for f in fiche_ids}
    assert {f: len(a) for f, a in per_fiche.items()} == dict.fromkeys(fiche_ids, 1)
    items = {i.fiche_id: i for i in BatchItem.objects.filter(batch=batch)}
    assert {f: items[f].ref_id for f in fiche_ids} == {f: str(per_fiche[f][0]) for f in fiche_ids}
    assert set(Audit.objects.values_list("batch_id", flat=True)) == {batch.pk}
    # Each item was started once: no pass reached an audit request the other had already made.
    created = [r for r in caplog.records if r.getMessage() == "audit_created"]
    reused = [r for r in caplog.records if r.getMessage() == "audit_reused"]
    assert (len(created), len(reused)) == (4, 0)
    details = [r["path"] for r in slow_crm.requests() if "/by-id/" in r["path"]]
    assert sorted(p.rsplit("/", 1)[1] for p in details) == sorted(fiche_ids)  # one CRM fetch per fiche


@pytest.fixture
def cached_fiche(db) -> FicheCache:
    return FicheCache.objects.create(
        fiche_id="F-LYON", sales_date=DAY, groupe="Lyon-2", details_success=True, details_fetched_at=T0
    )


@pytest.mark.django_db
def test_a_fresh_claim_is_left_to_its_pass_and_a_stale_one_is_taken_over(
    config, auditor, cached_fiche, settings, django_capture_on_commit_callbacks
):
    settings.BATCH_ITEM_CLAIM_LEASE_SECONDS = 300
    batch = make_batch(auditor, ["F-LYON"], config)
    BatchItem.objects.filter(batch=batch).update(ref_id="claim:a-killed-worker", updated_at=timezone.now())
    assert batches.batch_reconcile()["restarted"] == []
    assert batches.batch_start_items(batch_id=str(batch.pk)) == 0
    assert not Audit.objects.exists()

    BatchItem.objects.filter(batch=batch).update(updated_at=timezone.now() - timedelta(seconds=301))
    assert batches.batch_reconcile()["restarted"] == [str(batch.pk)]
    with django_capture_on_commit_callbacks(execute=True):
        assert batches.batch_start_items(batch_id=str(batch.pk)) == 1
    audit = Audit.objects.get()
    assert BatchItem.objects.get(batch=batch).ref_id == str(audit.pk)
    assert batches.batch_reconcile()["restarted"] == []


@pytest.mark.django_db
def test_an_infrastructure_error_gives_the_claim_back(config, auditor, settings, django_capture_on_commit_callbacks):
    batch = make_batch(auditor, ["F-UNCACHED"], config)
    redis_url = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # the fiche fetch's lock cannot be taken
    with pytest.raises(Exception, match="(?i)connect"):
        batches.batch_start_items(batch_id=str(batch.pk))
    item = BatchItem.objects.get(batch=batch)
    assert (item.status, item.ref_id) == ("pending", None)  # startable again at once (the task's retry)
    assert batches.batch_reconcile()["restarted"] == [str(batch.pk)]
    settings.REDIS_URL = redis_url
    assert batches.batch_start_items(batch_id=str(batch.pk)) == 0  # the CRM has no such fiche: the item fails
    item.refresh_from_db()
    assert (item.status, item.ref_id) == ("failed", None)
