"""``Batch`` and ``BatchItem`` moved from ``transcriptions`` to ``batches`` without touching their tables.

On a database migrated to the state before the move (``transcriptions`` 0003, ``audits`` 0004, no
``batches``), rows made through that state's models — a batch with its items, a transcription run and an
audit pointing at it — are intact after migrating forward and reachable through the new models (and both
foreign keys); migrating back leaves them intact again, under the old models."""

from __future__ import annotations

from datetime import date

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

# The last migrations before the move; batches had no migration yet.
BEFORE = [("transcriptions", "0003_words_fast_json"), ("audits", "0004_trust_gate"), ("batches", None)]
ITEMS = [("F-1", "completed", "11111111-1111-1111-1111-111111111111", None), ("F-2", "failed", None, "boom")]


def migrate(targets: list[tuple[str, str | None]] | None = None):
    """Migrate to ``targets`` (every app's latest when ``None``); the apps of that state."""
    executor = MigrationExecutor(connection)
    targets = targets or executor.loader.graph.leaf_nodes()
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state([t for t in targets if t[1] is not None]).apps


def make_rows(apps) -> dict[str, object]:
    """A batch with items, a run and an audit pointing at it, through the pre-move state's models."""
    user = apps.get_model("accounts", "User").objects.create(email="mover@example.com", password="!")
    fiche = apps.get_model("fiches", "FicheCache").objects.create(fiche_id="F-1", sales_date=date(2026, 2, 2))
    Batch = apps.get_model("transcriptions", "Batch")
    BatchItem = apps.get_model("transcriptions", "BatchItem")
    batch = Batch.objects.create(
        operation_type="audit",
        total=2,
        completed=1,
        failed=1,
        options={"audit_config_id": 1, "use_rlm": False},
        requested_by=user,
        scope_snapshot={"kind": "ALL", "groupes": [], "crm_user_id": None},
    )
    for fiche_id, status, ref_id, error in ITEMS:
        BatchItem.objects.create(batch=batch, fiche_id=fiche_id, status=status, ref_id=ref_id, error=error)
    run = apps.get_model("transcriptions", "TranscriptionRun").objects.create(fiche=fiche, batch=batch)
    config = apps.get_model("audits", "AuditConfig").objects.create(name="Config")
    version = apps.get_model("audits", "AuditConfigVersion").objects.create(
        config=config, version=1, name="Config", thresholds={"excellent": 90, "bon": 75, "acceptable": 60}
    )
    audit = apps.get_model("audits", "Audit").objects.create(
        fiche=fiche, config=config, config_version=version, batch=batch
    )
    ContentType = apps.get_model("contenttypes", "ContentType")
    content_type, _ = ContentType.objects.get_or_create(app_label="transcriptions", model="batch")
    # What post_migrate makes for the new label when only part of the move is applied: no history.
    by_product, _ = ContentType.objects.get_or_create(app_label="batches", model="batch")
    apps.get_model("auth", "Permission").objects.get_or_create(
        content_type=by_product, codename="view_batch", defaults={"name": "Can view batch"}
    )
    return {
        "batch": batch.pk,
        "started_at": batch.started_at,
        "user": user.pk,
        "run": run.pk,
        "audit": audit.pk,
        "content_type": content_type.pk,
        "by_product": by_product.pk,
    }


def old_rows(apps, rows: dict[str, object]) -> dict[str, object]:
    Batch = apps.get_model("transcriptions", "Batch")
    batch = Batch.objects.get(pk=rows["batch"])
    return {
        "batch": (batch.operation_type, batch.total, batch.completed, batch.failed, batch.requested_by_id),
        "items": sorted(batch.items.values_list("fiche_id", "status", "ref_id", "error")),
        "runs": list(batch.runs.values_list("pk", flat=True)),
        "audits": list(batch.audits.values_list("pk", flat=True)),
    }


@pytest.mark.django_db(transaction=True)
def test_the_move_keeps_every_row_and_both_foreign_keys_forward_and_back():
    from django.contrib.contenttypes.models import ContentType
    from django_celery_beat.models import PeriodicTask

    from audits.models import Audit
    from batches.models import Batch, BatchItem
    from transcriptions.models import TranscriptionRun

    try:
        old_apps = migrate(BEFORE)
        assert not PeriodicTask.objects.filter(task="batches.tasks.reconcile_batches").exists()
        rows = make_rows(old_apps)
        before = old_rows(old_apps, rows)
        assert before["runs"] == [rows["run"]] and before["audits"] == [rows["audit"]]

        migrate()  # forward: batches 0001-0002, audits 0005, transcriptions 0004 (and whatever follows)

        batch = Batch.objects.get(pk=rows["batch"])
        assert (batch.operation_type, batch.total, batch.completed, batch.failed, batch.requested_by_id) == (
            "audit",
            2,
            1,
            1,
            rows["user"],
        )
        assert batch.options == {"audit_config_id": 1, "use_rlm": False} and batch.started_at == rows["started_at"]
        assert batch.scope_snapshot == {"kind": "ALL", "groupes": [], "crm_user_id": None}
        assert sorted(BatchItem.objects.filter(batch=batch).values_list("fiche_id", "status", "ref_id", "error")) == (
            sorted(ITEMS)
        )
        # Both foreign keys reach the moved model, each way.
        run = TranscriptionRun.objects.select_related("batch").get(pk=rows["run"])
        assert isinstance(run.batch, Batch) and run.batch.pk == batch.pk
        assert list(batch.runs.values_list("pk", flat=True)) == [rows["run"]]
        assert list(batch.audits.values_list("pk", flat=True)) == [rows["audit"]]
        assert list(Audit.objects.filter(batch__operation_type="audit").values_list("pk", flat=True)) == [rows["audit"]]
        # The content type (and so its permissions and admin log entries) followed the model; the
        # by-product without history is gone: one content type per model.
        moved = ContentType.objects.get(app_label="batches", model="batch")
        assert moved.pk == rows["content_type"] and not ContentType.objects.filter(pk=rows["by_product"]).exists()
        assert not ContentType.objects.filter(app_label="transcriptions", model__in=("batch", "batchitem")).exists()
        # The batch reconciler is on beat, every minute.
        task = PeriodicTask.objects.select_related("interval").get(task="batches.tasks.reconcile_batches")
        assert (task.interval.every, task.interval.period, task.enabled) == (1, "minutes", True)

        old_apps = migrate(BEFORE)  # back: state only, the rows stay
        assert old_rows(old_apps, rows) == before
        back = ContentType.objects.get(pk=rows["content_type"])
        assert (back.app_label, back.model) == ("transcriptions", "batch")
        assert not PeriodicTask.objects.filter(task="batches.tasks.reconcile_batches").exists()
    finally:
        migrate()  # the next tests find the database at the latest state
    assert Batch.objects.filter(pk=rows["batch"]).exists()


def test_the_move_left_the_tables_where_they_were():
    from audits.models import Audit
    from batches.models import Batch, BatchItem
    from transcriptions.models import TranscriptionRun

    assert (Batch._meta.db_table, BatchItem._meta.db_table) == ("batches", "batch_items")
    assert TranscriptionRun._meta.get_field("batch").related_model is Batch
    assert Audit._meta.get_field("batch").related_model is Batch
