from django.apps import AppConfig


class ChatConfig(AppConfig):
    """Chat with an LLM over an audit or a fiche, streamed as Server-Sent Events, quotes gated."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "chat"
