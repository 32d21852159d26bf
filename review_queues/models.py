"""Review queues: which completed audits a human looks at, and who is looking at which.

- ``ReviewQueue``: a saved rule set — the audits that enter (every ``REJET``, every ``needs_review``, every
  audit with an ``uncertain`` point, every audit with a point whose AI trust is withdrawn, and a random
  sample of the others stratified per agent per week, reproducible from the stored ``seed``), restricted to
  some configs and groups (none: all).
- ``QueueItem``: one audit in one queue (once): why it entered, its stratum (agent, week of the sale), and
  its state — ``waiting``, ``claimed`` by one reviewer under a lease (an expired lease returns it), ``done``
  once that reviewer reviewed the audit.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


def new_seed() -> int:
    return secrets.randbelow(2**31)


class ReviewQueue(models.Model):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    is_active = models.BooleanField(default=True)
    include_rejet = models.BooleanField(default=True, help_text="Every REJET audit enters.")
    include_needs_review = models.BooleanField(default=True, help_text="Every audit needing review enters.")
    include_uncertain = models.BooleanField(default=True, help_text="Every audit with an uncertain point enters.")
    include_untrusted = models.BooleanField(
        default=True, help_text="Every audit with a point whose AI trust is withdrawn (pending) enters."
    )
    sample_percent = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(100.0)],
        help_text="Share of the other completed audits sampled, per agent per week (every agent's closed week "
        "gets at least one).",
    )
    seed = models.BigIntegerField(default=new_seed, help_text="The sample's seed: the same seed, the same sample.")
    configs = models.ManyToManyField("audits.AuditConfig", blank=True, related_name="+", help_text="None: all.")
    groupes = ArrayField(models.CharField(max_length=128), default=list, blank=True, help_text="None: all.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "review_queues"
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class ItemState(models.TextChoices):
    WAITING = "waiting"
    CLAIMED = "claimed"
    DONE = "done"


class ItemReason(models.TextChoices):
    REJET = "rejet"
    NEEDS_REVIEW = "needs_review"
    UNCERTAIN = "uncertain"
    UNTRUSTED = "untrusted"
    SAMPLE = "sample"
    SAMPLE_FLOOR = "sample_floor"  # the agent's closed week had no item: its first audit in the seed's order


class QueueItem(models.Model):
    queue = models.ForeignKey(ReviewQueue, on_delete=models.CASCADE, related_name="items")
    audit = models.ForeignKey("audits.Audit", on_delete=models.CASCADE, related_name="+")
    reasons = ArrayField(models.CharField(max_length=16, choices=ItemReason.choices), default=list)
    priority = models.PositiveSmallIntegerField(default=0, help_text="0: a rule let it in; 1: sampled.")
    agent = models.CharField(max_length=64, blank=True, default="", help_text="The sale's agent (crm_user_id).")
    week = models.DateField(help_text="Monday of the sale's week: with the agent, the sample's stratum.")
    state = models.CharField(max_length=16, choices=ItemState.choices, default=ItemState.WAITING)
    entered_at = models.DateTimeField(auto_now_add=True)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "review_queue_items"
        ordering = ["priority", "entered_at", "id"]
        constraints = [models.UniqueConstraint(fields=["queue", "audit"], name="review_queue_item_once")]
        indexes = [
            models.Index(fields=["queue", "state", "priority", "entered_at"], name="review_queue_next"),
            models.Index(fields=["queue", "agent", "week"], name="review_queue_stratum"),
        ]

    def __str__(self) -> str:
        return f"{self.audit_id} in queue {self.queue_id} ({self.state})"
