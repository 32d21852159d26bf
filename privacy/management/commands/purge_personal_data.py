"""``manage.py purge_personal_data [--dry-run]``: purge personal data past its retention now (what the daily
beat task does) and print the rows changed per kind; ``--dry-run`` prints what is due and changes nothing."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from privacy import retention


class Command(BaseCommand):
    help = (
        "Purge personal data past its retention (RETENTION_*_DAYS settings) now, in bounded batches, and print "
        "the rows removed or blanked per kind. --dry-run: print what is due, change nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what is due; change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["dry_run"]:
            self._print(retention.count_due())
            self.stdout.write("Dry run: nothing changed.")
            return
        report = retention.purge_due()
        self._print(report.purged)
        if report.complete:
            self.stdout.write(f"Complete (report {report.pk}).")
        else:
            self.stdout.write(f"Not complete (report {report.pk}): the next run goes on.")
        if report.error:
            self.stderr.write(report.error)

    def _print(self, counts: dict[str, int | None]) -> None:
        for counter in retention.COUNTERS:
            n = counts.get(counter)
            self.stdout.write(f"{counter:<20} {'kept forever' if n is None else n}")
