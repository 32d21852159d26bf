from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users, roles, scoped permission grants, JWT authentication."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"

    def ready(self) -> None:
        from accounts import signals

        signals.connect()  # any user/role/grant change invalidates the auth cache
