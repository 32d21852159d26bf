"""Compliance audits of a sale's calls.

- ``AuditConfig`` is the stable identity of an audit configuration; each edit makes a new immutable
  ``AuditConfigVersion`` with its ordered ``AuditStepDefinition``\\s (weight, criticality, pass ratio)
  and their ``AuditControlPointDefinition``\\s. An audit keeps the version it ran with.
- ``Audit``: one run of a config version over a fiche's calls, with its compliance summary
  (computed in code, never by the LLM).
- ``AuditStepResult``: one step's LLM answer (one per step and audit), tokens, model, prompt hash.
- ``ControlPointResult``: the verdict of one control point (the AI's and the one that counts) and
  its ``Citation``\\s: quotes the evidence gate verified (the transcript's own words, call, times) or
  rejected (with the reason).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from core.runs import TrackedRun


class AuditConfig(models.Model):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    is_active = models.BooleanField(default=True)
    current_version = models.ForeignKey(
        "AuditConfigVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "audit_configs"
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class AuditConfigVersion(models.Model):
    """An immutable snapshot of a config: what an audit ran against."""

    config = models.ForeignKey(AuditConfig, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    thresholds = models.JSONField(help_text='{"excellent": 90, "bon": 75, "acceptable": 60} (percentages).')
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    is_draft = models.BooleanField(
        default=False, help_text="A draft never runs by default or in automation: only in an evaluation, on request."
    )
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    activated_from = models.ForeignKey(
        "Evaluation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The evaluation the activation was based on.",
    )

    class Meta:
        db_table = "audit_config_versions"
        ordering = ["config_id", "version"]
        constraints = [models.UniqueConstraint(fields=["config", "version"], name="audit_config_version_unique")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class AuditStepDefinition(models.Model):
    config_version = models.ForeignKey(AuditConfigVersion, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField(help_text="From 1.")
    name = models.CharField(max_length=200)
    instructions = models.TextField(blank=True, default="")
    weight = models.PositiveIntegerField()
    is_critical = models.BooleanField(default=False)
    pass_ratio = models.FloatField(default=1.0, help_text="Share of applicable points to pass for conforme.")

    class Meta:
        db_table = "audit_steps"
        ordering = ["config_version_id", "position"]
        constraints = [models.UniqueConstraint(fields=["config_version", "position"], name="audit_step_position")]

    def __str__(self) -> str:
        return f"{self.position}. {self.name}"


class EvidenceSpeaker(models.TextChoices):
    """Whose words prove a control point: a quote verifies only in a turn of that speaker."""

    AGENT = "agent"
    CLIENT = "client"
    ANY = "any"


class AuditControlPointDefinition(models.Model):
    step = models.ForeignKey(AuditStepDefinition, on_delete=models.CASCADE, related_name="control_points")
    index = models.PositiveIntegerField(help_text="From 0 within its step.")
    question = models.TextField()
    evidence_hint = models.TextField(blank=True, default="")
    is_critical = models.BooleanField(default=False)
    conditional = models.BooleanField(
        default=False,
        help_text="« Si … » points: only these may be not_applicable (when their condition does not arise).",
    )
    speaker = models.CharField(
        max_length=8,
        choices=EvidenceSpeaker.choices,
        default=EvidenceSpeaker.AGENT,
        help_text="Whose words prove the point: agent (mandatory statements), client (consent), or any.",
    )

    class Meta:
        db_table = "audit_control_points"
        ordering = ["step_id", "index"]
        constraints = [models.UniqueConstraint(fields=["step", "index"], name="audit_control_point_index")]

    def __str__(self) -> str:
        return f"[{self.index}] {self.question[:60]}"


class AuditStatus(models.TextChoices):
    PENDING = "pending"
    WAITING_TRANSCRIPTION = "waiting_transcription"
    WAITING_BUDGET = "waiting_budget"  # the daily LLM budget is reached: it goes on when it allows (costs)
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL_AUDIT_STATUSES = (AuditStatus.COMPLETED, AuditStatus.FAILED)


class Niveau(models.TextChoices):
    EXCELLENT = "EXCELLENT"
    BON = "BON"
    ACCEPTABLE = "ACCEPTABLE"
    INSUFFISANT = "INSUFFISANT"
    REJET = "REJET"


class AuditPurpose(models.TextChoices):
    PRODUCTION = "production"
    EVALUATION = "evaluation"


class Audit(TrackedRun):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    fiche = models.ForeignKey("fiches.FicheCache", on_delete=models.CASCADE, related_name="audits")
    config = models.ForeignKey(AuditConfig, on_delete=models.PROTECT, related_name="audits")
    config_version = models.ForeignKey(AuditConfigVersion, on_delete=models.PROTECT, related_name="audits")
    status = models.CharField(max_length=24, choices=AuditStatus.choices, default=AuditStatus.PENDING)
    tools_mode = models.BooleanField(
        default=False, db_column="use_rlm", help_text="Tools mode (the API's use_rlm): the LLM searches the transcript."
    )
    model = models.CharField(max_length=128, blank=True, default="")
    overall_score = models.FloatField(null=True, blank=True)
    max_score = models.FloatField(null=True, blank=True)
    score_percentage = models.FloatField(null=True, blank=True)
    niveau = models.CharField(max_length=16, choices=Niveau.choices, null=True, blank=True)
    is_compliant = models.BooleanField(null=True, blank=True)
    critical_issues = models.JSONField(default=list, blank=True)
    needs_review = models.BooleanField(default=False)
    total_tokens = models.PositiveIntegerField(default=0)
    duration_seconds = models.FloatField(null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    batch = models.ForeignKey("batches.Batch", null=True, blank=True, on_delete=models.SET_NULL, related_name="audits")
    waiting_since = models.DateTimeField(
        null=True, blank=True, help_text="Waiting for the fiche's transcription, or for the daily LLM budget."
    )
    purpose = models.CharField(
        max_length=16,
        choices=AuditPurpose.choices,
        default=AuditPurpose.PRODUCTION,
        help_text="evaluation: made to evaluate a config version; never in compliance figures, queues or calibration.",
    )
    evaluation = models.ForeignKey("Evaluation", null=True, blank=True, on_delete=models.CASCADE, related_name="audits")
    predecessor = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="successors",
        help_text="A re-audit: the audit of the fiche it was made beside (kept as it was).",
    )
    pinned_at = models.DateTimeField(
        null=True, blank=True, help_text="A reviewer pinned it: it is the one that counts for its fiche and config."
    )
    pinned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    TERMINAL_STATUSES = TERMINAL_AUDIT_STATUSES

    class Meta:
        db_table = "audits"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["fiche", "created_at"], name="audits_fiche"),
            models.Index(fields=["status", "created_at"], name="audits_status"),
            models.Index(fields=["config", "created_at"], name="audits_config"),
        ]

    def __str__(self) -> str:
        return f"audit {str(self.id)[:8]} of fiche {self.fiche.fiche_id} ({self.status})"


class StepStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class AuditStepResult(models.Model):
    audit = models.ForeignKey(Audit, on_delete=models.CASCADE, related_name="step_results")
    step = models.ForeignKey(AuditStepDefinition, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING)
    score = models.FloatField(null=True, blank=True)
    max_score = models.FloatField(null=True, blank=True)
    conforme = models.BooleanField(null=True, blank=True)
    included = models.BooleanField(default=True, help_text="False when no control point was applicable.")
    raw_result = models.JSONField(null=True, blank=True, help_text="The LLM's structured answer, as given.")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    tokens_estimated = models.BooleanField(default=False)
    model = models.CharField(max_length=128, blank=True, default="")
    prompt_hash = models.CharField(max_length=64, blank=True, default="")
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    tool_calls = models.PositiveIntegerField(default=0)
    error = models.TextField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="The claim's heartbeat: renewed while a worker holds the step."
    )
    claim_token = models.CharField(max_length=32, null=True, blank=True, help_text="Who holds the step now.")
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "audit_step_results"
        ordering = ["audit_id", "position"]
        constraints = [models.UniqueConstraint(fields=["audit", "position"], name="audit_step_result_position")]

    def __str__(self) -> str:
        return f"step {self.position} of {self.audit_id} ({self.status})"

    @property
    def tokens_used(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class PointStatus(models.TextChoices):
    PASS = "pass"
    FAIL = "fail"
    UNCERTAIN = "uncertain"
    NOT_APPLICABLE = "not_applicable"


# The effective verdict of a point whose AI trust is withdrawn until a reviewer decides (never stored as a
# verdict: compliance counts it as not passed and the audit as needing review).
PENDING = "pending"


class ControlPointResult(models.Model):
    step_result = models.ForeignKey(AuditStepResult, on_delete=models.CASCADE, related_name="control_points")
    index = models.PositiveIntegerField()
    ai_status = models.CharField(max_length=16, choices=PointStatus.choices, help_text="The LLM's verdict.")
    status = models.CharField(
        max_length=16, choices=PointStatus.choices, help_text="The AI's verdict after the evidence gate."
    )
    rationale = models.TextField(blank=True, default="")
    human_status = models.CharField(
        max_length=16,
        choices=PointStatus.choices,
        null=True,
        blank=True,
        help_text="A reviewer's verdict; when set, it is the one that counts.",
    )
    gate_reason = models.CharField(
        max_length=32,
        null=True,
        blank=True,
        help_text="Why the evidence gate changed the model's verdict (no_verified_quote, not_conditional, ...).",
    )
    unguided_status = models.CharField(
        max_length=16,
        choices=PointStatus.choices,
        null=True,
        blank=True,
        help_text="The AI's verdict (after the gate) before any reviewer-guided rerun: what calibration measures.",
    )
    guided = models.BooleanField(
        default=False,
        help_text="A reviewer-guided rerun changed this AI verdict (the one before it is kept in unguided_status).",
    )
    advisory = models.BooleanField(
        default=False,
        help_text="The point's AI trust was withdrawn when this verdict was made: it is advice, and the point is "
        "pending until a reviewer decides.",
    )

    class Meta:
        db_table = "audit_control_point_results"
        ordering = ["step_result_id", "index"]
        constraints = [models.UniqueConstraint(fields=["step_result", "index"], name="audit_cp_result_index")]

    def __str__(self) -> str:
        return f"[{self.index}] {self.effective_status}"

    @property
    def effective_status(self) -> str:
        """The verdict that counts for scoring: the reviewer's, else ``pending`` for an advisory AI verdict,
        else the AI's after the gate."""
        if self.human_status:
            return self.human_status
        return PENDING if self.advisory else self.status

    @property
    def unguided_ai_status(self) -> str:
        """The AI's own verdict (after the gate), before any reviewer-guided rerun."""
        return self.unguided_status or self.status


class Citation(models.Model):
    control_point = models.ForeignKey(ControlPointResult, on_delete=models.CASCADE, related_name="citations")
    position = models.PositiveIntegerField(default=0)
    quote = models.TextField(help_text="What the LLM quoted.")
    text = models.TextField(blank=True, default="", help_text="The transcript's own words (verified quotes).")
    speaker = models.CharField(max_length=16, null=True, blank=True)
    call_id = models.CharField(max_length=128, null=True, blank=True)
    start = models.FloatField(null=True, blank=True)
    end = models.FloatField(null=True, blank=True)
    verified = models.BooleanField(default=False)
    reason = models.CharField(max_length=32, null=True, blank=True, help_text="Why a quote was rejected.")
    score = models.FloatField(default=0.0)

    class Meta:
        db_table = "audit_citations"
        ordering = ["control_point_id", "position"]

    def __str__(self) -> str:
        return f"{'✓' if self.verified else '✗'} {self.quote[:60]}"


class HumanReview(models.Model):
    """A reviewer's verdict on one control point of a step result (the AI's kept beside it)."""

    step_result = models.ForeignKey(AuditStepResult, on_delete=models.CASCADE, related_name="human_reviews")
    control_point_index = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=PointStatus.choices)
    comment = models.TextField()
    ai_status = models.CharField(max_length=16, choices=PointStatus.choices, help_text="The AI's verdict then.")
    previous_status = models.CharField(
        max_length=16, choices=PointStatus.choices, help_text="The verdict that counted before this review."
    )
    step_score_before = models.FloatField(null=True, blank=True)
    step_score_after = models.FloatField(null=True, blank=True)
    ai_first_status = models.CharField(
        max_length=16,
        choices=PointStatus.choices,
        null=True,
        blank=True,
        help_text="The AI's own verdict (after the gate, before any guided rerun) then: what trust measures.",
    )
    config = models.ForeignKey(
        AuditConfig, null=True, blank=True, on_delete=models.CASCADE, related_name="+", help_text="The audit's."
    )
    step_position = models.PositiveIntegerField(null=True, blank=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "audit_step_result_human_reviews"
        ordering = ["created_at", "id"]
        indexes = [
            # The trust window: a control point's latest reviews.
            models.Index(
                fields=["config", "step_position", "control_point_index", "-created_at"], name="audit_review_trust"
            )
        ]

    def __str__(self) -> str:
        return f"review of {self.step_result_id}.{self.control_point_index}: {self.status}"


class RerunStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class RerunEvent(models.Model):
    """One rerun of a step (or of one control point): who asked, with what guidance, and what changed."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    audit = models.ForeignKey(Audit, on_delete=models.CASCADE, related_name="rerun_events")
    step_result = models.ForeignKey(AuditStepResult, on_delete=models.CASCADE, related_name="rerun_events")
    position = models.PositiveIntegerField()
    control_point_index = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: the whole step.")
    instructions = models.TextField(blank=True, default="")
    tools_mode = models.BooleanField(default=False, db_column="use_rlm", help_text="Tools mode (the API's use_rlm).")
    status = models.CharField(max_length=16, choices=RerunStatus.choices, default=RerunStatus.PENDING)
    error = models.TextField(null=True, blank=True)
    original = models.JSONField(null=True, blank=True, help_text="The step as it was: score, conforme, verdicts.")
    rerun = models.JSONField(null=True, blank=True, help_text="The step after the rerun.")
    comparison = models.JSONField(null=True, blank=True, help_text="Per control point and score: before → after.")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="The claim's heartbeat: renewed while a worker runs the rerun."
    )
    claim_token = models.CharField(max_length=32, null=True, blank=True, help_text="Who runs the rerun now.")
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "audit_step_result_rerun_events"
        ordering = ["created_at"]
        constraints = [
            # One rerun of a step at a time: a second one is refused (409), never interleaved.
            models.UniqueConstraint(
                fields=["step_result"],
                condition=models.Q(status__in=["pending", "running"]),
                name="audit_one_active_rerun_per_step",
            )
        ]

    def __str__(self) -> str:
        return f"rerun {self.id} of step {self.position} ({self.status})"


class TrustState(models.TextChoices):
    TRUSTED = "trusted"
    WITHDRAWN = "withdrawn"


class ControlPointTrust(models.Model):
    """Whether the AI's verdict on one control point of a config decides on its own (``trusted``) or is
    advice a reviewer must confirm (``withdrawn``), from the rolling agreement of its latest reviews. Keyed
    like calibration: the config, the step's position and the point's index (across versions)."""

    config = models.ForeignKey(AuditConfig, on_delete=models.CASCADE, related_name="trust")
    step_position = models.PositiveIntegerField()
    control_point_index = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=TrustState.choices, default=TrustState.TRUSTED)
    kappa = models.FloatField(null=True, blank=True, help_text="Cohen's kappa over the window, when last computed.")
    agreement = models.FloatField(null=True, blank=True)
    sample_size = models.PositiveIntegerField(default=0, help_text="Reviews in the window.")
    computed_at = models.DateTimeField(null=True, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True, help_text="When the state last changed.")

    class Meta:
        db_table = "audit_control_point_trust"
        ordering = ["config_id", "step_position", "control_point_index"]
        constraints = [
            models.UniqueConstraint(
                fields=["config", "step_position", "control_point_index"], name="audit_control_point_trust_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.config_id} {self.step_position}.{self.control_point_index}: {self.state}"


class ControlPointTrustChange(models.Model):
    """One change of a control point's trust state: when, and the window's figures that decided it."""

    trust = models.ForeignKey(ControlPointTrust, on_delete=models.CASCADE, related_name="changes")
    state = models.CharField(max_length=16, choices=TrustState.choices)
    previous_state = models.CharField(max_length=16, choices=TrustState.choices)
    kappa = models.FloatField(null=True, blank=True)
    agreement = models.FloatField(null=True, blank=True)
    sample_size = models.PositiveIntegerField()
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "audit_control_point_trust_changes"
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.previous_state} → {self.state} (kappa {self.kappa}, n={self.sample_size})"


class DisputeStatus(models.TextChoices):
    OPEN = "open"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Dispute(models.Model):
    """An agent contesting one control point's verdict on their sale; a reviewer accepts it (the verdict
    changes through the review path) or rejects it, with a comment either way."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    audit = models.ForeignKey(Audit, on_delete=models.CASCADE, related_name="disputes")
    step_result = models.ForeignKey(AuditStepResult, on_delete=models.CASCADE, related_name="disputes")
    step_position = models.PositiveIntegerField()
    control_point_index = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=DisputeStatus.choices, default=DisputeStatus.OPEN)
    comment = models.TextField(help_text="The agent's reason.")
    proposed_status = models.CharField(
        max_length=16, choices=PointStatus.choices, help_text="The verdict the agent asks for."
    )
    verdict_before = models.CharField(max_length=16, help_text="The verdict that counted when it was raised.")
    verdict_after = models.CharField(max_length=16, blank=True, default="", help_text="The verdict once resolved.")
    raised_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolution_comment = models.TextField(blank=True, default="")
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    review = models.ForeignKey(
        HumanReview,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Accepted: the review.",
    )

    class Meta:
        db_table = "audit_disputes"
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["step_result", "control_point_index"],
                condition=models.Q(status="open"),
                name="audit_one_open_dispute_per_point",
            )
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="audit_disputes_status")]

    def __str__(self) -> str:
        return f"dispute of {self.step_position}.{self.control_point_index} ({self.status})"


class EvaluationStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class Evaluation(TrackedRun):
    """A config version (often a draft) run over an evaluation set beside the active version, each judged
    against what reviewers decided on those fiches. Its audits are ``purpose=evaluation``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    config = models.ForeignKey(AuditConfig, on_delete=models.CASCADE, related_name="evaluations")
    version = models.ForeignKey(AuditConfigVersion, on_delete=models.CASCADE, related_name="evaluations")
    baseline_version = models.ForeignKey(
        AuditConfigVersion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The active version then (none: the evaluated version is the active one).",
    )
    fiche_ids = models.JSONField(default=list, help_text="The evaluation set.")
    tools_mode = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=EvaluationStatus.choices, default=EvaluationStatus.PENDING)
    result = models.JSONField(null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    TERMINAL_STATUSES = (EvaluationStatus.COMPLETED, EvaluationStatus.FAILED)

    class Meta:
        db_table = "audit_evaluations"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"evaluation {str(self.id)[:8]} of {self.version} ({self.status})"
