"""What the privacy app records: each retention purge (what it removed, per kind of data) and each erasure
request (whose data, as a keyed digest of the identifier, never the identifier itself; what was removed)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models


class PurgeReport(models.Model):
    """One run of the retention purge: rows removed or blanked per kind of data, and whether it reached the
    end of what was due (``complete``) or stopped at its batch cap (the next run goes on)."""

    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    purged = models.JSONField(default=dict, help_text="Kind of data → rows removed or blanked.")
    complete = models.BooleanField(default=False, help_text="False when a kind stopped at its batch cap.")
    error = models.TextField(null=True, blank=True)

    class Meta:
        db_table = "privacy_purge_reports"
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"purge {self.started_at:%Y-%m-%d %H:%M} {self.purged}"


class SubjectKind(models.TextChoices):
    FICHE = "fiche"
    PHONE = "phone"
    EMAIL = "email"


class ErasureRequest(models.Model):
    """One erasure of a prospect's data. Holds no personal data: the identifier asked for is kept as a keyed
    digest (HMAC-SHA256 with the secret key, of its normalized form: a repeated request is recognizable, the
    value is not recoverable); ``fiche_ids`` are the CRM's references of the sales erased."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subject_kind = models.CharField(max_length=8, choices=SubjectKind.choices)
    subject_digest = models.CharField(max_length=64, db_index=True)
    fiche_ids = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    counts = models.JSONField(default=dict, help_text="Kind of data → rows removed or redacted.")
    reason = models.TextField(blank=True, default="")
    via = models.CharField(max_length=16, default="command", help_text="command | admin")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "privacy_erasure_requests"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"erasure {self.subject_kind} {self.created_at:%Y-%m-%d %H:%M}"
