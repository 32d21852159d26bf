"""Permission keys, scopes, and the one function that computes a user's effective grants.

A role grants, per permission key, ``can_read`` / ``can_write`` and a visibility ``scope``:

- ``ALL``: every row;
- ``GROUP``: rows whose CRM group is one of the user's ``groupes``;
- ``SELF``: rows whose CRM user id is the user's ``crm_user_id``.

A user's effective grant for a key is the union over their roles, per action: read is granted
when a role grants it, with the widest scope among the roles granting read; likewise for write.
``effective_grants`` is the only place this is computed; tokens, ``/api/auth/me``, permissions and
scope filters all use it. The keys and scopes themselves live in ``accounts.keys`` (the tables use
them without importing this module) and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from accounts.keys import PERMISSION_KEYS, Scope

if TYPE_CHECKING:
    from accounts.models import User

__all__ = [
    "ACTIONS",
    "PERMISSION_KEYS",
    "Action",
    "Grant",
    "Scope",
    "effective_grants",
    "forget_grants",
    "grant_for",
    "grant_rows",
    "has_grant",
    "merge_grants",
    "scope_for",
    "set_cached_grants",
    "validate_permission_key",
]

Action = Literal["read", "write"]
ACTIONS: tuple[str, ...] = ("read", "write")


def validate_permission_key(key: str) -> str:
    if key not in PERMISSION_KEYS:
        raise ValueError(f"Unknown permission key {key!r}; known keys: {', '.join(PERMISSION_KEYS)}.")
    return key


@dataclass(frozen=True, slots=True)
class Grant:
    """A user's effective grant for one permission key: may they read, may they write, and over
    which rows for each action (``None`` when the action is not granted)."""

    key: str
    read: bool
    write: bool
    read_scope: Scope | None
    write_scope: Scope | None

    def allows(self, action: Action) -> bool:
        return self.read if action == "read" else self.write

    def scope_for(self, action: Action) -> Scope | None:
        return self.read_scope if action == "read" else self.write_scope

    @property
    def scope(self) -> Scope:
        """The read scope when reading is granted, else the write scope (the legacy single scope)."""
        scope = self.read_scope or self.write_scope
        assert scope is not None  # a grant allows at least one action
        return scope

    def as_claim(self) -> dict:
        return {
            "key": self.key,
            "read": self.read,
            "write": self.write,
            "scope": str(self.scope),
            "read_scope": str(self.read_scope) if self.read_scope else None,
            "write_scope": str(self.write_scope) if self.write_scope else None,
        }


def _wider(current: Scope | None, scope: Scope) -> Scope:
    return scope if current is None or scope.width > current.width else current


def merge_grants(rows) -> dict[str, Grant]:
    """Union of ``(key, can_read, can_write, scope)`` rows, **per action**: read is granted when
    any row grants it, and its scope is the widest among the rows granting read; the same for
    write. A write-only ALL row therefore never widens another row's SELF read. A row that grants
    neither contributes nothing."""
    flags: dict[str, list[Scope | None]] = {}
    for key, can_read, can_write, scope in rows:
        if not (can_read or can_write):
            continue
        scope = Scope(scope)
        read_scope, write_scope = flags.setdefault(key, [None, None])
        flags[key] = [
            _wider(read_scope, scope) if can_read else read_scope,
            _wider(write_scope, scope) if can_write else write_scope,
        ]
    return {
        key: Grant(key, flags[key][0] is not None, flags[key][1] is not None, flags[key][0], flags[key][1])
        for key in PERMISSION_KEYS
        if key in flags
    }


_CACHE_ATTR = "_effective_grants_cache"


def grant_rows(user: User) -> list[tuple[str, bool, bool, str]]:
    """The user's role permission rows ``(key, can_read, can_write, scope)`` from the database."""
    prefetched_roles = getattr(user, "_prefetched_objects_cache", {}).get("roles")
    if prefetched_roles is not None:  # list selectors prefetch roles__permissions: no query per user
        return [
            (p.permission_key, p.can_read, p.can_write, p.scope)
            for role in prefetched_roles
            for p in role.permissions.all()
        ]
    from accounts.models import RolePermission

    return list(
        RolePermission.objects.filter(role__users=user).values_list("permission_key", "can_read", "can_write", "scope")
    )


def effective_grants(user: User | None) -> dict[str, Grant]:
    """The user's grants as they are in the database now (cached on the user instance, and across
    requests by ``accounts.auth_cache`` under a version that every role/user/grant change bumps).

    Anonymous or inactive users have none.
    """
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return {}
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is not None:
        return cached
    grants = merge_grants(grant_rows(user))
    setattr(user, _CACHE_ATTR, grants)
    return grants


def set_cached_grants(user: User, grants: dict[str, Grant]) -> None:
    setattr(user, _CACHE_ATTR, grants)


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
    """The scope the user has for ``action`` on ``key`` when the action is allowed, else ``None``."""
    grant = grant_for(user, key)
    return grant.scope_for(action) if grant is not None else None
