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
