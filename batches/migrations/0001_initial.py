"""``Batch`` and ``BatchItem`` move here from ``transcriptions`` without touching their tables.

The tables ``batches`` and ``batch_items`` (made by ``transcriptions.0001_initial``) and their rows stay
as they are: this migration only declares the models in this app's state (``database_operations`` is
empty). ``transcriptions.0004_batches_moved_out`` removes them from that app's state (and moves their
content types), after ``TranscriptionRun.batch`` and ``audits.0005_batch_moved_to_batches``'s
``Audit.batch`` point here.
"""

import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("transcriptions", "0003_words_fast_json"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Batch",
                    fields=[
                        ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                        (
                            "operation_type",
                            models.CharField(
                                choices=[("transcription", "Transcription"), ("audit", "Audit")], max_length=16
                            ),
                        ),
                        (
                            "status",
                            models.CharField(
                                choices=[("running", "Running"), ("completed", "Completed")],
                                default="running",
                                max_length=16,
                            ),
                        ),
                        ("total", models.PositiveIntegerField(default=0)),
                        ("completed", models.PositiveIntegerField(default=0)),
                        ("failed", models.PositiveIntegerField(default=0)),
                        (
                            "options",
                            models.JSONField(
                                default=dict, help_text="What to do for each item (priority, audit config...)."
                            ),
                        ),
                        (
                            "scope_snapshot",
                            models.JSONField(default=dict, help_text="The requester's scope when the batch was made."),
                        ),
                        ("started_at", models.DateTimeField(auto_now_add=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        ("last_progress_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "requested_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "verbose_name_plural": "batches",
                        "db_table": "batches",
                        "ordering": ["-started_at"],
                    },
                ),
                migrations.CreateModel(
                    name="BatchItem",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("fiche_id", models.CharField(max_length=64)),
                        (
                            "status",
                            models.CharField(
                                choices=[("pending", "Pending"), ("completed", "Completed"), ("failed", "Failed")],
                                default="pending",
                                max_length=16,
                            ),
                        ),
                        (
                            "ref_id",
                            models.CharField(
                                blank=True, help_text="The run or audit it started.", max_length=64, null=True
                            ),
                        ),
                        ("error", models.TextField(blank=True, null=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "batch",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE, related_name="items", to="batches.batch"
                            ),
                        ),
                    ],
                    options={
                        "db_table": "batch_items",
                        "ordering": ["batch_id", "id"],
                        "constraints": [models.UniqueConstraint(fields=("batch", "fiche_id"), name="batch_item_fiche")],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
