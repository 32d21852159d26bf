"""``manage.py seed_auth [--demo] [--reset-roles]``: default roles, optional admin, demo users.

Idempotent. Missing default roles and missing grants are created; grants an operator changed
are left alone unless ``--reset-roles`` is given. The admin user comes from
``AUTH_SEED_ADMIN_EMAIL`` / ``AUTH_SEED_ADMIN_PASSWORD`` (its password is set only on creation).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.demo import DEMO_AGENT, DEMO_MANAGER_GROUPES
from accounts.grants import PERMISSION_KEYS, Scope
from accounts.models import Role, RolePermission, User

RW, R = (True, True), (True, False)


@dataclass(frozen=True)
class RoleDefault:
    key: str
    name: str
    description: str
    grants: dict[str, tuple[tuple[bool, bool], Scope]]


DEFAULT_ROLES: tuple[RoleDefault, ...] = (
    RoleDefault(
        "admin",
        "Administrator",
        "Every permission, read and write, on all data.",
        {key: (RW, Scope.ALL) for key in PERMISSION_KEYS},
    ),
    RoleDefault(
        "manager",
        "Manager",
        "Manages the sales of their groups.",
        {
            **{k: (RW, Scope.GROUP) for k in ("fiches", "recordings", "transcriptions", "audits", "automation")},
            "audit-configs": (R, Scope.ALL),
            "products": (R, Scope.ALL),
            "chat": (RW, Scope.GROUP),
        },
    ),
    RoleDefault(
        "agent",
        "Agent",
        "Reads their own sales.",
        {k: (R, Scope.SELF) for k in ("fiches", "recordings", "audits", "chat")},
    ),
    RoleDefault(
        "viewer",
        "Viewer",
        "Reads every fiche and audit.",
        {k: (R, Scope.ALL) for k in ("fiches", "audits")},
    ),
)

DEMO_PASSWORD = "demo-pass-2026"


@dataclass(frozen=True)
class DemoUser:
    email: str
    role: str
    first_name: str
    last_name: str
    crm_user_id: str | None
    groupes: tuple[str, ...]


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("admin@demo.example", "admin", "Alice", "Admin", None, ()),
    DemoUser("manager@demo.example", "manager", "Marc", "Manager", None, DEMO_MANAGER_GROUPES),
    DemoUser(
        "agent@demo.example",
        "agent",
        DEMO_AGENT.first_name,
        DEMO_AGENT.last_name,
        DEMO_AGENT.crm_user_id,
        (DEMO_AGENT.groupe,),
    ),
    DemoUser("viewer@demo.example", "viewer", "Victor", "Viewer", None, ()),
)


class Command(BaseCommand):
    help = "Create the default roles (and optionally the admin and demo users). Safe to run repeatedly."

    def add_arguments(self, parser):
        parser.add_argument("--demo", action="store_true", help="Also create one demo user per role.")
        parser.add_argument(
            "--reset-roles", action="store_true", help="Restore the default grants of the default roles."
        )

    @transaction.atomic
    def handle(self, *args, demo=False, reset_roles=False, **options):
        roles = {d.key: self._seed_role(d, reset=reset_roles) for d in DEFAULT_ROLES}
        self._seed_admin(roles["admin"])
        if demo:
            self._seed_demo(roles)

    def _seed_role(self, default: RoleDefault, *, reset: bool) -> Role:
        role, created = Role.objects.get_or_create(
            key=default.key, defaults={"name": default.name, "description": default.description}
        )
        if reset:
            role.permissions.exclude(permission_key__in=default.grants).delete()
        existing = set(role.permissions.values_list("permission_key", flat=True))
        for key, ((can_read, can_write), scope) in default.grants.items():
            if key in existing and not reset:
                continue
            RolePermission.objects.update_or_create(
                role=role,
                permission_key=key,
                defaults={"can_read": can_read, "can_write": can_write, "scope": scope},
            )
        self.stdout.write(f"role {role.key}: {'created' if created else 'present'}")
        return role

    def _seed_admin(self, admin_role: Role) -> None:
        email, password = settings.AUTH_SEED_ADMIN_EMAIL.strip().lower(), settings.AUTH_SEED_ADMIN_PASSWORD
        if not email:
            return
        user = User.objects.filter(email=email).first()
        if user is None:
            if not password:
                self.stderr.write(
                    "AUTH_SEED_ADMIN_EMAIL is set but AUTH_SEED_ADMIN_PASSWORD is empty: admin not created."
                )
                return
            user = User.objects.create_superuser(email=email, password=password)
            self.stdout.write(f"admin user {email}: created")
        else:
            user.is_staff = user.is_superuser = user.is_active = True
            user.save(update_fields=["is_staff", "is_superuser", "is_active"])
            self.stdout.write(f"admin user {email}: present (password unchanged)")
        user.roles.add(admin_role)

    def _seed_demo(self, roles: dict[str, Role]) -> None:
        self.stdout.write(f"\nDemo users (password for all: {DEMO_PASSWORD}):")
        for demo in DEMO_USERS:
            user = User.objects.filter(email=demo.email).first()
            if user is None:
                user = User.objects.create_user(
                    email=demo.email,
                    password=DEMO_PASSWORD,
                    first_name=demo.first_name,
                    last_name=demo.last_name,
                    crm_user_id=demo.crm_user_id,
                    groupes=list(demo.groupes),
                    is_staff=demo.role == "admin",
                    is_superuser=demo.role == "admin",
                )
            user.roles.add(roles[demo.role])
            scope = f"crm_user_id={demo.crm_user_id}" if demo.crm_user_id else ""
            if demo.groupes:
                scope += f" groupes={','.join(demo.groupes)}"
            self.stdout.write(f"  {demo.role:<8} {demo.email:<24} {DEMO_PASSWORD}  {scope.strip()}")
