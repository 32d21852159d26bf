"""Fixtures of the costs tests: known prices, fiches of two groups, usage rows."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from django.utils import timezone

from costs.models import UsageRecord
from fiches.models import FicheCache
from tests.audits.conftest import sent  # noqa: F401 (the audits tests' fixture, shared)
from tests.chat.conftest import audit, chatter, fiche, llm, sim  # noqa: F401 (the chat tests' fixtures, shared)

PRICES = {
    "sim-judge-1": {"input": 0.15, "cached_input": 0.075, "output": 0.60},
    "big-model": {"input": 2.00, "output": 8.00},  # no cached price: cached tokens at input
}
DEFAULT_PRICE = {"input": 2.50, "cached_input": 1.25, "output": 10.00}


@pytest.fixture(autouse=True)
def _prices(settings):
    settings.LLM_PRICES = PRICES
    settings.LLM_DEFAULT_PRICE = DEFAULT_PRICE
    settings.STT_PRICE_PER_HOUR = "0.40"
    settings.COST_CURRENCY = "USD"
    settings.BUDGET_MODE = "wait"
    for name in ("BUDGET_LLM_DAILY", "BUDGET_LLM_USER_DAILY", "BUDGET_STT_DAILY", "BUDGET_STT_USER_DAILY"):
        setattr(settings, name, None)


@pytest.fixture
def fiches(db) -> dict[str, FicheCache]:
    """F-LYON (Lyon-2, sold by CRM user u-1), F-LYON-2 (Lyon-2, u-2), F-MRS (Marseille, u-3)."""
    rows = [("F-LYON", "Lyon-2", "u-1"), ("F-LYON-2", "Lyon-2", "u-2"), ("F-MRS", "Marseille", "u-3")]
    return {
        fiche_id: FicheCache.objects.create(
            fiche_id=fiche_id, sales_date=date(2026, 2, 2), groupe=groupe, crm_user_id=crm_user, details_success=True
        )
        for fiche_id, groupe, crm_user in rows
    }


def usage(**fields: Any) -> UsageRecord:
    """A usage row: an LLM call of sim-judge-1 today unless told otherwise."""
    fields.setdefault("kind", "llm")
    fields.setdefault("purpose", "audit_step" if fields["kind"] == "llm" else "transcription")
    if fields["kind"] == "llm":
        fields.setdefault("model", "sim-judge-1")
    fields.setdefault("day", timezone.localdate())
    return UsageRecord.objects.create(**fields)
