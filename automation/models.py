"""Automation: schedules that select fiches and run fetch → transcribe → audit on their own, their
runs, and one result row per fiche of a run (the run's counts are kept from those rows by its
serialized updater)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models

from core.runs import TrackedRun


class ScheduleType(models.TextChoices):
    MANUAL = "MANUAL"
    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"


class AutomationSchedule(models.Model):
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)
    schedule_type = models.CharField(max_length=8, choices=ScheduleType.choices, default=ScheduleType.MANUAL)
    time_of_day = models.CharField(max_length=5, null=True, blank=True, help_text='"HH:MM", local to the timezone.')
    day_of_week = models.PositiveSmallIntegerField(null=True, blank=True, help_text="1 (Monday) to 7 (Sunday).")
    day_of_month = models.PositiveSmallIntegerField(null=True, blank=True, help_text="1 to 31 (last day if shorter).")
    timezone = models.CharField(max_length=64, default="Europe/Paris")
    fiche_selection = models.JSONField(default=dict, blank=True, help_text="Which fiches a run takes.")
    audit_config_ids = ArrayField(models.IntegerField(), default=list, blank=True)
    run_transcription = models.BooleanField(default=True)
    run_audits = models.BooleanField(default=True)
    skip_if_transcribed = models.BooleanField(default=True)
    continue_on_error = models.BooleanField(default=True)
    retry_failed = models.BooleanField(default=False)
    max_retries = models.PositiveSmallIntegerField(default=1)
    notify_on_complete = models.BooleanField(default=False)
    notify_on_error = models.BooleanField(default=True)
    webhook_url = models.TextField(null=True, blank=True)
    webhook_secret = models.CharField(max_length=255, null=True, blank=True)
    notify_emails = ArrayField(models.EmailField(), default=list, blank=True)
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True, help_text="The next slot (UTC).")
    last_run_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Whose grants bound what a run touches (fiches read, transcriptions and audits write). "
        "None: a run has no fiche in scope and fails.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "automation_schedules"
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class RunStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"


TERMINAL_RUN_STATUSES = (RunStatus.COMPLETED, RunStatus.PARTIAL, RunStatus.FAILED)


class Trigger(models.TextChoices):
    MANUAL = "manual"
    SCHEDULED = "scheduled"


class AutomationRun(TrackedRun):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    schedule = models.ForeignKey(
        AutomationSchedule, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    slot = models.DateTimeField(null=True, blank=True, help_text="The scheduled slot this run is for (UTC).")
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.MANUAL)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.PENDING)
    config = models.JSONField(default=dict, help_text="The schedule's settings when the run started.")
    date_from = models.DateField(null=True, blank=True)
    date_to = models.DateField(null=True, blank=True)
    revalidation = models.CharField(max_length=64, blank=True, default="", help_text="done, skipped (cooldown)...")
    total_fiches = models.PositiveIntegerField(default=0)
    successful = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    ignored = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    dispatch_stopped = models.BooleanField(default=False, help_text="continueOnError=false and a fiche failed.")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The schedule's owner when the run was created: every step checks their grants as they are then.",
    )
    notify_due_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set with the run's end: its notifications are due (from then, or the next try after a failure).",
    )
    notify_attempts = models.PositiveSmallIntegerField(default=0)
    signalled_at = models.DateTimeField(null=True, blank=True, help_text="When the domain signals were sent.")
    emailed_at = models.DateTimeField(null=True, blank=True, help_text="When the SMTP server accepted the email.")
    notify_error = models.TextField(null=True, blank=True, help_text="The last notification failure.")
    notified_at = models.DateTimeField(
        null=True, blank=True, help_text="When its end was notified (webhook recorded, email sent, Pusher)."
    )

    class Meta:
        db_table = "automation_runs"
        ordering = ["-created_at"]
        constraints = [
            # Two beats never start the same slot twice: this row decides.
            models.UniqueConstraint(
                fields=["schedule", "slot"], condition=models.Q(slot__isnull=False), name="automation_run_one_per_slot"
            )
        ]
        indexes = [
            # The reconciler's "notifications due but not sent" scan.
            models.Index(
                fields=["notify_due_at"],
                condition=models.Q(notified_at__isnull=True, notify_due_at__isnull=False),
                name="automation_run_notify_due",
            )
        ]

    TERMINAL_STATUSES = TERMINAL_RUN_STATUSES

    def __str__(self) -> str:
        return f"automation run {str(self.id)[:8]} ({self.status})"

    @property
    def done(self) -> int:
        return self.successful + self.failed + self.ignored + self.skipped


class FicheStatus(models.TextChoices):
    PENDING = "pending"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    IGNORED = "ignored"
    SKIPPED = "skipped"


class FicheStep(models.TextChoices):
    SELECTED = "selected"
    FETCH = "fetch"
    TRANSCRIPTION = "transcription"
    AUDIT = "audit"
    DONE = "done"


class AutomationRunFicheResult(models.Model):
    run = models.ForeignKey(AutomationRun, on_delete=models.CASCADE, related_name="fiche_results")
    fiche_id = models.CharField(max_length=64)
    status = models.CharField(max_length=12, choices=FicheStatus.choices, default=FicheStatus.PENDING)
    step = models.CharField(max_length=16, choices=FicheStep.choices, default=FicheStep.SELECTED)
    reason = models.TextField(null=True, blank=True, help_text="Why it was ignored or skipped.")
    error = models.TextField(null=True, blank=True)
    recordings_count = models.PositiveIntegerField(null=True, blank=True)
    transcription_run_id = models.UUIDField(null=True, blank=True)
    transcription_attempts = models.PositiveSmallIntegerField(default=0)
    audit_ids = ArrayField(models.CharField(max_length=36), default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "automation_run_fiche_results"
        ordering = ["run_id", "id"]
        constraints = [models.UniqueConstraint(fields=["run", "fiche_id"], name="automation_result_one_per_fiche")]
        indexes = [
            models.Index(fields=["run", "status"], name="automation_result_run_status"),
            models.Index(fields=["transcription_run_id"], name="automation_result_tx_run"),
        ]

    def __str__(self) -> str:
        return f"{self.fiche_id}: {self.status} ({self.step})"
