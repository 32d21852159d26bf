"""Permission keys, scopes, and the one function that computes a user's effective grants.

A role grants, per permission key, ``can_read`` / ``can_write`` and a visibility ``scope``:

- ``ALL``: every row;
- ``GROUP``: rows whose CRM group is one of the user's ``groupes``;
- ``SELF``: rows whose CRM user id is the user's ``crm_user_id``.

A user's effective grant for a key is the union over their roles: read and write are OR'd, and
the scope is the widest among the roles granting that key. ``effective_grants`` is the only
place this is computed; tokens, ``/api/auth/me``, permissions and scope filters all use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from accounts.models import User

# The registry of permission keys. Unknown keys are rejected everywhere (API, admin, DB).
PERMISSION_KEYS: tuple[str, ...] = (
    "fiches",
    "recordings",
    "transcriptions",
    "audits",
    "audit-configs",
    "automation",
    "products",
    "chat",
    "users",
)

Action = Literal["read", "write"]
ACTIONS: tuple[str, ...] = ("read", "write")


class Scope(StrEnum):
    SELF = "SELF"
    GROUP = "GROUP"
    ALL = "ALL"

    @property
    def width(self) -> int:
        return _SCOPE_WIDTH[self]


_SCOPE_WIDTH = {Scope.SELF: 0, Scope.GROUP: 1, Scope.ALL: 2}


def validate_permission_key(key: str) -> str:
    if key not in PERMISSION_KEYS:
        raise ValueError(f"Unknown permission key {key!r}; known keys: {', '.join(PERMISSION_KEYS)}.")
    return key


@dataclass(frozen=True, slots=True)
class Grant:
    key: str
    read: bool
    write: bool
    scope: Scope

    def allows(self, action: Action) -> bool:
        return self.read if action == "read" else self.write

    def as_claim(self) -> dict:
        return {"key": self.key, "read": self.read, "write": self.write, "scope": str(self.scope)}


def merge_grants(rows) -> dict[str, Grant]:
    """Union of ``(key, can_read, can_write, scope)`` rows: OR of flags, widest scope.

    A row that grants neither read nor write contributes nothing (its scope does not widen).
    """
    merged: dict[str, Grant] = {}
    for key, can_read, can_write, scope in rows:
        if not (can_read or can_write):
            continue
        scope = Scope(scope)
        current = merged.get(key)
        if current is None:
            merged[key] = Grant(key, bool(can_read), bool(can_write), scope)
        else:
            merged[key] = Grant(
                key,
                current.read or bool(can_read),
                current.write or bool(can_write),
                scope if scope.width > current.scope.width else current.scope,
            )
    return {key: merged[key] for key in PERMISSION_KEYS if key in merged}


_CACHE_ATTR = "_effective_grants_cache"


def effective_grants(user: User | None) -> dict[str, Grant]:
    """The user's grants as they are in the database now (cached on the user instance).

    Anonymous or inactive users have none. The cache lives on the instance, which is loaded
    afresh on every request, so a role change applies on the next request.
    """
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return {}
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is not None:
        return cached
    prefetched_roles = getattr(user, "_prefetched_objects_cache", {}).get("roles")
    if prefetched_roles is not None:  # list selectors prefetch roles__permissions: no query per user
        rows = [
            (p.permission_key, p.can_read, p.can_write, p.scope)
            for role in prefetched_roles
            for p in role.permissions.all()
        ]
    else:
        from accounts.models import RolePermission

        rows = RolePermission.objects.filter(role__users=user).values_list(
            "permission_key", "can_read", "can_write", "scope"
        )
    grants = merge_grants(rows)
    setattr(user, _CACHE_ATTR, grants)
    return grants


def forget_grants(user: User) -> None:
    """Drop the per-instance cache (after changing the user's roles in the same process)."""
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


def grant_for(user: User | None, key: str) -> Grant | None:
    validate_permission_key(key)
    return effective_grants(user).get(key)


def has_grant(user: User | None, key: str, action: Action = "read") -> bool:
    grant = grant_for(user, key)
    return grant is not None and grant.allows(action)


def scope_for(user: User | None, key: str, action: Action = "read") -> Scope | None:
    """The scope the user has for ``key`` when the action is allowed, else ``None``."""
    grant = grant_for(user, key)
    return grant.scope if grant is not None and grant.allows(action) else None
