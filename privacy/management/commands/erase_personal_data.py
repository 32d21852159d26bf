"""``manage.py erase_personal_data --fiche ID | --phone N | --email E [--reason R] [--dry-run] [--max-fiches N]``.

Erases a prospect's personal data everywhere we hold it (``privacy.erasure.erase``) and prints the erasure's id,
the fiches erased and the rows removed or redacted per kind of data. Prints nothing of the person beyond the
argument given (not even that: the value is not echoed). Nothing found is not an error (exit 0, an entry with
zero counts is recorded: the request was processed); a bad phone number or e-mail, or a phone or e-mail held by
more fiches than ``--max-fiches`` (default 20: an agent's line typed by mistake), exits 2.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from privacy.erasure import DEFAULT_MAX_FICHES, InvalidSubject, TooManyFiches, erase


class Command(BaseCommand):
    help = "Erase a prospect's personal data (by fiche id, phone number or e-mail) everywhere we hold it."

    def add_arguments(self, parser: CommandParser) -> None:
        subject = parser.add_mutually_exclusive_group(required=True)
        subject.add_argument("--fiche", help="the CRM's fiche id")
        subject.add_argument("--phone", help="a phone number, any written form (national numbers read as French)")
        subject.add_argument("--email", help="an e-mail address (case-insensitive)")
        parser.add_argument(
            "--reason", default="", help="why (kept with the erasure's entry; personal data in it is redacted)"
        )
        parser.add_argument("--dry-run", action="store_true", help="count what would be erased; change nothing")
        parser.add_argument(
            "--max-fiches",
            type=int,
            default=DEFAULT_MAX_FICHES,
            help=f"refuse when the phone or e-mail is held by more fiches than this (default {DEFAULT_MAX_FICHES})",
        )

    def handle(self, *args: object, **options: object) -> None:
        kind, value = next((k, options[k]) for k in ("fiche", "phone", "email") if options.get(k) is not None)
        dry_run = bool(options["dry_run"])
        max_fiches = options["max_fiches"]
        assert isinstance(max_fiches, int)
        if max_fiches < 1:
            raise CommandError("--max-fiches must be at least 1.", returncode=2)
        try:
            result = erase(
                kind,
                str(value),
                via="command",
                reason=str(options["reason"] or ""),
                dry_run=dry_run,
                max_fiches=max_fiches,
            )
        except (InvalidSubject, TooManyFiches) as exc:
            raise CommandError(exc.message, returncode=2) from None
        head = "dry run: nothing changed" if dry_run else f"erasure {result.request.pk if result.request else '-'}"
        if not result.found:
            self.stdout.write(f"{head}: nothing found for this {kind}.")
        else:
            self.stdout.write(f"{head}: {len(result.fiche_ids)} fiche(s): {', '.join(result.fiche_ids) or '-'}")
        if result.mentioning:
            self.stdout.write(
                f"  records naming the person blanked in {len(result.mentioning)} other prospect's fiche(s): "
                + ", ".join(result.mentioning)
            )
        for name, count in result.counts.items():
            if count:
                self.stdout.write(f"  {name}: {count}")
        if result.found and not result.changed:
            self.stdout.write("  nothing left to erase (already erased)")
