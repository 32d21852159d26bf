"""Celery tasks of the fiches app: thin wrappers that re-load by id and call one service."""

from __future__ import annotations

import logging

from celery import shared_task

from config.locks import LockNotAcquired
from config.task_retry import error_budget_left, retry_after_error, retry_waiting
from fiches.clients.crm import CrmTransientError
from fiches.services.details import fiche_ensure_details

logger = logging.getLogger("fiches.tasks")

FICHE_FETCH_MAX_ERRORS = 5


@shared_task(bind=True, name="fiches.tasks.crm.fiche_fetch")
def fiche_fetch(self, fiche_id: str, force_refresh: bool = False, error_attempts: int = 0) -> dict:
    """Fetch and persist one fiche's details (idempotent; one at a time per fiche).

    A fetch of the same fiche already running makes this one wait its turn, then usually find
    the details cached. Transient CRM errors retry with backoff, at most 5 times.
    """
    try:
        outcome = fiche_ensure_details(fiche_id=str(fiche_id), force_refresh=force_refresh)
    except LockNotAcquired:
        raise retry_waiting(self, countdown=2) from None
    except CrmTransientError as exc:
        if not error_budget_left(self, max_errors=FICHE_FETCH_MAX_ERRORS):
            logger.error("fiche_fetch_failed", extra={"fiche_id": fiche_id, "error": str(exc)})
            raise
        logger.warning("fiche_fetch_retry", extra={"fiche_id": fiche_id, "error": str(exc), "attempt": error_attempts})
        raise retry_after_error(self, exc) from None
    return {
        "fiche_id": outcome.row.fiche_id,
        "fetched": outcome.fetched,
        "refresh_skipped": outcome.refresh_skipped,
        "recordings": outcome.row.recordings_count,
    }
