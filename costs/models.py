"""Usage of the paid providers, one row per real call, and the daily budgets reached.

- ``UsageRecord``: what one LLM call (tokens, cached tokens, the model that answered) or one speech-to-text
  call (audio seconds) used, on the work it served (an audit step, a rerun, a chat answer, a transcription)
  and for whom (``user``: the requester of that work; none for unattributed automation work). Its cost is
  **not** stored: prices are settings (``costs.pricing``), so a price change re-prices history and every sum
  is one SQL aggregate. ``day`` is the budget day (``timezone.localdate()`` in ``TIME_ZONE`` when it was
  used): what the daily budgets add up.
- ``BudgetExhaustion``: one row per budget (kind, global or one user's) reached on a day: it makes the
  event and notification go out once, says when work resumed, and lists the days budgets stopped work.

Rows reference the work by nullable foreign keys (``SET_NULL``): deleting an audit keeps its spend.
"""

from __future__ import annotations

from datetime import date

from django.conf import settings
from django.db import models
from django.utils import timezone


class UsageKind(models.TextChoices):
    LLM = "llm"
    STT = "stt"


class UsagePurpose(models.TextChoices):
    AUDIT_STEP = "audit_step"
    RERUN = "rerun"
    CHAT = "chat"
    TRANSCRIPTION = "transcription"


def local_today() -> date:
    """Today in ``TIME_ZONE``: the budget day."""
    return timezone.localdate()


class UsageRecord(models.Model):
    at = models.DateTimeField(default=timezone.now)
    day = models.DateField(default=local_today, help_text="The budget day (TIME_ZONE) the usage counts in.")
    kind = models.CharField(max_length=8, choices=UsageKind.choices)
    purpose = models.CharField(max_length=16, choices=UsagePurpose.choices)
    model = models.CharField(max_length=128, blank=True, default="", help_text="The model that answered.")
    prompt_tokens = models.PositiveIntegerField(default=0, help_text="Cached ones included (as providers report).")
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0, help_text="Prompt tokens read from the provider's cache.")
    estimated = models.BooleanField(default=False, help_text="Tokens estimated (characters / 4): no usage given.")
    audio_seconds = models.FloatField(default=0.0, help_text="Speech-to-text: the audio transcribed.")
    audit = models.ForeignKey("audits.Audit", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    rerun = models.ForeignKey("audits.RerunEvent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    transcription = models.ForeignKey(
        "transcriptions.Transcription", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    transcription_run = models.ForeignKey(
        "transcriptions.TranscriptionRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    conversation = models.ForeignKey(
        "chat.ChatConversation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    fiche = models.ForeignKey(
        "fiches.FicheCache",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The sale the work was for: what the costs API's scope filters on.",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Whom the work was for (its requester); empty for unattributed automation work.",
    )

    class Meta:
        db_table = "usage_records"
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["day", "kind"], name="usage_day_kind"),
            models.Index(fields=["user", "day", "kind"], name="usage_user_day_kind"),
            models.Index(fields=["audit"], name="usage_audit"),
            models.Index(fields=["fiche"], name="usage_fiche"),
        ]

    def __str__(self) -> str:
        if self.kind == UsageKind.STT:
            return f"{self.purpose} {self.audio_seconds:.0f} s ({self.day})"
        return f"{self.purpose} {self.model} {self.prompt_tokens}+{self.completion_tokens} tokens ({self.day})"


class BudgetMode(models.TextChoices):
    WAIT = "wait"
    REFUSE = "refuse"


class BudgetExhaustion(models.Model):
    """A daily budget (``kind``; ``user`` empty: the global one) found reached on ``day``: once a day each."""

    day = models.DateField()
    kind = models.CharField(max_length=8, choices=UsageKind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now, help_text="When it was first found reached.")
    mode = models.CharField(max_length=8, choices=BudgetMode.choices, help_text="What new work did: wait or refuse.")
    limit = models.DecimalField(max_digits=14, decimal_places=6, help_text="The budget then (COST_CURRENCY).")
    spent = models.DecimalField(max_digits=20, decimal_places=6, help_text="The day's spend when it was reached.")
    resumed_at = models.DateTimeField(null=True, blank=True, help_text="When work went on again (next day, raise).")

    class Meta:
        db_table = "budget_exhaustions"
        ordering = ["-day", "-at"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "kind", "user"], name="budget_exhaustion_once_a_day", nulls_distinct=False
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} budget ({'user ' + str(self.user_id) if self.user_id else 'global'}) reached {self.day}"
