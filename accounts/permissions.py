"""Building blocks every endpoint uses: ``HasGrant``, queryset scope filtering, ``can_access``.

All three read the user's grants as they are in the database now (``effective_grants``).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from django.db.models import QuerySet
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts.grants import ACTIONS, Action, Scope, scope_for, validate_permission_key
from accounts.models import User
from core.exceptions import NotAuthenticatedError, PermissionDeniedError

DEFAULT_GROUP_FIELD = "groupe"
DEFAULT_USER_FIELD = "crm_user_id"


class GrantPermission(BasePermission):
    """DRF permission requiring one grant (``key``/``action`` set by ``HasGrant``).

    Unauthenticated → 401 (DRF's NotAuthenticated); authenticated without the grant → 403
    ``permission_denied`` naming the missing grant.
    """

    key: ClassVar[str]
    action: ClassVar[Action]

    @classmethod
    def grant_name(cls) -> str:
        return f"{cls.key}.{cls.action}"

    @classmethod
    def require(cls, user: Any) -> None:
        """Raise 403 ``permission_denied`` naming the grant unless ``user`` holds it."""
        if scope_for(user, cls.key, cls.action) is None:
            raise PermissionDeniedError(
                f"Missing permission {cls.grant_name()}.",
                details={"required": cls.grant_name()},
            )

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        self.require(user)
        return True


@functools.cache
def HasGrant(key: str, action: Action = "read") -> type[GrantPermission]:
    """The DRF permission class requiring ``key``.``action``:
    ``permission_classes = [HasGrant("fiches", "read")]``, or ``HasGrant("fiches", "write").require(user)``."""
    validate_permission_key(key)
    if action not in ACTIONS:
        raise ValueError(f"Unknown action {action!r}; expected one of {ACTIONS}.")
    name = f"HasGrant({key!r}, {action!r})"
    return type(name, (GrantPermission,), {"key": key, "action": action, "__doc__": f"Requires {key}.{action}."})


def scope_queryset(
    queryset: QuerySet,
    user,
    key: str,
    *,
    action: Action = "read",
    group_field: str = DEFAULT_GROUP_FIELD,
    user_field: str = DEFAULT_USER_FIELD,
) -> QuerySet:
    """Rows of ``queryset`` the user may see for ``key``.

    ALL → everything; GROUP → rows whose ``group_field`` is in the user's ``groupes``;
    SELF → rows whose ``user_field`` equals the user's ``crm_user_id``. No grant, or a
    SELF/GROUP user without ``crm_user_id``/``groupes`` → nothing.
    """
    return filter_by_scope(
        queryset,
        scope_for(user, key, action),
        groupes=user.groupes,
        crm_user_id=user.crm_user_id,
        group_field=group_field,
        user_field=user_field,
    )


def filter_by_scope(
    queryset: QuerySet,
    scope: Scope | str | None,
    *,
    groupes,
    crm_user_id: str | None,
    group_field: str = DEFAULT_GROUP_FIELD,
    user_field: str = DEFAULT_USER_FIELD,
) -> QuerySet:
    """The same filter for an explicit scope (e.g. the snapshot stored on a job)."""
    if scope is None or scope not in (Scope.ALL, Scope.GROUP, Scope.SELF):
        return queryset.none()
    if scope == Scope.ALL:
        return queryset
    if scope == Scope.GROUP:
        groupes = list(groupes or [])
        return queryset.filter(**{f"{group_field}__in": groupes}) if groupes else queryset.none()
    return queryset.filter(**{user_field: crm_user_id}) if crm_user_id else queryset.none()


def _attr(obj: Any, name: str):
    if isinstance(obj, dict):
        return obj.get(name)
    value = obj
    for part in name.split("__"):
        value = getattr(value, part, None)
        if value is None:
            return None
    return value


def can_access(
    user,
    key: str,
    obj: Any,
    *,
    action: Action = "read",
    group_field: str = DEFAULT_GROUP_FIELD,
    user_field: str = DEFAULT_USER_FIELD,
) -> bool:
    """Per-object check with the same semantics as ``scope_queryset`` (objects or dicts)."""
    scope = scope_for(user, key, action)
    if scope is None:
        return False
    if scope == Scope.ALL:
        return True
    if scope == Scope.GROUP:
        groupe = _attr(obj, group_field)
        return bool(groupe) and groupe in (user.groupes or [])
    crm_user_id = user.crm_user_id
    return bool(crm_user_id) and _attr(obj, user_field) == crm_user_id


def request_user(request: Request) -> User:
    """The authenticated user of a request that passed an authentication-requiring permission."""
    user = request.user
    if not isinstance(user, User):
        raise NotAuthenticatedError()
    return user
