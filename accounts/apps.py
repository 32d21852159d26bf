from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users, roles, scoped permission grants, JWT authentication."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"
