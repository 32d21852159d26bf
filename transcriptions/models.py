"""Transcriptions: one per recording, and the per-fiche runs that produce them.

- ``Transcription``: the speech-to-text result of one recording (status, text, word timings,
  the speaker map that says which diarized speaker is the agent), with its attempts and error.
- ``TranscriptionRun``: one request to transcribe a fiche's recordings. Like a progressive fetch
  job: the recordings to do, the ones done and failed; a serialized updater moves it and ends it
  exactly once (completed / partial / failed); a run made for a batch item points at its batch
  (``batches.Batch``: batches are generic, see the ``batches`` app).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

from core.fields import FastJSONField
from core.runs import TrackedRun


class TranscriptionStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class Transcription(models.Model):
    """The transcription of one recording (``call_id``)."""

    recording = models.OneToOneField("fiches.Recording", on_delete=models.CASCADE, related_name="transcription")
    fiche = models.ForeignKey("fiches.FicheCache", on_delete=models.CASCADE, related_name="transcriptions")
    call_id = models.CharField(max_length=128, unique=True)
    run = models.ForeignKey(
        "TranscriptionRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="transcriptions",
        help_text="The run that last claimed this recording.",
    )
    status = models.CharField(max_length=16, choices=TranscriptionStatus.choices, default=TranscriptionStatus.PENDING)
    provider = models.CharField(max_length=32, default="elevenlabs")
    model = models.CharField(max_length=64, blank=True, default="")
    language = models.CharField(max_length=16, null=True, blank=True)
    language_probability = models.FloatField(null=True, blank=True)
    text = models.TextField(blank=True, default="")
    words = FastJSONField(default=list, help_text="Word timings: {text, start, end, type, speaker_id, logprob}.")
    speaker_map = models.JSONField(
        default=dict, help_text='Diarized speaker id → "agent" | "client" (a human may correct it).'
    )
    duration_seconds = models.FloatField(null=True, blank=True)
    vendor_transcription_id = models.CharField(max_length=128, null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Calls sent to the vendor for this recording.")
    claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="The claim's heartbeat: renewed while a worker transcribes it (processing)."
    )
    claim_token = models.CharField(max_length=32, null=True, blank=True, help_text="Who transcribes it now.")
    transcribed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "transcriptions"
        ordering = ["fiche_id", "call_id"]
        indexes = [
            models.Index(fields=["fiche", "status"], name="transcriptions_fiche_status"),
            models.Index(fields=["status", "updated_at"], name="transcriptions_status"),
        ]

    def __str__(self) -> str:
        return f"{self.call_id} ({self.status})"


class RunStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"


TERMINAL_RUN_STATUSES = (RunStatus.COMPLETED, RunStatus.PARTIAL, RunStatus.FAILED)


class Priority(models.TextChoices):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


def _call_ids() -> ArrayField:
    return ArrayField(models.CharField(max_length=128), default=list, blank=True)


class TranscriptionRun(TrackedRun):
    """One request to transcribe a fiche's recordings, driven to exactly one terminal state."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    fiche = models.ForeignKey("fiches.FicheCache", on_delete=models.CASCADE, related_name="transcription_runs")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    force = models.BooleanField(default=False)
    total_recordings = models.PositiveIntegerField(default=0)
    call_ids = _call_ids()  # the recordings this run transcribes
    done_call_ids = _call_ids()
    failed_call_ids = _call_ids()
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    batch = models.ForeignKey("batches.Batch", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    waiting_budget_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Pending, not dispatched: the daily speech-to-text budget is reached (costs); the reconciler "
        "dispatches it when the budget allows.",
    )

    TERMINAL_STATUSES = TERMINAL_RUN_STATUSES

    class Meta:
        db_table = "transcription_runs"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["fiche", "created_at"], name="transcription_runs_fiche"),
            models.Index(fields=["status", "created_at"], name="transcription_runs_status"),
        ]

    def __str__(self) -> str:
        return f"{self.id} fiche {self.fiche_id} {self.status}"

    @property
    def remaining_call_ids(self) -> list[str]:
        processed = set(self.done_call_ids) | set(self.failed_call_ids)
        return [c for c in self.call_ids if c not in processed]
