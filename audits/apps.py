from django.apps import AppConfig


class AuditsConfig(AppConfig):
    """Phase 2 (LLM compliance audits of each sale): nothing here yet."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "audits"
