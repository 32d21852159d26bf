"""Register the automation beat tasks as django-celery-beat periodic tasks, every minute (operators can
change or pause them in the admin): the tick that starts the schedules' due slots, and the runs'
reconciler (every run ends)."""

from django.db import migrations
from django.utils import timezone

TASKS = {
    "automation: tick (due schedules)": "automation.tasks.automation_tick",
    "automation: reconcile runs": "automation.tasks.reconcile_automation_runs",
}


def _beat_changed(apps):
    # What PeriodicTasks.changed() does on a save (signals do not run for migration models): a running
    # beat (DatabaseScheduler) reloads its schedule.
    apps.get_model("django_celery_beat", "PeriodicTasks").objects.update_or_create(
        ident=1, defaults={"last_update": timezone.now()}
    )


def register(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute = IntervalSchedule.objects.filter(every=1, period="minutes").order_by("pk").first()
    if every_minute is None:
        every_minute = IntervalSchedule.objects.create(every=1, period="minutes")
    for name, task in TASKS.items():
        PeriodicTask.objects.get_or_create(
            name=name, defaults={"task": task, "interval": every_minute, "enabled": True}
        )
    _beat_changed(apps)


def unregister(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=list(TASKS)).delete()
    _beat_changed(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("automation", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(register, unregister)]
