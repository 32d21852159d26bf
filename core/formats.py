"""Value formats shared by API payloads, events and webhooks."""

from __future__ import annotations

from datetime import date


def iso(value: date | None) -> str | None:
    """ISO 8601 of a date or datetime (a datetime keeps its offset), or None."""
    return value.isoformat() if value is not None else None
