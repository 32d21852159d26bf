"""Claims with heartbeat leases (a token per claim: who holds a step or a rerun now; reruns get a
claim heartbeat of their own), the audit's lifecycle columns from ``core.runs.TrackedRun`` (help texts
only), and ``use_rlm`` named ``tools_mode`` in code (the column keeps its name: no data moves)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audits", "0005_batch_moved_to_batches"),
    ]

    operations = [
        migrations.RenameField(model_name="audit", old_name="use_rlm", new_name="tools_mode"),
        migrations.AlterField(
            model_name="audit",
            name="tools_mode",
            field=models.BooleanField(
                db_column="use_rlm",
                default=False,
                help_text="Tools mode (the API's use_rlm): the LLM searches the transcript.",
            ),
        ),
        migrations.RenameField(model_name="rerunevent", old_name="use_rlm", new_name="tools_mode"),
        migrations.AlterField(
            model_name="rerunevent",
            name="tools_mode",
            field=models.BooleanField(db_column="use_rlm", default=False, help_text="Tools mode (the API's use_rlm)."),
        ),
        migrations.AddField(
            model_name="auditstepresult",
            name="claim_token",
            field=models.CharField(blank=True, help_text="Who holds the step now.", max_length=32, null=True),
        ),
        migrations.AlterField(
            model_name="auditstepresult",
            name="claimed_at",
            field=models.DateTimeField(
                blank=True, help_text="The claim's heartbeat: renewed while a worker holds the step.", null=True
            ),
        ),
        migrations.AddField(
            model_name="rerunevent",
            name="claim_token",
            field=models.CharField(blank=True, help_text="Who runs the rerun now.", max_length=32, null=True),
        ),
        migrations.AddField(
            model_name="rerunevent",
            name="claimed_at",
            field=models.DateTimeField(
                blank=True, help_text="The claim's heartbeat: renewed while a worker runs the rerun.", null=True
            ),
        ),
        migrations.AlterField(
            model_name="audit",
            name="dispatched_at",
            field=models.DateTimeField(blank=True, help_text="When its units were fanned out.", null=True),
        ),
        migrations.AlterField(
            model_name="audit",
            name="last_progress_at",
            field=models.DateTimeField(blank=True, help_text="When a unit's outcome was last applied.", null=True),
        ),
        migrations.AlterField(
            model_name="audit",
            name="redriven_at",
            field=models.DateTimeField(blank=True, help_text="When the reconciler last re-drove it.", null=True),
        ),
    ]
