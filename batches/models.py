"""``Batch`` / ``BatchItem``: a batch of fiches (transcriptions, audits), counts derived from its items
by a serialized updater; a batch always ends.

The tables (``batches``, ``batch_items``) were made by the ``transcriptions`` app, where these models
lived first; they moved here without touching the tables (``batches/migrations/0001_initial``).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class BatchStatus(models.TextChoices):
    RUNNING = "running"
    COMPLETED = "completed"


class OperationType(models.TextChoices):
    TRANSCRIPTION = "transcription"
    AUDIT = "audit"


class Batch(models.Model):
    """A batch of fiches to transcribe (or audit). Counts move with its items; it always ends."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    operation_type = models.CharField(max_length=16, choices=OperationType.choices)
    status = models.CharField(max_length=16, choices=BatchStatus.choices, default=BatchStatus.RUNNING)
    total = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    options = models.JSONField(default=dict, help_text="What to do for each item (priority, audit config...).")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    scope_snapshot = models.JSONField(default=dict, help_text="The requester's scope when the batch was made.")
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_progress_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "batches"
        ordering = ["-started_at"]
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        return f"{self.operation_type} batch {self.id} ({self.completed + self.failed}/{self.total})"


class BatchItemStatus(models.TextChoices):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


class BatchItem(models.Model):
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="items")
    fiche_id = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=BatchItemStatus.choices, default=BatchItemStatus.PENDING)
    ref_id = models.CharField(max_length=64, null=True, blank=True, help_text="The run or audit it started.")
    error = models.TextField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "batch_items"
        ordering = ["batch_id", "id"]
        constraints = [models.UniqueConstraint(fields=["batch", "fiche_id"], name="batch_item_fiche")]

    def __str__(self) -> str:
        return f"{self.fiche_id} ({self.status})"
