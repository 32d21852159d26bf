"""Reads for accounts: roles and users as plain dicts for the API."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from accounts.grants import effective_grants
from accounts.models import Role, RolePermission, User


def role_queryset() -> QuerySet[Role]:
    return Role.objects.prefetch_related(
        Prefetch("permissions", queryset=RolePermission.objects.order_by("permission_key"))
    )


def role_to_dict(role: Role) -> dict:
    return {
        "id": role.id,
        "key": role.key,
        "name": role.name,
        "description": role.description,
        "permission_grants": [
            {"key": p.permission_key, "can_read": p.can_read, "can_write": p.can_write, "scope": p.scope}
            for p in role.permissions.all()
        ],
        "created_at": role.created_at,
        "updated_at": role.updated_at,
    }


def user_queryset() -> QuerySet:
    return User.objects.prefetch_related(
        Prefetch("roles", queryset=Role.objects.order_by("key").prefetch_related("permissions"))
    )


def user_to_dict(user: User) -> dict:
    return {
        "id": user.id,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "crm_user_id": user.crm_user_id,
        "groupes": list(user.groupes or []),
        "is_active": user.is_active,
        "roles": [r.key for r in user.roles.all()],
        "permissions": [g.as_claim() for g in effective_grants(user).values()],
        "last_login": user.last_login,
        "date_joined": user.date_joined,
    }
