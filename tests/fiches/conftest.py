"""Fixtures of the fiche cache tests: one CRM simulator for the session, a dead CRM URL, users.

``crm`` points ``settings.CRM_BASE_URL`` at the session's simulator, resets its knobs and clears its
request log, so each test sees a fresh, well-behaved CRM (and may turn its knobs freely).
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

import pytest

from fiches.simulator import data
from fiches.simulator.server import CrmSimulator, SimulatorConfig

SEED = 42
FICHES_PER_DAY = 8
FIRST_DAY = date(2026, 2, 2)  # a Monday
DEFAULT_CONFIG = SimulatorConfig(seed=SEED, fiches_per_day=FICHES_PER_DAY)


@dataclasses.dataclass(frozen=True)
class SimData:
    """The simulator's data for the session's seed, computed directly (no HTTP)."""

    seed: int = SEED
    fiches_per_day: int = FICHES_PER_DAY
    revision: int = 0

    def sales(self, day: date, *, include_recordings: bool = True) -> list[dict[str, Any]]:
        return data.sales_for_date(
            day,
            seed=self.seed,
            fiches_per_day=self.fiches_per_day,
            revision=self.revision,
            include_recordings=include_recordings,
        )

    def details(self, fiche_id: str) -> dict[str, Any] | None:
        return data.fiche_details(fiche_id, seed=self.seed, fiches_per_day=self.fiches_per_day, revision=self.revision)

    def find(self, predicate: Callable[[dict], bool], *, start: date = FIRST_DAY, days: int = 60) -> dict[str, Any]:
        """The first sale (with recordings) from ``start`` on that satisfies ``predicate``."""
        for n in range(days):
            for sale in self.sales(start + timedelta(days=n)):
                if predicate(sale):
                    return sale
        raise LookupError("no simulated sale matches")

    def unknown_fiche_id(self, *, start: date = FIRST_DAY) -> str:
        """A well-formed fiche id (date + index) that the CRM does not have."""
        for n in range(60):
            day = start + timedelta(days=n)
            count = data.sales_count(day, seed=self.seed, fiches_per_day=self.fiches_per_day)
            if count < 998:
                return data.fiche_id_for(day, 998)
        raise LookupError("no day with fewer than 998 sales")


@pytest.fixture(scope="session")
def sim_data() -> SimData:
    return SimData()


@pytest.fixture(scope="session")
def crm_simulator() -> Iterator[CrmSimulator]:
    simulator = CrmSimulator(dataclasses.replace(DEFAULT_CONFIG)).start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def crm(crm_simulator: CrmSimulator, settings) -> Iterator[CrmSimulator]:
    """The session's simulator, with default knobs and an empty request log; the CRM settings point at it."""
    crm_simulator.config.update({f.name: getattr(DEFAULT_CONFIG, f.name) for f in dataclasses.fields(DEFAULT_CONFIG)})
    crm_simulator.clear_requests()
    settings.CRM_BASE_URL = crm_simulator.url
    settings.CRM_API_KEY = ""
    settings.CRM_TIMEOUT_SECONDS = 5.0
    settings.FICHE_SALES_INCLUDE_RECORDINGS = True
    yield crm_simulator
    crm_simulator.config.update({f.name: getattr(DEFAULT_CONFIG, f.name) for f in dataclasses.fields(DEFAULT_CONFIG)})


def crm_calls(simulator: CrmSimulator, *, by_id: str | None = None, sales: bool = False) -> list[dict]:
    """The simulator's logged contract requests, optionally only the by-id calls (of one fiche) or the sales lists."""
    calls = simulator.requests()
    if by_id is not None:
        return [c for c in calls if c["path"] == f"/api/fiches/by-id/{by_id}"]
    if sales:
        return [c for c in calls if c["path"] == "/api/fiches/sales-with-calls"]
    return calls


@pytest.fixture
def dead_crm_url() -> str:
    """A URL on which nothing listens (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def dead_crm(dead_crm_url: str, settings) -> str:
    """The CRM settings pointed at a dead URL."""
    settings.CRM_BASE_URL = dead_crm_url
    settings.CRM_API_KEY = ""
    settings.CRM_TIMEOUT_SECONDS = 5.0
    return dead_crm_url


# --- Users ---------------------------------------------------------------------------------------


@pytest.fixture
def reader(make_role, make_user):
    """fiches + recordings, read, scope ALL."""
    role = make_role("fiche-reader", fiches=("r", "ALL"), recordings=("r", "ALL"))
    return make_user(role, email="reader@example.com")


@pytest.fixture
def group_user(make_role, make_user):
    """fiches + recordings, read, scope GROUP, groupes ["Lyon-2"]."""
    role = make_role("fiche-group", fiches=("r", "GROUP"), recordings=("r", "GROUP"))
    return make_user(role, email="group@example.com", groupes=["Lyon-2"])


@pytest.fixture
def self_user(make_role, make_user):
    """fiches + recordings, read, scope SELF, crm_user_id u-417."""
    role = make_role("fiche-self", fiches=("r", "SELF"), recordings=("r", "SELF"))
    return make_user(role, email="self@example.com", crm_user_id="u-417", groupes=["Lyon-2"])


@pytest.fixture
def writer(make_role, make_user):
    """fiches read + write, scope ALL (and recordings read ALL)."""
    role = make_role("fiche-writer", fiches=("rw", "ALL"), recordings=("r", "ALL"))
    return make_user(role, email="writer@example.com")
