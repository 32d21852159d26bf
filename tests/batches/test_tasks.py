"""The batches app on its own: its reconciler on beat (no longer inside the transcription reconciler),
who reads a batch (its requester, or scope ALL on the permission its operation registered), and its
place among the apps (it imports neither transcriptions nor audits: they register with it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django_celery_beat.models import PeriodicTask

from batches import services as batches
from batches.models import Batch, BatchItem
from batches.tasks import reconcile_batches
from core.exceptions import NotFoundError, PermissionDeniedError
from tests.support import queued_tasks
from transcriptions.tasks import reconcile_transcription_runs

ROOT = Path(__file__).resolve().parents[2]


def make_batch(user, operation_type: str = "transcription", fiche_ids: tuple[str, ...] = ("F-1",)) -> Batch:
    batch = Batch.objects.create(operation_type=operation_type, total=len(fiche_ids), requested_by=user)
    BatchItem.objects.bulk_create(BatchItem(batch=batch, fiche_id=f) for f in fiche_ids)
    return batch


@pytest.mark.django_db
def test_the_batch_reconciler_is_on_beat_every_minute_and_names_real_tasks():
    task = PeriodicTask.objects.select_related("interval").get(task="batches.tasks.reconcile_batches")
    assert (task.interval.every, task.interval.period, task.enabled) == (1, "minutes", True)
    from config.celery import app

    app.loader.import_default_modules()
    assert {"batches.tasks.reconcile_batches", "batches.tasks.batch_start"} <= set(app.tasks)
    assert "transcriptions.tasks.batch_start" not in app.tasks


@pytest.mark.django_db
def test_the_batch_reconciler_restarts_a_batch_never_started_and_the_transcription_one_leaves_it(
    make_user, django_capture_on_commit_callbacks
):
    batch = make_batch(make_user(), fiche_ids=("F-1", "F-2"))  # its batch_start never reached a worker

    with django_capture_on_commit_callbacks(execute=True):
        runs_only = reconcile_transcription_runs()
    assert not [key for key in runs_only if key.startswith("batch")]
    assert queued_tasks("default") == []

    with django_capture_on_commit_callbacks(execute=True):
        actions = reconcile_batches()
    assert actions == {"reported": [], "restarted": [str(batch.pk)], "timed_out": []}
    assert [(t.name, t.args) for t in queued_tasks("default")] == [("batches.tasks.batch_start", [str(batch.pk)])]


@pytest.mark.django_db
def test_a_batch_is_read_by_its_requester_or_by_scope_all_on_its_operations_permission(make_role, make_user):
    owner = make_user(make_role("owner", transcriptions=("rw", "SELF")))
    transcriptions_all = make_user(make_role("tx-all", transcriptions=("r", "ALL")))
    audits_all = make_user(make_role("aud-all", audits=("r", "ALL")))
    transcription_batch = make_batch(owner)
    audit_batch = make_batch(owner, operation_type="audit")

    shown = batches.batch_for_user(owner, str(transcription_batch.pk))
    assert (shown["batch_id"], shown["operation_type"], shown["total"], shown["status"]) == (
        str(transcription_batch.pk),
        "transcription",
        1,
        "running",
    )
    assert batches.batch_for_user(transcriptions_all, transcription_batch.pk)["completed"] == 0
    assert batches.batch_for_user(audits_all, audit_batch.pk)["operation_type"] == "audit"
    for user, batch in ((audits_all, transcription_batch), (transcriptions_all, audit_batch)):
        with pytest.raises(PermissionDeniedError):
            batches.batch_for_user(user, batch.pk)
    with pytest.raises(NotFoundError):
        batches.batch_for_user(owner, "00000000-0000-0000-0000-000000000000")


def _imported_packages(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        if "migrations" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.partition(".")[0])
    return found


def test_batches_imports_neither_transcriptions_nor_audits_which_register_with_it():
    imported = _imported_packages("batches")
    assert {"core", "fiches", "realtime"} <= imported
    assert not imported & {"transcriptions", "audits", "automation", "chat"}
    assert "batches" in _imported_packages("transcriptions")
