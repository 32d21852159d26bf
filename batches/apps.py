from django.apps import AppConfig


class BatchesConfig(AppConfig):
    """Batches of fiches (transcriptions, audits): items started once each, counts moved by a
    serialized updater, a reconciler on beat; the operations register themselves here."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "batches"
