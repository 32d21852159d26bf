"""Short leases renewed by a heartbeat while the work runs (Temporal's activity heartbeats are the model).

A unit of work (an audit step, a recording) is claimed with a short lease (``CLAIM_LEASE_SECONDS``,
30 s by default) instead of a worst-case one; so is a slot of a provider's concurrency cap
(``core.limits.Semaphore``). While the holder works, one daemon thread per process — the
``keeper`` — renews every lease it holds every ``CLAIM_HEARTBEAT_SECONDS`` (a third of the lease). A
worker that dies stops renewing: its claims and slots come back within one lease, and the reconciler
re-drives the work (``core.reconcile``). A lease the keeper finds taken over (its renewal changed no
row: the holder paused longer than its lease and another worker claimed the unit) is marked ``lost``;
the holder's own writes are fenced by the claim (a conditional update on its token) anyway.

    with keep_alive(claim_lease(AuditStepResult, row.pk, token)):
        ...  # the LLM call: minutes, renewed every 10 s

The keeper thread opens its own database connection (Django connections are per thread) and renews
with one statement per lease.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

logger = logging.getLogger("core.leases")


def lease_seconds() -> float:
    return float(settings.CLAIM_LEASE_SECONDS)


def heartbeat_seconds() -> float:
    return float(settings.CLAIM_HEARTBEAT_SECONDS)


def new_token() -> str:
    return uuid.uuid4().hex


@dataclass(eq=False)
class Lease:
    """Something this process holds and must keep renewing: ``renew()`` returns False once lost."""

    name: str
    renew: Callable[[], bool]
    lost: bool = field(default=False)


def claim_lease(model: Any, pk: Any, token: str, *, field_name: str = "claimed_at") -> Lease:
    """The lease of a database claim: ``model`` row ``pk`` held while its ``claim_token`` is ``token``;
    renewing moves ``field_name`` (the heartbeat) to now."""

    def renew() -> bool:
        return model._default_manager.filter(pk=pk, claim_token=token).update(**{field_name: timezone.now()}) == 1

    return Lease(f"{model._meta.label}:{pk}", renew)


class _Keeper:
    """One thread per process renewing every held lease each heartbeat."""

    def __init__(self) -> None:
        self._leases: set[Lease] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._wake = threading.Event()

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self._leases.add(lease)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()  # a forked child starts its own keeper
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()

    def release(self, lease: Lease) -> None:
        with self._lock:
            self._leases.discard(lease)

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._leases)

    def renew_all(self) -> None:
        for lease in self.held():
            try:
                if not lease.renew():
                    lease.lost = True
                    self.release(lease)
                    logger.warning("lease_lost", extra={"lease": lease.name})
            except Exception:  # the database or Redis blinked: the next beat tries again
                logger.warning("lease_renew_failed", exc_info=True, extra={"lease": lease.name})
                close_old_connections()

    def _run(self) -> None:
        while True:
            time.sleep(heartbeat_seconds())
            if not self.held():
                continue
            self.renew_all()
            if connection.connection is not None and not self.held():
                connection.close()  # idle: give the connection back


keeper = _Keeper()


@contextmanager
def keep_alive(*leases: Lease) -> Iterator[tuple[Lease, ...]]:
    """Renew ``leases`` every heartbeat for the duration of the block."""
    for lease in leases:
        keeper.hold(lease)
    try:
        yield leases
    finally:
        for lease in leases:
            keeper.release(lease)
