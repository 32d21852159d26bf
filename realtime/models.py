"""Outgoing webhook deliveries, their partial fiches, and every attempt."""

import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SUCCESS = "success"
    FAILED = "failed"


class AttemptTrigger(models.TextChoices):
    SCHEDULED = "scheduled"
    MANUAL = "manual"


def new_webhook_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


class WebhookDelivery(models.Model):
    """One webhook message for a job event. Its body is rebuilt from the normalized payload
    fields on every attempt; ``webhook_id`` stays the same across retries and redeliveries."""

    job = models.ForeignKey("fiches.ProgressiveFetchJob", on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.CharField(max_length=64)
    url = models.TextField()
    webhook_id = models.CharField(max_length=64, unique=True, default=new_webhook_id)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # The payload, normalized (the original's payload_* columns).
    payload_timestamp = models.DateTimeField()
    payload_job_status = models.CharField(max_length=16)
    payload_progress = models.PositiveSmallIntegerField()
    payload_start_date = models.DateField()
    payload_end_date = models.DateField()
    payload_completed_days = models.PositiveIntegerField()
    payload_total_days = models.PositiveIntegerField()
    payload_total_fiches = models.PositiveIntegerField()
    payload_dates_completed = ArrayField(models.DateField(), default=list)
    payload_dates_remaining = ArrayField(models.DateField(), default=list)
    payload_dates_failed = ArrayField(models.DateField(), default=list)
    payload_error = models.TextField(null=True, blank=True)
    payload_data_url = models.TextField()
    payload_partial_truncated = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "webhook_deliveries"
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["job", "created_at"], name="webhook_deliveries_job"),
            models.Index(fields=["status", "next_retry_at"], name="webhook_deliveries_due"),
            models.Index(fields=["status", "created_at"], name="webhook_deliveries_purge"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.event} → {self.url[:60]}"


class WebhookDeliveryPartialFiche(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="partial_fiches")
    position = models.PositiveIntegerField()
    fiche_id = models.CharField(max_length=64)
    sales_date = models.DateField()
    prospect_nom = models.CharField(max_length=255, null=True, blank=True)
    prospect_prenom = models.CharField(max_length=255, null=True, blank=True)
    groupe = models.CharField(max_length=128, null=True, blank=True)
    recordings_count = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "webhook_delivery_partial_fiches"
        ordering = ["delivery_id", "position"]
        constraints = [models.UniqueConstraint(fields=["delivery", "position"], name="webhook_partial_position")]


class WebhookDeliveryAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    trigger = models.CharField(max_length=16, choices=AttemptTrigger.choices, default=AttemptTrigger.SCHEDULED)
    task_id = models.CharField(max_length=64, null=True, blank=True)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    request_headers = models.JSONField(default=dict)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=dict)
    response_body = models.TextField(blank=True, default="", help_text="Trimmed to 4 KB.")
    error = models.TextField(null=True, blank=True)

    class Meta:
        db_table = "webhook_delivery_attempts"
        ordering = ["delivery_id", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_number")]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"
