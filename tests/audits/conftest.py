"""Fixtures shared by the audits tests."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from django.core.management import call_command

from audits.models import AuditConfig
from fiches.models import FicheCache

FETCHED_AT = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)


@pytest.fixture
def config(db) -> AuditConfig:
    """The seeded French audit config (``seed_audit_configs``)."""
    call_command("seed_audit_configs", verbosity=0)
    return AuditConfig.objects.get()


def cached_fiches(*fiches: tuple[str, str], on: date = date(2026, 2, 2)) -> dict[str, FicheCache]:
    """``cached_fiches(("F-LYON", "Lyon-2"), ...)``: fiches cached with their details, by id."""
    return {
        fiche_id: FicheCache.objects.create(
            fiche_id=fiche_id, sales_date=on, groupe=groupe, details_success=True, details_fetched_at=FETCHED_AT
        )
        for fiche_id, groupe in fiches
    }


@pytest.fixture
def offline_llm(settings):
    """An LLM key (the services refuse without one) and a CRM nobody listens to: no test may call either."""
    settings.LLM_API_KEY = "sk-test"
    settings.CRM_BASE_URL = "http://127.0.0.1:9"


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, tuple]]:
    """Tasks sent to the broker (after commit): recorded, never sent (no worker runs here)."""
    calls: list[tuple[str, tuple]] = []

    def fake_send(task, *args, **kwargs):
        calls.append((getattr(task, "name", repr(task)), args))
        return True

    monkeypatch.setattr("core.dispatch.send", fake_send)
    monkeypatch.setattr("review_queues.services.send", fake_send)
    return calls
