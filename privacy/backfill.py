"""Card numbers and one-time codes stored before they were redacted at ingestion: found and redacted in place.

``redact_stored(...)`` walks the transcripts (words and text) and the chat messages (content) by primary key, in
batches of ``RETENTION_PURGE_BATCH_SIZE`` (each batch one short transaction, its rows locked ``SKIP LOCKED``: a row
being written is left for the next run), and replaces what ``privacy.redaction.STORAGE_KINDS`` finds, as
``transcriptions.services.runs.redact_at_ingestion`` does for new transcripts. Rows with nothing to redact are
not written. Run once after upgrading (``manage.py redact_stored_data``); running it again changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from chat.models import ChatMessage
from privacy.redaction import STORAGE_KINDS, redact_text, redact_transcript
from transcriptions.models import Transcription, TranscriptionStatus

logger = logging.getLogger("privacy.backfill")


def _transcripts(after: int, size: int, dry_run: bool) -> tuple[int | None, int]:
    with transaction.atomic():
        rows = list(
            Transcription.objects.filter(pk__gt=after, status=TranscriptionStatus.COMPLETED)
            .order_by("pk")
            .select_for_update(skip_locked=True)
            .only("pk", "words", "text")[:size]
        )
        changed = []
        for row in rows:
            redacted = redact_transcript(row.words, row.text, STORAGE_KINDS)
            if redacted is not None:
                row.words, row.text = redacted
                changed.append(row)
        if changed and not dry_run:
            Transcription.objects.bulk_update(changed, ["words", "text"])
    return (rows[-1].pk if len(rows) == size else None), len(changed)


def _messages(after: int, size: int, dry_run: bool) -> tuple[int | None, int]:
    with transaction.atomic():
        rows = list(
            ChatMessage.objects.filter(pk__gt=after)
            .order_by("pk")
            .select_for_update(skip_locked=True)
            .only("pk", "content")[:size]
        )
        changed = []
        for row in rows:
            content = redact_text(row.content, STORAGE_KINDS)
            if content != row.content:
                row.content = content
                changed.append(row)
        if changed and not dry_run:
            ChatMessage.objects.bulk_update(changed, ["content"])
    return (rows[-1].pk if len(rows) == size else None), len(changed)


def redact_stored(*, dry_run: bool = False) -> dict[str, Any]:
    """``{"transcripts": n, "chat_messages": n}``: the rows where a card number or a code was (or, with
    ``dry_run``, is) redacted."""
    size = settings.RETENTION_PURGE_BATCH_SIZE
    counts: dict[str, Any] = {}
    for name, step in (("transcripts", _transcripts), ("chat_messages", _messages)):
        total, after = 0, 0
        while True:
            last, changed = step(after, size, dry_run)
            total += changed
            if last is None:
                break
            after = last
        counts[name] = total
    logger.info("stored_data_redacted", extra={**counts, "dry_run": dry_run})
    return counts
