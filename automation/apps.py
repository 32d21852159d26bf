from django.apps import AppConfig


class AutomationConfig(AppConfig):
    """Phase 2 (automation schedules and runs): nothing here yet."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "automation"
