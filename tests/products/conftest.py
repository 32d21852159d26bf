"""Fixtures of the products tests: audit configs made through the audits service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from audits.models import AuditConfig
from audits.services.configs import config_create


def config_data(name: str, *, is_active: bool = True) -> dict[str, Any]:
    """A minimal audit config: one step with one control point."""
    return {
        "name": name,
        "is_active": is_active,
        "thresholds": {"excellent": 90, "bon": 75, "acceptable": 60},
        "steps": [
            {"name": "Présentation", "weight": 1, "control_points": [{"question": "L'agent se présente-t-il ?"}]}
        ],
    }


@pytest.fixture
def make_config(db) -> Callable[..., AuditConfig]:
    def _make(name: str, *, is_active: bool = True) -> AuditConfig:
        return config_create(data=config_data(name, is_active=is_active))

    return _make
