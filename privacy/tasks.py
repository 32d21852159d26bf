"""Privacy tasks: thin (a purge is idempotent: what is purged is no longer due, and concurrent runs split the
rows between them, ``FOR UPDATE SKIP LOCKED``)."""

from __future__ import annotations

from celery import shared_task

from privacy import retention


@shared_task(name="privacy.tasks.purge_personal_data", ignore_result=True)
def purge_personal_data() -> dict[str, int | None]:
    """Beat (daily): purge personal data past its retention; returns the rows changed per kind (``None``: kept
    forever). The run's ``PurgeReport`` says whether it reached the end (the next run goes on)."""
    return dict(retention.purge_due().purged)
