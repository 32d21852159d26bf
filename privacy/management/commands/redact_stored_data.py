"""``manage.py redact_stored_data [--dry-run]``: redact the card numbers and one-time codes stored before they
were redacted at ingestion (transcripts, chat messages); prints the rows changed."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from privacy.backfill import redact_stored


class Command(BaseCommand):
    help = (
        "Redact card numbers and one-time codes in the transcripts and chat messages stored before they were "
        "redacted at ingestion (run once after upgrading; again changes nothing). --dry-run: count, change nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count the rows to redact; change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        counts = redact_stored(dry_run=options["dry_run"])
        for name, n in counts.items():
            self.stdout.write(f"{name:<15} {n}")
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing changed.")
