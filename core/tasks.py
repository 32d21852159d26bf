"""The kernel's tasks module: it names the durable per-run updater of every outcome inbox
(``apply_outcome``, defined with the inbox in ``core.inbox``) for Celery's autodiscovery, and holds the
database-connection hygiene every unit task relies on.

Celery's Django fixup closes every database connection before and after each task unless
``CELERY_DB_REUSE_MAX`` is set: each unit of every workflow then opens a new Postgres backend (a fork,
authentication, cold catalog caches), which cost more than the unit's own statements. With
``CELERY_DB_REUSE_MAX`` set, connections are kept across tasks, and ``_db_connections_before_task``
makes each task start as a request does (``close_old_connections``): a connection that failed, or
outlived ``CONN_MAX_AGE``, is closed, and the next use of the one kept is health-checked
(``CONN_HEALTH_CHECKS``). With the fixup's default it changes nothing.
"""

from __future__ import annotations

from typing import Any

from celery import signals
from django.db import connections

from core.inbox import apply_outcome

__all__ = ["apply_outcome"]  # the durable updater, defined with its inbox (core.inbox)


@signals.task_prerun.connect(weak=False, dispatch_uid="core.tasks.db_connections_before_task")
def _db_connections_before_task(task: Any = None, **_: Any) -> None:
    """Close the connections that failed or outlived ``CONN_MAX_AGE`` (see the module). Never inside a
    transaction (an eager task in a test, a task called from a request) nor for an eager task."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    for conn in connections.all(initialized_only=True):
        if not conn.in_atomic_block:
            conn.close_if_unusable_or_obsolete()
