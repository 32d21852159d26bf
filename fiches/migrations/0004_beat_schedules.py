"""Register the warmup (every 15 minutes) and the job reconciler (every minute) as
django-celery-beat periodic tasks, so operators can change or pause them in the admin."""

from django.db import migrations

TASKS = (
    ("Warm recent sales cache", "fiches.tasks.warm_recent_sales_cache", 15, "minutes"),
    ("Reconcile progressive fetch jobs", "fiches.tasks.reconcile_progressive_jobs", 1, "minutes"),
)


def register(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, every, period in TASKS:
        schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period=period)
        PeriodicTask.objects.get_or_create(name=name, defaults={"task": task, "interval": schedule, "enabled": True})


def unregister(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=[t[0] for t in TASKS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("fiches", "0003_workflow_logs"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(register, unregister)]
