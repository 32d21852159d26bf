from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    """Everything that notifies the outside world: Pusher events and outgoing webhooks."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "realtime"
