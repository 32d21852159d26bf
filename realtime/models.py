"""Outgoing webhook deliveries and every attempt of them."""

import uuid

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
    """One webhook message. The sending app hands over the exact message (``payload``: the JSON
    body ``{"type", "timestamp", "data"}``), the URL and the secret; every attempt sends the same
    bytes, and ``webhook_id`` stays the same across retries and redeliveries. ``source`` and
    ``source_id`` say which app object it belongs to (e.g. a progressive fetch job)."""

    source = models.CharField(max_length=64, help_text="The app object kind that sent it, e.g. progressive_fetch_job.")
    source_id = models.CharField(max_length=64)
    event = models.CharField(max_length=64)
    url = models.TextField()
    secret = models.TextField(null=True, blank=True, help_text="Signing secret (never shown).")
    webhook_id = models.CharField(max_length=64, unique=True, default=new_webhook_id)
    payload = models.TextField(help_text="The JSON body sent on every attempt.")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "webhook_deliveries"
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["source", "source_id", "created_at"], name="webhook_deliveries_source"),
            models.Index(fields=["status", "next_retry_at"], name="webhook_deliveries_due"),
            models.Index(fields=["status", "created_at"], name="webhook_deliveries_purge"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.event} → {self.url[:60]}"


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
