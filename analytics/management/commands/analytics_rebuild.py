from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from analytics import services


class Command(BaseCommand):
    help = (
        "Rebuild the analytics facts (one row per audit that counts, one per verdict) from the audits, for one "
        "config or all; after an upgrade or a change of prices."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--config", type=int, help="Only this audit config id.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["config"] is not None:
            written = services.rebuild_config(options["config"])
        else:
            written = services.rebuild_all()
        self.stdout.write(f"{written} audit facts written.")
