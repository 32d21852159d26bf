from django.apps import AppConfig


class TranscriptionsConfig(AppConfig):
    """Phase 2 (call transcriptions with ElevenLabs): nothing here yet."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "transcriptions"
