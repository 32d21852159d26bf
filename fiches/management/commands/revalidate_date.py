"""``manage.py revalidate_date 2026-02-01 [--end 2026-02-07] [--async]``.

Revalidates the sales lists of a date or range from the CRM (one call, 5-day chunks on failure),
inline by default with progress per chunk and a summary; exit code 1 if any chunk failed, 2 for
bad input. ``--async`` enqueues the warm-cache task and prints its id.
"""

from __future__ import annotations

import sys
import time
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from core.exceptions import InvalidInput
from core.limits import LimitBusy
from core.locks import LockNotAcquired
from fiches.clients.crm import CrmError
from fiches.services.jobs import validate_range
from fiches.services.revalidation import ChunkOutcome, WarmPaused, cache_sales_list


def _date(value: str, name: str) -> date:
    try:
        if len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{name} must be a date as YYYY-MM-DD, got {value!r}.", returncode=2) from None


class Command(BaseCommand):
    help = "Revalidate the cached sales lists of a date (or range) from the CRM."

    def add_arguments(self, parser):
        parser.add_argument("date", help="the (first) sales date, YYYY-MM-DD")
        parser.add_argument("--end", help="last sales date of a range (inclusive), YYYY-MM-DD")
        parser.add_argument("--async", dest="run_async", action="store_true", help="enqueue and print the task id")

    def handle(self, *args, date: str, end: str | None = None, run_async: bool = False, **options):
        start = _date(date, "date")
        stop = _date(end, "--end") if end else start
        try:
            validate_range(start, stop)
        except InvalidInput as exc:
            raise CommandError(exc.message, returncode=2) from None

        if run_async:
            from fiches.tasks import cache_sales_list as task

            result = task.delay(start.isoformat(), stop.isoformat())
            self.stdout.write(f"queued {result.id} for {start}..{stop}")
            return

        days = (stop - start).days + 1
        tty = sys.stdout.isatty()
        self.stdout.write(f"revalidating {start}..{stop} ({days} day(s))")
        covered = 0

        def on_chunk(outcome: ChunkOutcome) -> None:
            nonlocal covered
            covered += (outcome.end - outcome.start).days + 1
            status = f"ok, {outcome.fiches} fiches" if outcome.ok else f"FAILED: {outcome.error}"
            line = f"  {outcome.start}..{outcome.end}: {status}"
            if tty:
                filled = int(30 * covered / days)
                line = f"  [{'#' * filled}{'.' * (30 - filled)}] {covered}/{days} days  " + line.strip()
            self.stdout.write(line)

        summary = None
        resume = None
        for _ in range(600):  # wait for busy dates / the CRM rate, never give up silently
            try:
                summary = cache_sales_list(start=start, end=stop, on_chunk=on_chunk, max_wait=30, resume=resume)
                break
            except WarmPaused as paused:  # finished chunks stay done: go on with the others
                resume = paused.state
                time.sleep(paused.retry_after)
            except LockNotAcquired:
                self.stdout.write("  a date of the range is being fetched elsewhere; waiting...")
                time.sleep(1)
            except LimitBusy as exc:
                time.sleep(exc.retry_after)
            except CrmError as exc:
                raise CommandError(f"CRM error: {exc}", returncode=1) from None
        if summary is None:
            raise CommandError("gave up waiting for busy dates", returncode=1)
        self.stdout.write(
            f"done: mode={summary.mode} chunks ok={summary.chunks_ok} failed={summary.chunks_failed} "
            f"fiches={summary.fiches_cached} dates covered={len(summary.dates_covered)}/{days}"
        )
        if summary.chunks_failed:
            raise CommandError(f"{summary.chunks_failed} chunk(s) failed", returncode=1)
