"""``Batch`` and ``BatchItem`` leave this app for ``batches`` (``batches.0001_initial``) with their tables
and rows untouched: ``TranscriptionRun.batch`` points at ``batches.Batch``, then the two models leave this
app's state. State only: the tables, columns and constraints stay as they are. After
``audits.0005_batch_moved_to_batches``: no model may still point at ``transcriptions.Batch`` when it
leaves the state.

The two models' content types are relabelled (``transcriptions`` → ``batches``, and back when reversed),
so their permissions and admin log entries follow them. A content type that ``post_migrate`` made for
the other label while only part of the move was applied (e.g. after ``migrate transcriptions 0003``) is
a by-product without history: it is deleted before the relabel, so one content type per model remains.
"""

import django.db.models.deletion
from django.db import migrations, models

MODELS = ("batch", "batchitem")


def _relabel(apps, old: str, new: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MODELS:
        source = ContentType.objects.filter(app_label=old, model=model).first()
        if source is None:
            continue
        ContentType.objects.filter(app_label=new, model=model).delete()
        source.app_label = new
        source.save(update_fields=["app_label"])


def content_types_to_batches(apps, schema_editor):
    _relabel(apps, "transcriptions", "batches")


def content_types_to_transcriptions(apps, schema_editor):
    _relabel(apps, "batches", "transcriptions")


class Migration(migrations.Migration):
    dependencies = [
        ("transcriptions", "0003_words_fast_json"),
        ("batches", "0001_initial"),
        ("audits", "0005_batch_moved_to_batches"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),  # permissions go with a deleted content type
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="transcriptionrun",
                    name="batch",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="runs",
                        to="batches.batch",
                    ),
                ),
                migrations.DeleteModel(name="BatchItem"),
                migrations.DeleteModel(name="Batch"),
            ],
            database_operations=[],
        ),
        migrations.RunPython(content_types_to_batches, content_types_to_transcriptions),
    ]
