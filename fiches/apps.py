from django.apps import AppConfig


class FichesConfig(AppConfig):
    """CRM fiche cache, recordings, progressive date-range fetch jobs, CRM client and simulator."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "fiches"

    def ready(self) -> None:
        from fiches import notifications

        notifications.register()
