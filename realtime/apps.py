from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    """Everything that notifies the outside world: Pusher events and outgoing webhooks."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "realtime"

    def ready(self) -> None:
        from realtime.auth import authorize_user_channel
        from realtime.events import USER_CHANNEL_PREFIX
        from realtime.registry import ALL_KEYS, register_channel_authorizer

        register_channel_authorizer(USER_CHANNEL_PREFIX, authorize_user_channel, reads=(ALL_KEYS,))
