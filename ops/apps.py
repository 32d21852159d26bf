from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: the Prometheus ``/metrics`` endpoint, what it computes at scrape time (queue depth, workflow
    runs by state) and the Celery task metrics recorded from Celery's signals."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "ops"

    def ready(self) -> None:
        from ops import celery_metrics

        celery_metrics.connect()
