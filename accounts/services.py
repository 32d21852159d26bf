"""Writes for accounts: login, roles and their grants, users. Each service owns its transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import authenticate
from django.contrib.auth.models import update_last_login
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest

from accounts.grants import PERMISSION_KEYS, Scope, forget_grants
from accounts.models import Role, RolePermission, User
from accounts.tokens import TokenPair, issue_tokens
from core.exceptions import ConflictError, InvalidInput, NotAuthenticatedError


@dataclass(frozen=True)
class GrantSpec:
    key: str
    can_read: bool = False
    can_write: bool = False
    scope: Scope = Scope.ALL


def grants_from_legacy_keys(permission_keys: Iterable[str]) -> list[GrantSpec]:
    """``["fiches.read", "fiches.write"]`` → grants with scope ALL (the legacy meaning)."""
    flags: dict[str, dict[str, bool]] = {}
    errors = []
    for raw in permission_keys:
        key, _, action = str(raw).rpartition(".")
        if key not in PERMISSION_KEYS or action not in ("read", "write"):
            errors.append(f"Unknown permission {raw!r}; expected '<key>.read' or '<key>.write'.")
            continue
        flags.setdefault(key, {"read": False, "write": False})[action] = True
    if errors:
        raise InvalidInput(errors[0], details={"permission_keys": errors})
    return [GrantSpec(key, f["read"], f["write"], Scope.ALL) for key, f in flags.items()]


# --- Login --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginResult:
    user: User
    tokens: TokenPair


def auth_login(*, email: str, password: str, request: HttpRequest | None = None) -> LoginResult:
    user = authenticate(request, email=email.strip().lower(), password=password)
    if user is None:  # unknown email, wrong password and inactive user look the same
        raise NotAuthenticatedError("Invalid email or password.", code="invalid_credentials")
    update_last_login(User, user)
    return LoginResult(user=user, tokens=issue_tokens(user))


# --- Roles --------------------------------------------------------------------------------


def _replace_grants(role: Role, grants: Sequence[GrantSpec]) -> None:
    keys = [g.key for g in grants]
    if len(keys) != len(set(keys)):
        raise InvalidInput("Each permission key may appear once.", details={"permission_grants": keys})
    RolePermission.objects.filter(role=role).delete()
    RolePermission.objects.bulk_create(
        RolePermission(
            role=role, permission_key=g.key, can_read=g.can_read, can_write=g.can_write, scope=Scope(g.scope)
        )
        for g in grants
    )


def _save_role(role: Role) -> None:
    try:
        with transaction.atomic():
            role.save()
    except IntegrityError as exc:
        raise ConflictError(f"A role with key {role.key!r} already exists.", code="role_key_taken") from exc


@transaction.atomic
def role_create(*, key: str, name: str, description: str = "", grants: Sequence[GrantSpec] = ()) -> Role:
    role = Role(key=key, name=name, description=description)
    _save_role(role)
    _replace_grants(role, grants)
    return role


@transaction.atomic
def role_update(
    *,
    role: Role,
    key: str | None = None,
    name: str | None = None,
    description: str | None = None,
    grants: Sequence[GrantSpec] | None = None,
) -> Role:
    for field, value in (("key", key), ("name", name), ("description", description)):
        if value is not None:
            setattr(role, field, value)
    _save_role(role)
    if grants is not None:
        _replace_grants(role, grants)
    return role


@transaction.atomic
def role_delete(*, role: Role) -> None:
    assigned = role.users.count()
    if assigned:
        raise ConflictError(
            f"Role {role.key!r} is still assigned to {assigned} user(s); unassign it first.",
            code="role_in_use",
            details={"assigned_users": assigned},
        )
    role.delete()


# --- Users --------------------------------------------------------------------------------


def _roles_by_key(keys: Iterable[str]) -> list[Role]:
    keys = list(dict.fromkeys(keys))
    roles = list(Role.objects.filter(key__in=keys))
    missing = sorted(set(keys) - {r.key for r in roles})
    if missing:
        raise InvalidInput(f"Unknown role(s): {', '.join(missing)}.", details={"roles": missing})
    return roles


def _check_password(password: str, user: User) -> None:
    try:
        validate_password(password, user)
    except DjangoValidationError as exc:
        raise InvalidInput(exc.messages[0], details={"password": exc.messages}) from exc


def _save_user(user: User) -> None:
    try:
        user.full_clean(exclude=["password"])
    except DjangoValidationError as exc:
        details = exc.message_dict
        conflict = {f: m for f, m in details.items() if f in ("email", "crm_user_id") and "already exists" in str(m)}
        if conflict:
            field = next(iter(conflict))
            raise ConflictError(f"A user with this {field} already exists.", code=f"{field}_taken") from exc
        raise InvalidInput(next(iter(details.values()))[0], details=details) from exc
    user.save()


@transaction.atomic
def user_create(
    *,
    email: str,
    password: str,
    first_name: str = "",
    last_name: str = "",
    crm_user_id: str | None = None,
    groupes: Sequence[str] = (),
    is_active: bool = True,
    roles: Sequence[str] = (),
) -> User:
    user = User(
        email=email,
        first_name=first_name,
        last_name=last_name,
        crm_user_id=crm_user_id,
        groupes=list(groupes),
        is_active=is_active,
    )
    _check_password(password, user)
    user.set_password(password)
    _save_user(user)
    user.roles.set(_roles_by_key(roles))
    return user


@transaction.atomic
def user_update(*, user: User, password: str | None = None, roles: Sequence[str] | None = None, **fields: Any) -> User:
    allowed = {"email", "first_name", "last_name", "crm_user_id", "groupes", "is_active"}
    unknown = set(fields) - allowed
    if unknown:
        raise InvalidInput(f"Unknown field(s): {', '.join(sorted(unknown))}.")
    for field, value in fields.items():
        setattr(user, field, list(value) if field == "groupes" else value)
    if password is not None:
        _check_password(password, user)
        user.set_password(password)
    _save_user(user)
    if roles is not None:
        user.roles.set(_roles_by_key(roles))
    forget_grants(user)
    return user
