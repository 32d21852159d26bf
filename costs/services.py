"""Recording what the paid providers were used for: one ``UsageRecord`` per real call.

Callers record **inside the transaction that stores the call's result** (an audit step's answer, a rerun's,
a chat answer, a transcript), under the same claim that fences that store: a retried or duplicated task whose
store is refused records nothing, so a call is counted exactly once. Work whose result is not stored (a call
that failed after the server answered, a chat answer cut short) records what the server reported, where the
caller has it.

Ids, not objects: the work's apps import ``costs``, never the other way round.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from django.db import transaction
from django.utils import timezone

from core.metrics import LLM_TOKENS, STT_AUDIO_SECONDS
from costs.models import UsageKind, UsageRecord
from llm.client import Usage

logger = logging.getLogger("costs")


def record_llm_usage(
    *,
    purpose: str,
    usage: Usage,
    model: str,
    fiche_id: int | None,
    user_id: int | None,
    audit_id: uuid.UUID | str | None = None,
    rerun_id: uuid.UUID | str | None = None,
    conversation_id: int | None = None,
) -> UsageRecord:
    """One LLM call's usage (or a tool loop's, summed): tokens including the cached ones, the model that
    answered; on the work it served and for whom (``user_id``: the work's requester)."""
    now = timezone.now()
    record = UsageRecord.objects.create(
        at=now,
        day=timezone.localdate(now),
        kind=UsageKind.LLM,
        purpose=purpose,
        model=(model or "")[:128],
        prompt_tokens=max(usage.prompt_tokens, 0),
        completion_tokens=max(usage.completion_tokens, 0),
        cached_tokens=min(max(usage.cached_tokens, 0), max(usage.prompt_tokens, 0)),
        estimated=usage.estimated,
        audit_id=audit_id,
        rerun_id=rerun_id,
        conversation_id=conversation_id,
        fiche_id=fiche_id,
        user_id=user_id,
    )
    tokens = {
        "prompt": record.prompt_tokens,
        "completion": record.completion_tokens,
        "cached": record.cached_tokens,
    }
    _count_after_commit(lambda: _count_llm_tokens(record.model, tokens))
    return record


def record_stt_usage(
    *,
    audio_seconds: float,
    model: str,
    fiche_id: int | None,
    user_id: int | None,
    transcription_id: int | None = None,
    transcription_run_id: uuid.UUID | str | None = None,
    purpose: str = "transcription",
) -> UsageRecord:
    """One speech-to-text call's audio seconds, on the transcription and run it served."""
    now = timezone.now()
    seconds = max(float(audio_seconds or 0.0), 0.0)
    record = UsageRecord.objects.create(
        at=now,
        day=timezone.localdate(now),
        kind=UsageKind.STT,
        purpose=purpose,
        model=(model or "")[:128],
        audio_seconds=seconds,
        transcription_id=transcription_id,
        transcription_run_id=transcription_run_id,
        fiche_id=fiche_id,
        user_id=user_id,
    )
    _count_after_commit(lambda: STT_AUDIO_SECONDS.labels(_model_label(record.model)).inc(seconds))
    return record


# --- Metrics: counted when the usage's transaction commits (a rolled-back store counted nothing) ---------------


def _model_label(model: str) -> str:
    return model or "unknown"


def _count_llm_tokens(model: str, tokens: dict[str, int]) -> None:
    for kind, count in tokens.items():  # prompt includes cached (as the usage record)
        if count:
            LLM_TOKENS.labels(_model_label(model), kind).inc(count)


def _count_after_commit(count: Callable[[], None]) -> None:
    """``count`` once the current transaction commits (now without one); a metric never fails the store."""
    transaction.on_commit(count, robust=True)
