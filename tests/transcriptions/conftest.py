"""Fixtures shared by the transcriptions tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fiches.simulator.server import CrmSimulator, SimulatorConfig


@pytest.fixture(scope="module")
def crm_sim() -> Iterator[CrmSimulator]:
    """The CRM simulator (seed 42, 6 fiches a day) for a module."""
    with CrmSimulator(SimulatorConfig(seed=42, fiches_per_day=6)) as sim:
        yield sim
