from django.apps import AppConfig


class FichesConfig(AppConfig):
    """CRM fiche cache, recordings, progressive date-range fetch jobs, CRM client and simulator."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "fiches"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from fiches import notifications, selectors
        from fiches.models import ProgressiveFetchJob

        notifications.register()
        # Services call selectors.job_changed at each write; this also covers admin and ORM saves.
        post_save.connect(
            lambda sender, instance, **kwargs: selectors.job_changed(instance.pk),
            sender=ProgressiveFetchJob,
            weak=False,
            dispatch_uid="job-snapshot-save",
        )
