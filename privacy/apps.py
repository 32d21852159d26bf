from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    """Personal data: the redactor of French call transcripts (what reaches the LLM, what is stored, what a
    reader without write access sees), retention purges and erasure on request."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "privacy"
