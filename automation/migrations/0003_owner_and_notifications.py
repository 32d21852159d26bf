"""A schedule's owner (whose grants bound what its runs touch), the owner a run acts for, and the
state of a run's notifications (due, attempts, signals sent, email sent, last error) so they are sent
at least once. Backfill: a schedule's owner is who created it; a run's owner is its schedule's owner.
Runs that ended before this migration keep ``notify_due_at`` null: the reconciler does not re-send
their notifications (the old code claimed ``notified_at`` when they ended)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def backfill_owners(apps, schema_editor):
    Schedule = apps.get_model("automation", "AutomationSchedule")
    Run = apps.get_model("automation", "AutomationRun")
    Schedule.objects.filter(owner__isnull=True, created_by__isnull=False).update(owner=models.F("created_by"))
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Run._meta.db_table} AS r SET owner_id = s.owner_id FROM {Schedule._meta.db_table} AS s "
            "WHERE r.schedule_id = s.id AND r.owner_id IS NULL"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("automation", "0002_beat_schedules"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="automationrun",
            name="emailed_at",
            field=models.DateTimeField(blank=True, help_text="When the SMTP server accepted the email.", null=True),
        ),
        migrations.AddField(
            model_name="automationrun",
            name="notify_attempts",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="automationrun",
            name="notify_due_at",
            field=models.DateTimeField(
                blank=True,
                help_text="Set with the run's end: its notifications are due (from then, or the next try after a failure).",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="automationrun",
            name="notify_error",
            field=models.TextField(blank=True, help_text="The last notification failure.", null=True),
        ),
        migrations.AddField(
            model_name="automationrun",
            name="owner",
            field=models.ForeignKey(
                blank=True,
                help_text="The schedule's owner when the run was created: every step checks their grants as they are then.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="automationrun",
            name="signalled_at",
            field=models.DateTimeField(blank=True, help_text="When the domain signals were sent.", null=True),
        ),
        migrations.AddField(
            model_name="automationschedule",
            name="owner",
            field=models.ForeignKey(
                blank=True,
                help_text="Whose grants bound what a run touches (fiches read, transcriptions and audits write). None: a run has no fiche in scope and fails.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="automationrun",
            name="notified_at",
            field=models.DateTimeField(
                blank=True, help_text="When its end was notified (webhook recorded, email sent, Pusher).", null=True
            ),
        ),
        migrations.AddIndex(
            model_name="automationrun",
            index=models.Index(
                condition=models.Q(("notified_at__isnull", True), ("notify_due_at__isnull", False)),
                fields=["notify_due_at"],
                name="automation_run_notify_due",
            ),
        ),
        migrations.RunPython(backfill_owners, migrations.RunPython.noop),
    ]
