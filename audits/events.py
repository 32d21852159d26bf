"""The payloads of the audit pipeline's realtime events (``../shared/seeds/003``), built in one place:
the services say what happened, these say how the contract spells it. Each returns ``(event, payload)``
for ``realtime.publisher.publish`` / ``publish_many``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from audits.models import Audit
from core.formats import iso

Event = tuple[str, dict[str, Any]]


def started(audit: Audit, *, total_steps: int, at: datetime) -> Event:
    return (
        "audit.started",
        {
            "audit_id": str(audit.pk),
            "fiche_id": audit.fiche.fiche_id,
            "audit_config_id": str(audit.config_id),
            "audit_config_name": audit.config_version.name,
            "total_steps": total_steps,
            "started_at": iso(at),
            "status": "started",
        },
    )


def config_loaded(audit: Audit, *, total_steps: int) -> Event:
    return (
        "audit.config_loaded",
        {
            "config_id": str(audit.config_id),
            "config_name": audit.config_version.name,
            "steps_count": total_steps,
            "status": "loaded",
        },
    )


def fiche_fetch_started(fiche_id: str, *, from_cache: bool) -> Event:
    return "audit.fiche_fetch_started", {"fiche_id": fiche_id, "from_cache": from_cache, "status": "fetching"}


def fiche_fetch_completed(fiche: Any, *, from_cache: bool) -> Event:
    return (
        "audit.fiche_fetch_completed",
        {
            "fiche_id": fiche.fiche_id,
            "recordings_count": fiche.recordings_count,
            "prospect_name": fiche.prospect_name or "",
            "from_cache": from_cache,
            "status": "fetched",
        },
    )


def transcription_check(fiche_id: str, *, recordings: int, missing: int) -> Event:
    return (
        "audit.transcription_check",
        {
            "fiche_id": fiche_id,
            "total_recordings": recordings,
            "transcribed": recordings - missing,
            "needs_transcription": missing,
            "status": "checked",
        },
    )


def timeline_generated(fiche_id: str, timeline: Any) -> Event:
    return (
        "audit.timeline_generated",
        {
            "fiche_id": fiche_id,
            "recordings_count": timeline.recordings,
            "total_chunks": len(timeline.chunks),
            "status": "generated",
        },
    )


def analysis_started(audit: Audit, *, total_steps: int) -> Event:
    return (
        "audit.analysis_started",
        {
            "audit_id": str(audit.pk),
            "fiche_id": audit.fiche.fiche_id,
            "total_steps": total_steps,
            "model": audit.model,
            "status": "analyzing",
        },
    )
