from django.apps import AppConfig


class FichesConfig(AppConfig):
    """CRM fiche cache, recordings, progressive date-range fetch jobs, CRM client and simulator."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "fiches"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from core import inbox
        from fiches import notifications
        from fiches.job_snapshots import job_changed
        from fiches.models import ProgressiveFetchJob
        from fiches.services.jobs import JOB_INBOX

        notifications.register()
        inbox.register(JOB_INBOX)  # day outcomes → the job's serialized updater (core.tasks.apply_outcome)
        # Services call job_changed at each write; this also covers admin and ORM saves.
        post_save.connect(
            lambda sender, instance, **kwargs: job_changed(instance.pk),
            sender=ProgressiveFetchJob,
            weak=False,
            dispatch_uid="job-snapshot-save",
        )
