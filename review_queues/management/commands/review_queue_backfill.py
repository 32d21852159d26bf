"""Enter the audits completed in a date range into a review queue (or every active queue)."""

from __future__ import annotations

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from core.exceptions import NotFoundError
from review_queues import services
from review_queues.models import ReviewQueue


def _day(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise CommandError(f"Not a date (YYYY-MM-DD): {text!r}") from exc


class Command(BaseCommand):
    help = (
        "Enter the audits completed between --from and --to (inclusive days) into a review queue as if they "
        "completed now (rules and sample; closed weeks topped up). Idempotent: entered audits stay as they are."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--queue", type=int, help="The queue's id (default: every active queue).")
        parser.add_argument("--from", dest="date_from", help="First completion day, YYYY-MM-DD.")
        parser.add_argument("--to", dest="date_to", help="Last completion day, YYYY-MM-DD.")

    def handle(self, *args, queue=None, date_from=None, date_to=None, **options) -> None:
        start, end = _day(date_from), _day(date_to)
        if start and end and start > end:
            raise CommandError("--from is after --to.")
        if queue is not None:
            try:
                queues = [services.queue_get(queue)]
            except NotFoundError as exc:
                raise CommandError(str(exc)) from exc
            if not queues[0].is_active:
                raise CommandError(f"Review queue {queue} is inactive.")
        else:
            queues = list(ReviewQueue.objects.filter(is_active=True).prefetch_related("configs"))
        for q in queues:
            counts = services.backfill(q, date_from=start, date_to=end)
            self.stdout.write(
                f"queue {q.pk} ({q.name}): {counts['entered']} entered, {counts['sample_floor']} sample floor"
            )
