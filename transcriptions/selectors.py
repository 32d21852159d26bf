"""Reads of transcriptions: a fiche's transcription status, one recording, and the fiche's
conversation (timeline turns and search chunks), derived on read and cached in Redis until a
transcription of the fiche changes."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.db.models import Q
from redis.exceptions import RedisError

from core.formats import iso
from core.redis import get_redis
from costs.selectors import stt_cost_block
from fiches.models import FicheCache, Recording
from privacy.redaction import redact_text, redact_words, words_text
from transcriptions.models import (
    TERMINAL_RUN_STATUSES,
    RunStatus,
    Transcription,
    TranscriptionRun,
    TranscriptionStatus,
)
from transcriptions.timeline import build_turns, chunk_turns, render_timeline

logger = logging.getLogger("transcriptions.selectors")

# Bump when the redactor changes what it finds: cached redacted timelines are then rebuilt.
REDACTOR_VERSION = 1


def recording_dict(
    row: Transcription | None, rec: Recording, *, include_words: bool = False, redacted: bool = False
) -> dict[str, Any]:
    """A recording's transcription as the API shows it; ``redacted``: its personal data replaced by placeholders
    (a reader who does not see personal data in clear, ``privacy.access``), in the words and the text."""
    words = row.words if row and row.transcribed_at else []
    text = row.text if row and row.transcribed_at else None
    if redacted and text is not None:
        words = redact_words(words)
        text = words_text(words) if words else redact_text(text)
    data: dict[str, Any] = {
        "call_id": rec.call_id,
        "status": row.status if row else "none",
        "language": row.language if row else None,
        "duration_seconds": (
            row.duration_seconds if row and row.duration_seconds is not None else rec.duration_seconds
        ),
        "text": text,
        "error": row.error if row else None,
        "attempts": row.attempts if row else 0,
        "transcribed_at": iso(row.transcribed_at) if row else None,
    }
    if include_words:
        data["words"] = words
        data["speaker_map"] = row.speaker_map if row else {}
    return data


def fiche_status(fiche: FicheCache, *, include_words: bool = False, redacted: bool = False) -> dict[str, Any]:
    """``{fiche_id, status, total_recordings, transcribed, failed, recordings: [...]}``: the status is
    the latest run's while it runs, else derived from the recordings (``none`` when nothing was asked,
    ``completed`` when every recording is transcribed, ``failed`` when none is and some failed,
    ``partial`` otherwise); ``waiting_budget``: its latest run waits for the daily speech-to-text budget;
    ``cost``: what transcribing the fiche's recordings cost, and its latest run (one query)."""
    recordings = list(Recording.objects.filter(fiche=fiche).order_by("started_at", "call_id"))
    rows = {t.call_id: t for t in Transcription.objects.filter(fiche=fiche)}
    transcribed = sum(1 for r in recordings if (t := rows.get(r.call_id)) and t.status == TranscriptionStatus.COMPLETED)
    failed = sum(1 for r in recordings if (t := rows.get(r.call_id)) and t.status == TranscriptionStatus.FAILED)
    latest = TranscriptionRun.objects.filter(fiche=fiche).order_by("-created_at").first()
    if latest is not None and latest.status not in TERMINAL_RUN_STATUSES:
        status = str(latest.status)
    elif not rows:
        status = "none"
    elif recordings and transcribed == len(recordings):
        status = RunStatus.COMPLETED
    elif transcribed == 0 and failed:
        status = RunStatus.FAILED
    elif transcribed or failed:
        status = RunStatus.PARTIAL
    else:
        status = RunStatus.PENDING
    return {
        "fiche_id": fiche.fiche_id,
        "status": str(status),
        "total_recordings": len(recordings),
        "transcribed": transcribed,
        "failed": failed,
        "run_id": str(latest.pk) if latest else None,
        "waiting_budget": latest is not None and latest.waiting_budget_since is not None,
        "recordings": [
            recording_dict(rows.get(r.call_id), r, include_words=include_words, redacted=redacted) for r in recordings
        ],
        "cost": stt_cost_block(fiche_id=fiche.pk, run_id=latest.pk if latest else None),
    }


def recording_for_fiche(fiche: FicheCache, call_id: str, *, redacted: bool = False) -> dict[str, Any] | None:
    rec = Recording.objects.filter(fiche=fiche, call_id=call_id).first()
    if rec is None:
        return None
    row = Transcription.objects.filter(call_id=call_id).first()
    return {"fiche_id": fiche.fiche_id, **recording_dict(row, rec, include_words=True, redacted=redacted)}


# --- The timeline -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """A fiche's conversation: its turns (``{call_id, speaker, start, end, text}``), search chunks,
    the text the LLM reads, and the recordings it covers."""

    fiche_id: str
    turns: list[dict[str, Any]]
    chunks: list[dict[str, Any]]
    text: str
    recordings: int


def _timeline_key(fiche_id: str, stamps: list[tuple[str, Any]], redacted: bool) -> str:
    digest = hashlib.blake2b(repr(stamps).encode(), digest_size=12).hexdigest()
    variant = f":r{REDACTOR_VERSION}" if redacted else ""
    return f"timeline:{fiche_id}:{digest}{variant}"


def llm_timeline_for(fiche: FicheCache) -> Timeline:
    """The timeline an LLM reads (audits, reruns, tools): redacted unless ``LLM_REDACT_PII`` is off."""
    return timeline_for(fiche, redacted=settings.LLM_REDACT_PII)


def timeline_for(fiche: FicheCache, *, redacted: bool = False) -> Timeline:
    """The fiche's turns (recordings in start order, then time), chunks and rendered text, from
    every recording that has a transcript; ``redacted``: built from the words with their personal data replaced
    by placeholders (``privacy.redaction``; a placeholder keeps its words' times, so turns keep theirs). Cached
    in Redis (``RETENTION_TIMELINE_CACHE_SECONDS``) under the transcripts' update times: a new or changed
    transcript gives a new key at once."""
    transcribed = Q(transcribed_at__isnull=False)
    stamps = list(
        Transcription.objects.filter(transcribed, fiche=fiche).order_by("call_id").values_list("call_id", "updated_at")
    )
    key = _timeline_key(fiche.fiche_id, stamps, redacted)
    try:
        cached = get_redis().get(key)
    except RedisError:
        cached = None
    if cached is not None:
        data = orjson.loads(cached)
        return Timeline(fiche.fiche_id, data["turns"], data["chunks"], data["text"], data["recordings"])
    rows = list(
        Transcription.objects.filter(transcribed, fiche=fiche)
        .select_related("recording")
        .only("call_id", "words", "speaker_map", "recording__started_at", "recording__direction")
    )
    recordings = [
        {
            "call_id": row.call_id,
            "started_at": row.recording.started_at,
            "words": redact_words(row.words) if redacted else row.words,
            "speaker_map": row.speaker_map,
        }
        for row in rows
    ]
    turns = build_turns(recordings)
    chunks = chunk_turns(turns)
    meta = {row.call_id: {"started_at": row.recording.started_at, "direction": row.recording.direction} for row in rows}
    text = render_timeline(turns, meta)
    timeline = Timeline(fiche.fiche_id, turns, chunks, text, len(rows))
    try:
        get_redis().set(
            key,
            orjson.dumps({"turns": turns, "chunks": chunks, "text": text, "recordings": len(rows)}),
            ex=max(1, settings.RETENTION_TIMELINE_CACHE_SECONDS),
        )
    except RedisError:
        logger.warning("timeline_cache_unavailable", extra={"fiche_id": fiche.fiche_id})
    return timeline


def authorize_transcription_channel(user: Any, fiche_id: str) -> None:
    """``private-transcription-{fiche_id}``: transcriptions.read and the fiche cached and in the user's
    transcriptions scope (the rule of ``GET /api/transcriptions/{fiche_id}``)."""
    from accounts.grants import has_grant
    from accounts.permissions import can_access
    from core.exceptions import PermissionDeniedError

    if not has_grant(user, "transcriptions", "read"):
        raise PermissionDeniedError("missing transcriptions.read")
    row = FicheCache.objects.filter(fiche_id=fiche_id).first()
    if row is None or not can_access(user, "transcriptions", row):
        raise PermissionDeniedError("fiche unknown or outside your scope")
