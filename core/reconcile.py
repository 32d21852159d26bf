"""One reconciler for every workflow: every run ends.

Beat calls each workflow's reconciler every minute. For each unfinished run (``core.runs.TrackedRun``),
in this order:

1. its own special state first (``special``: e.g. an audit waiting for its transcripts), if any;
2. no progress for the workflow's **deadline** → ended as timed out (``time_out``; a run that keeps
   progressing is never timed out, however long it runs);
3. nothing left to do but not ended (its end was lost) → ended now (``finish``);
4. no progress for the workflow's **stall** time since its last progress or its last re-drive (or
   never dispatched) → marked re-driven and returned under ``redrive``: the caller sends its
   orchestrator (or its units) again, which is idempotent.

Each step's callable reports whether it acted now; the result lists the run ids per action, under
the names the workflow uses (``names``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from core.metrics import RECONCILER_ACTIONS

logger = logging.getLogger("core.reconcile")


@dataclass
class Reconciler[R]:
    name: str
    stall_seconds: Callable[[], float]
    deadline_seconds: Callable[[], float]
    time_out: Callable[[R], bool]
    is_done: Callable[[R], bool]
    finish: Callable[[R], bool]
    mark_redriven: Callable[[R, datetime], Any]
    progressed_at: Callable[[R], datetime] = lambda run: run.progressed_at  # type: ignore[attr-defined]
    special: Callable[[R, datetime, dict[str, list[str]]], bool] | None = None
    names: dict[str, str] = field(default_factory=dict)

    def key(self, action: str) -> str:
        return self.names.get(action, action)

    def run(self, runs: Iterable[R], *, now: datetime | None = None) -> dict[str, list[str]]:
        now = now or timezone.now()
        stall = timedelta(seconds=self.stall_seconds())
        deadline = timedelta(seconds=self.deadline_seconds())
        actions: dict[str, list[str]] = {self.key(a): [] for a in ("redrive", "finished", "timed_out")}
        for run in runs:
            run_id = str(getattr(run, "pk"))  # noqa: B009 (any model)
            if self.special is not None and self.special(run, now, actions):
                continue
            progressed = self.progressed_at(run)
            if now - progressed > deadline:
                if self.time_out(run):
                    actions[self.key("timed_out")].append(run_id)
                    self._count("timed_out")
                    logger.warning("reconcile_timed_out", extra={"workflow": self.name, "run_id": run_id})
                continue
            if self.is_done(run):
                if self.finish(run):
                    actions[self.key("finished")].append(run_id)
                    self._count("finished")
                    logger.info("reconcile_finished", extra={"workflow": self.name, "run_id": run_id})
                continue
            redriven: Any = getattr(run, "redriven_at", None)
            if now - max(progressed, redriven or progressed) > stall:
                self.mark_redriven(run, now)
                actions[self.key("redrive")].append(run_id)
                self._count("redrive")
                logger.warning("reconcile_redrive", extra={"workflow": self.name, "run_id": run_id})
        return actions

    def _count(self, action: str) -> None:
        """``reconciler_actions_total{workflow, action}`` (``redrive``, ``timed_out``, ``finished``: the generic
        names, not the workflow's ``names``); a metric never fails a pass."""
        try:
            RECONCILER_ACTIONS.labels(self.name, action).inc()
        except Exception:
            logger.warning("reconcile_metrics_failed", extra={"workflow": self.name}, exc_info=True)


def units_may_be_lost(*, queue: str, free_slots: int) -> bool:
    """Whether the units still to do of a run idle for a lease (none held, no progress) can only be lost
    messages — sent, then taken by a worker that died before it claimed them (an unacknowledged message
    comes back only after the broker's visibility timeout) — so that sending them again now is the way
    forward: a provider slot is free (a queued unit would have taken it) and their ``queue`` is empty
    (none is waiting there). Sending one again is safe anyway: its claim decides who does it."""
    from core.dispatch import queue_depth

    return free_slots > 0 and queue_depth(queue) == 0
