"""Register the batch reconciler (every minute: every batch ends) as a django-celery-beat periodic task
(operators can change or pause it in the admin). It ran inside the transcription reconciler before
batches had an app of their own."""

from django.db import migrations

TASK_NAME = "Reconcile batches"


def register(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    schedule, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME, defaults={"task": "batches.tasks.reconcile_batches", "interval": schedule, "enabled": True}
    )


def unregister(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("batches", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(register, unregister)]
