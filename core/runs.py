"""The tracked run: the lifecycle every workflow's run shares (a progressive fetch job, a transcription
run, an audit, an automation run), and its exactly-once end.

A run is created pending, its orchestrator marks it started and dispatched (its units fanned out), its
serialized updater records progress (``last_progress_at``) as unit outcomes come in, and it ends
exactly once: ``end_once`` is a conditional update on a status not yet terminal, so of any number of
racing enders (the updater, the reconciler, an operator) exactly one changes
the row, and only that one publishes the terminal event and tells the finish hooks. The reconciler
(``core.reconcile``) reads ``last_progress_at`` / ``redriven_at`` to re-drive a stalled run and to end
one that made no progress for its deadline.

Each subclass declares its ``status`` field (its own states) and ``TERMINAL_STATUSES``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, ClassVar

from django.db import models, transaction
from django.utils import timezone

from core.metrics import RUN_DURATION, RUN_ENDED, run_kind

logger = logging.getLogger("core.runs")


class TrackedRun(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="When its units were fanned out.")
    last_progress_at = models.DateTimeField(null=True, blank=True, help_text="When a unit's outcome was last applied.")
    redriven_at = models.DateTimeField(null=True, blank=True, help_text="When the reconciler last re-drove it.")
    completed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)

    TERMINAL_STATUSES: ClassVar[tuple[str, ...]] = ()

    class Meta:
        abstract = True

    @property
    def is_terminal(self) -> bool:
        return getattr(self, "status", None) in self.TERMINAL_STATUSES

    @property
    def progressed_at(self) -> datetime:
        """When it last moved: its last progress, else its dispatch, else its creation."""
        return self.last_progress_at or self.dispatched_at or self.created_at

    @classmethod
    def end_once(cls, pk: Any, status: str, *, now: datetime | None = None, **fields: Any) -> bool:
        """End the run ``pk`` with ``status`` (and ``fields``) unless it has ended: True for the one
        caller whose update changed the row (that caller publishes the end)."""
        now = now or timezone.now()
        fields.setdefault("completed_at", now)
        fields.setdefault("last_progress_at", now)
        rows = cls._default_manager.filter(pk=pk).exclude(**{"status__in": cls.TERMINAL_STATUSES})
        ended = rows.update(**{"status": status, **fields}) == 1  # (status: declared by each subclass)
        if ended:
            ended_at = fields["completed_at"]
            transaction.on_commit(lambda: cls._count_end(pk, status, ended_at), robust=True)
        return ended

    @classmethod
    def _count_end(cls, pk: Any, status: str, ended_at: Any) -> None:
        """The end in the metrics, once its transaction committed (the one ender: counted once):
        ``workflow_runs_ended_total`` and ``workflow_run_duration_seconds`` (created to ended)."""
        try:
            kind = run_kind(cls)
            RUN_ENDED.labels(kind, str(status)).inc()
            created_at = cls._default_manager.filter(pk=pk).values_list("created_at", flat=True).first()
            if isinstance(created_at, datetime) and isinstance(ended_at, datetime):
                RUN_DURATION.labels(kind, str(status)).observe(max((ended_at - created_at).total_seconds(), 0.0))
        except Exception:  # a metric never fails an end
            logger.warning("run_end_metrics_failed", extra={"kind": cls.__name__, "status": status}, exc_info=True)

    @classmethod
    def mark_progress(cls, pk: Any, *, now: datetime | None = None) -> None:
        cls._default_manager.filter(pk=pk).update(last_progress_at=now or timezone.now())
