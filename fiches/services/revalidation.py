"""Fetching sales lists from the CRM into the cache (per day), one fetch per date at a time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import date

from django.conf import settings
from django.utils import timezone

from config.locks import redis_lock
from fiches import selectors
from fiches.clients import crm
from fiches.services.cache import cache_fiche_sales_summaries

logger = logging.getLogger("fiches.revalidation")


@dataclass(frozen=True)
class DayRefresh:
    fetched: bool  # the CRM was called
    fiches: int


def date_lock_ttl() -> float:
    return settings.CRM_TIMEOUT_SECONDS + crm.CONNECT_TIMEOUT_SECONDS + 60


def sales_day_refresh(
    *,
    day: date,
    force: bool = False,
    job_id: str | None = None,
    crm_gate: Callable[[], AbstractContextManager] = nullcontext,
) -> DayRefresh:
    """Cache ``day``'s sales list from the CRM unless it is covered and not forced.

    Holds the date's Redis lock for the fetch (one CRM fetch per date across all jobs and
    warmups); raises ``LockNotAcquired`` when another fetch of the date runs, and the CRM
    client's errors. ``crm_gate`` wraps the CRM call only (global CRM limits: a slot is held
    for the call, not for the database write that follows).
    """
    with redis_lock(f"date-fetch:{day.isoformat()}", timeout=date_lock_ttl()):
        if not force and selectors.is_date_covered(day):
            return DayRefresh(fetched=False, fiches=0)
        if force:
            logger.info(
                "force_refresh_refetching_cached_date",
                extra={"job_id": job_id, "date": day.isoformat()},
            )
        with crm_gate():
            sales = crm.fetch_sales_with_calls(day, day)
        result = cache_fiche_sales_summaries(sales, revalidated_at=timezone.now(), covered_dates=[day])
        return DayRefresh(fetched=True, fiches=result.fiches)
