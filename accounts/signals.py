"""Signal receivers that keep the auth cache right (``accounts.cache_versions``): any save or delete of
a user, a role or a role's grant, and any change of who holds a role, bumps the cache version.
Bulk writes skip signals: the tables' querysets bump it themselves (``accounts.models``).

Connected once by ``AccountsConfig.ready``.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save

from accounts import cache_versions
from accounts.models import Role, RolePermission, User


def auth_data_changed(sender: Any, instance: Any = None, update_fields: Any = None, **kwargs: Any) -> None:
    """Invalidate the auth cache (a login only stamps last_login: that changes nothing cached)."""
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    cache_versions.bump()


def connect() -> None:
    for model in (User, Role, RolePermission):
        post_save.connect(auth_data_changed, sender=model, dispatch_uid=f"auth-cache-save-{model.__name__}")
        post_delete.connect(auth_data_changed, sender=model, dispatch_uid=f"auth-cache-delete-{model.__name__}")
    m2m_changed.connect(auth_data_changed, sender=User.roles.through, dispatch_uid="auth-cache-user-roles")
