from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    """Compliance figures over time (per agent, group, control point, product, config version) read from
    facts kept beside the audits: one row per audit that counts and one per verdict of it."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "analytics"
    verbose_name = "Analytics"

    def ready(self) -> None:
        from analytics import services
        from audits.services.counting import on_counting_changed

        on_counting_changed(services.counting_changed)
