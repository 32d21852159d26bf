"""Register the webhook sweeper (every minute) as a django-celery-beat periodic task: pending
deliveries whose next attempt is overdue (their scheduled message was lost) are re-dispatched."""

from django.db import migrations

TASK_NAME = "Re-dispatch overdue webhook deliveries"


def register(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    schedule, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={"task": "realtime.tasks.sweep_webhook_deliveries", "interval": schedule, "enabled": True},
    )


def unregister(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("realtime", "0003_generic_webhook_deliveries"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(register, unregister)]
