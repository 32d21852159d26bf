from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users, roles, scoped permission grants, JWT authentication."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"

    def ready(self) -> None:
        from django.db.models.signals import m2m_changed, post_delete, post_save

        from accounts.auth_cache import bump_auth_version
        from accounts.models import Role, RolePermission, User

        def changed(sender, instance=None, update_fields=None, **kwargs) -> None:
            """Any change to a user, a role, a role's grants or who holds a role invalidates the
            auth cache (a login only stamps last_login: that changes nothing cached)."""
            if update_fields is not None and set(update_fields) <= {"last_login"}:
                return
            bump_auth_version()

        for model in (User, Role, RolePermission):
            post_save.connect(changed, sender=model, dispatch_uid=f"auth-cache-save-{model.__name__}")
            post_delete.connect(changed, sender=model, dispatch_uid=f"auth-cache-delete-{model.__name__}")
        m2m_changed.connect(changed, sender=User.roles.through, dispatch_uid="auth-cache-user-roles")
