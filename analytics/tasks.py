"""Analytics tasks: thin and idempotent (a refresh rewrites a pair's facts from the audits)."""

from __future__ import annotations

from celery import shared_task

from analytics import services
from core.retry import INFRA_RETRY


@shared_task(name="analytics.tasks.analytics_refresh", ignore_result=True, **INFRA_RETRY)
def analytics_refresh(pairs: list[list[int]]) -> int:
    """Refresh the facts of these (fiche pk, config id) pairs."""
    return services.refresh_pairs((int(f), int(c)) for f, c in pairs)


@shared_task(name="analytics.tasks.analytics_rebuild_config", ignore_result=True, **INFRA_RETRY)
def analytics_rebuild_config(config_id: int) -> int:
    """Rebuild every fact of a config (its active version changed)."""
    return services.rebuild_config(int(config_id))


@shared_task(name="analytics.tasks.reconcile_analytics", ignore_result=True)
def reconcile_analytics() -> dict[str, int]:
    """Beat: repair the facts a lost message left stale."""
    return services.reconcile()
