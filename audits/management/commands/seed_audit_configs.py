"""``manage.py seed_audit_configs [--reset]``: the default French audit config for insurance phone
sales. Idempotent: created when missing; an operator's later edits are kept unless ``--reset``
(which makes the default the current content again, as a new version)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from audits.defaults import DEFAULT_CONFIG, DEFAULT_CONFIG_NAME
from audits.models import AuditConfig
from audits.services.configs import config_create, config_update


class Command(BaseCommand):
    help = "Create the default French audit config (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reset", action="store_true", help="make the default content current again")

    def handle(self, *args: Any, reset: bool = False, **options: Any) -> None:
        config = AuditConfig.objects.filter(name=DEFAULT_CONFIG_NAME).order_by("id").first()
        if config is None:
            config = config_create(data=DEFAULT_CONFIG)
            self.stdout.write(self.style.SUCCESS(f"created audit config {config.pk}: {config.name}"))
        elif reset:
            config = config_update(config_id=config.pk, patch={**DEFAULT_CONFIG, "is_active": True})
            self.stdout.write(f"reset audit config {config.pk} (version {_version(config)})")
        else:
            self.stdout.write(f"audit config {config.pk} already exists (version {_version(config)})")


def _version(config: AuditConfig) -> int | None:
    current = config.current_version
    return current.version if current else None
