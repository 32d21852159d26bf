"""``Audit.batch`` points at ``batches.Batch``: the model moved from ``transcriptions`` to the ``batches``
app with its table unchanged, so this changes the migration state only (the column and its foreign key
constraint on ``batches`` stay as they are)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audits", "0004_trust_gate"),
        ("batches", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="audit",
                    name="batch",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="audits",
                        to="batches.batch",
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
