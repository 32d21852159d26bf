from django.apps import AppConfig


class CostsConfig(AppConfig):
    """What the LLM and speech-to-text calls cost (usage recorded per call, priced from settings) and the
    daily budgets that stop new work at their limit."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "costs"
