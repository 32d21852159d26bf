from django.apps import AppConfig


class ProductsConfig(AppConfig):
    """Insurance products sold by the call centre, and the audit configs that audit their sales."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "products"
