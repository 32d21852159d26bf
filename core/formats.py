"""Value formats shared by API payloads, events and webhooks."""

from __future__ import annotations

import uuid
from datetime import date


def iso(value: date | None) -> str | None:
    """ISO 8601 of a date or datetime (a datetime keeps its offset), or None."""
    return value.isoformat() if value is not None else None


def uuid_or_none(value: object) -> uuid.UUID | None:
    """``value`` as a UUID, or None when it is not one (an unknown id, answered 404 like a missing row)."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
