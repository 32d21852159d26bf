"""Input validation and documented output shapes of the audits API. Validation errors name the
field: the message reads ``steps: 2: weight: ...`` and ``details`` nests like the input
(``{"steps": {"2": {"weight": ["..."]}}}``)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from audits.evidence import REASONS

# Bounds of an audit config (each one a 400 naming the field): a config is read into every step's
# prompt, so its size is the LLM's cost; weights are summed into scores.
MAX_STEPS = 50
MAX_CONTROL_POINTS_PER_STEP = 30
MAX_WEIGHT = 1000
MAX_TEXT = 2000  # a question, a hint
MAX_LONG_TEXT = 4000  # a description, a step's instructions


class DateTimeInput(serializers.DateTimeField):
    """DRF's, with a naive datetime at the edge of the calendar (``0001-01-01``) a 400 "out of range":
    made aware in our time zone it falls before year 1, an ``OverflowError`` DRF lets through (a 500)."""

    def enforce_timezone(self, value):
        try:
            return super().enforce_timezone(value)
        except OverflowError:
            self.fail("overflow")


class ControlPointInput(serializers.Serializer):
    question = serializers.CharField(max_length=MAX_TEXT, allow_blank=False, trim_whitespace=True)
    evidence_hint = serializers.CharField(max_length=MAX_TEXT, allow_blank=True, required=False, default="")
    is_critical = serializers.BooleanField(required=False, default=False)
    conditional = serializers.BooleanField(
        required=False,
        default=False,
        help_text="A « Si … » point: only a conditional point may be not_applicable (its condition did not arise); "
        "the model's not_applicable on any other point counts as uncertain.",
    )
    speaker = serializers.ChoiceField(
        choices=["agent", "client", "any"],
        required=False,
        default="agent",
        help_text="Whose words prove the point: a quote is verified only in a turn of that speaker "
        "(agent for mandatory statements, client for consent, any).",
    )


class StepInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    instructions = serializers.CharField(allow_blank=True, required=False, default="", max_length=MAX_LONG_TEXT)
    weight = serializers.IntegerField(min_value=1, max_value=MAX_WEIGHT, help_text=f"1 to {MAX_WEIGHT}")
    is_critical = serializers.BooleanField(required=False, default=False)
    pass_ratio = serializers.FloatField(min_value=0.0, max_value=1.0, required=False, default=1.0)
    control_points = ControlPointInput(  # type: ignore[call-arg]  # many=True takes ListSerializer's max_length
        many=True, allow_empty=False, max_length=MAX_CONTROL_POINTS_PER_STEP
    )


class ThresholdsInput(serializers.Serializer):
    excellent = serializers.FloatField(min_value=0, max_value=100)
    bon = serializers.FloatField(min_value=0, max_value=100)
    acceptable = serializers.FloatField(min_value=0, max_value=100)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs["excellent"] > attrs["bon"] > attrs["acceptable"]:
            raise serializers.ValidationError("thresholds must decrease: excellent > bon > acceptable.")
        return attrs


class AuditConfigInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(allow_blank=True, required=False, default="", max_length=MAX_LONG_TEXT)
    is_active = serializers.BooleanField(required=False, default=True)
    thresholds = ThresholdsInput(required=False, default={"excellent": 90, "bon": 75, "acceptable": 60})
    steps = StepInput(many=True, allow_empty=False, max_length=MAX_STEPS)  # type: ignore[call-arg]


class AuditConfigPatchInput(serializers.Serializer):
    """A PATCH: any subset of the config's fields, each one whole (a ``steps`` list replaces the
    steps; ``thresholds`` needs its three values). Not a DRF partial serializer: that would make the
    nested steps and thresholds partial too."""

    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(allow_blank=True, required=False, max_length=MAX_LONG_TEXT)
    is_active = serializers.BooleanField(required=False)
    thresholds = ThresholdsInput(required=False)
    steps = StepInput(many=True, allow_empty=False, required=False, max_length=MAX_STEPS)  # type: ignore[call-arg]
    draft = serializers.BooleanField(
        required=False,
        default=False,
        help_text="true: a changed content makes a draft version (the active one stays; evaluate it, then activate).",
    )


class ControlPointOutput(ControlPointInput):
    index = serializers.IntegerField()


class StepOutput(serializers.Serializer):
    position = serializers.IntegerField()
    name = serializers.CharField()
    instructions = serializers.CharField()
    weight = serializers.IntegerField()
    is_critical = serializers.BooleanField()
    pass_ratio = serializers.FloatField()
    control_points = ControlPointOutput(many=True)


class AuditConfigOutput(serializers.Serializer):
    id = serializers.IntegerField()
    version = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    is_active = serializers.BooleanField()
    thresholds = serializers.DictField(child=serializers.FloatField())
    steps = StepOutput(many=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class AuditRunInput(serializers.Serializer):
    fiche_id = serializers.CharField(max_length=64)
    audit_config_id = serializers.IntegerField(min_value=1)
    use_rlm = serializers.BooleanField(required=False, default=False, help_text="Tools mode (also accepts useRlm).")

    def to_internal_value(self, data: Any) -> Any:
        return super().to_internal_value(_alias_use_rlm(data))


# Non-terminal: pending, waiting_transcription, waiting_budget, running.
AUDIT_STATUSES = ["pending", "waiting_transcription", "waiting_budget", "running", "completed", "failed"]


class AuditRunOutput(serializers.Serializer):
    audit_id = serializers.CharField()
    status = serializers.CharField()
    reused = serializers.BooleanField(
        help_text="An identical audit (same fiche, config version and use_rlm) was already going: this is it."
    )


class AuditListQuery(serializers.Serializer):
    fiche_id = serializers.CharField(required=False)
    status = serializers.ChoiceField(choices=AUDIT_STATUSES, required=False)
    audit_config_id = serializers.IntegerField(required=False)
    niveau = serializers.ChoiceField(choices=["EXCELLENT", "BON", "ACCEPTABLE", "INSUFFISANT", "REJET"], required=False)
    is_compliant = serializers.BooleanField(required=False, allow_null=True, default=None)
    needs_review = serializers.BooleanField(required=False, allow_null=True, default=None)
    created_from = DateTimeInput(required=False)
    created_to = DateTimeInput(required=False)
    purpose = serializers.ChoiceField(
        choices=["production", "evaluation"],
        required=False,
        default="production",
        help_text="evaluation: the audits made by config evaluations (never in compliance figures).",
    )
    counts = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="true: only the audit that counts for each fiche."
    )


class CitationOutput(serializers.Serializer):
    text = serializers.CharField()
    speaker = serializers.CharField(allow_null=True)
    call_id = serializers.CharField(allow_null=True)
    start = serializers.FloatField(allow_null=True)
    end = serializers.FloatField(allow_null=True)


class RejectedCitationOutput(serializers.Serializer):
    text = serializers.CharField()
    reason = serializers.ChoiceField(choices=list(REASONS), help_text="Why the evidence gate rejected the quote.")


class PointResultOutput(serializers.Serializer):
    index = serializers.IntegerField()
    question = serializers.CharField()
    is_critical = serializers.BooleanField()
    status = serializers.ChoiceField(
        choices=["pass", "fail", "uncertain", "not_applicable", "pending"],
        help_text="The verdict that counts (pending: an advisory AI verdict awaiting a reviewer).",
    )
    ai_status = serializers.ChoiceField(
        choices=["pass", "fail", "uncertain", "not_applicable"],
        help_text="The AI's verdict after the evidence gate (a pass without a verified quote is uncertain).",
    )
    model_status = serializers.ChoiceField(
        choices=["pass", "fail", "uncertain", "not_applicable"], help_text="What the model answered, before the gate."
    )
    gate_reason = serializers.CharField(
        allow_null=True,
        help_text="Why the gate did not keep the model's answer: no_verified_quote, not_conditional, "
        "not_applicable_without_reason, no_answer (null when it stood).",
    )
    guided = serializers.BooleanField(
        help_text="ai_status comes from a reviewer-guided rerun; unguided_ai_status is the AI's own verdict."
    )
    unguided_ai_status = serializers.ChoiceField(
        choices=["pass", "fail", "uncertain", "not_applicable"],
        help_text="The AI's verdict before any reviewer-guided rerun (what calibration compares).",
    )
    conditional = serializers.BooleanField()
    speaker = serializers.ChoiceField(choices=["agent", "client", "any"], help_text="Whose words prove the point.")
    human_status = serializers.ChoiceField(
        choices=["pass", "fail", "not_applicable"], allow_null=True, help_text="A reviewer's verdict, if any."
    )
    advisory = serializers.BooleanField(
        help_text="The point's AI trust was withdrawn when it ran: the AI's verdict is advice."
    )
    pending_review = serializers.BooleanField(help_text="Advisory and no reviewer has decided: status is pending.")
    rationale = serializers.CharField()
    citations = CitationOutput(many=True)
    rejected_citations = RejectedCitationOutput(many=True)


class StepResultOutput(serializers.Serializer):
    position = serializers.IntegerField()
    name = serializers.CharField()
    weight = serializers.IntegerField()
    is_critical = serializers.BooleanField()
    status = serializers.ChoiceField(choices=["pending", "running", "completed", "failed"])
    score = serializers.FloatField(allow_null=True)
    max_score = serializers.FloatField(allow_null=True)
    conforme = serializers.BooleanField(allow_null=True)
    tokens_used = serializers.IntegerField()
    error = serializers.CharField(allow_null=True)
    control_points = PointResultOutput(many=True)


class AuditSummaryOutput(serializers.Serializer):
    audit_id = serializers.CharField()
    fiche_id = serializers.CharField()
    audit_config_id = serializers.IntegerField()
    config_version = serializers.IntegerField()
    status = serializers.ChoiceField(
        choices=AUDIT_STATUSES,
        help_text="waiting_budget: the daily LLM budget is reached; it goes on when it allows (e.g. the next day).",
    )
    use_rlm = serializers.BooleanField()
    model = serializers.CharField()
    overall_score = serializers.FloatField(allow_null=True)
    max_score = serializers.FloatField(allow_null=True)
    score_percentage = serializers.FloatField(allow_null=True)
    niveau = serializers.CharField(allow_null=True)
    is_compliant = serializers.BooleanField(allow_null=True)
    critical_issues = serializers.ListField(child=serializers.DictField())
    needs_review = serializers.BooleanField()
    total_tokens = serializers.IntegerField()
    duration_seconds = serializers.FloatField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)
    purpose = serializers.ChoiceField(choices=["production", "evaluation"])
    evaluation_id = serializers.CharField(allow_null=True)
    predecessor_id = serializers.CharField(allow_null=True, help_text="A re-audit: the audit it was made beside.")
    pinned = serializers.BooleanField(help_text="A reviewer pinned it as the audit that counts.")
    counts = serializers.BooleanField(
        help_text="The audit that counts for its fiche and config: the pinned one, else the latest completed "
        "production audit of the active version."
    )


class AuditCostOutput(serializers.Serializer):
    currency = serializers.CharField(help_text="COST_CURRENCY")
    llm_cost = serializers.DecimalField(
        max_digits=20,
        decimal_places=6,
        coerce_to_string=True,
        help_text="Its LLM calls (steps and reruns), priced from LLM_PRICES (cached prompt tokens at their price).",
    )
    prompt_tokens = serializers.IntegerField(help_text="Cached ones included.")
    completion_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField()
    calls = serializers.IntegerField()
    priced_by_default = serializers.BooleanField(help_text="A model not in LLM_PRICES (priced at LLM_DEFAULT_PRICE).")
    priced_by_default_models = serializers.ListField(child=serializers.CharField())


class AuditOutput(AuditSummaryOutput):
    steps = StepResultOutput(many=True)
    cost = AuditCostOutput()


def _alias_use_rlm(data: Any) -> Any:
    if hasattr(data, "dict"):  # a form post's QueryDict: one value per key
        data = data.dict()
    if isinstance(data, dict) and "useRlm" in data and "use_rlm" not in data:
        data = {**data, "use_rlm": data["useRlm"]}
    return data


class RerunInput(serializers.Serializer):
    use_rlm = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="Tools mode; default: as the audit ran."
    )
    instructions = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=4000, help_text="A reviewer's guidance for the LLM."
    )

    def to_internal_value(self, data: Any) -> Any:
        return super().to_internal_value(_alias_use_rlm(data))


class RerunOutput(serializers.Serializer):
    rerun_id = serializers.CharField()
    status = serializers.CharField()


class ReviewInput(serializers.Serializer):
    control_point_index = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=0, help_text="Empty: every point of the step."
    )
    status = serializers.ChoiceField(choices=["pass", "fail", "not_applicable"])
    comment = serializers.CharField(max_length=4000, allow_blank=False, trim_whitespace=True)


class ReviewOutput(serializers.Serializer):
    id = serializers.CharField()
    step_position = serializers.IntegerField()
    control_point_index = serializers.IntegerField()
    status = serializers.CharField()
    ai_status = serializers.CharField()
    previous_status = serializers.CharField()
    comment = serializers.CharField()
    reviewer = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()


class ReviewCreated(serializers.Serializer):
    reviews = ReviewOutput(many=True)
    step = StepResultOutput()
    audit = AuditSummaryOutput()


class HistoryOutput(serializers.Serializer):
    audit_id = serializers.CharField()
    entries = serializers.ListField(child=serializers.DictField(), help_text="Reruns and reviews, oldest first.")


class CalibrationQuery(serializers.Serializer):
    audit_config_id = serializers.IntegerField(min_value=1)
    date_from = DateTimeInput(required=False, allow_null=True, default=None)
    date_to = DateTimeInput(required=False, allow_null=True, default=None)

    def to_internal_value(self, data: Any) -> Any:
        data = data.dict() if hasattr(data, "dict") else dict(data)
        for name in ("from", "to"):  # ?from=&to= in the URL
            if name in data:
                data[f"date_{name}"] = data.pop(name)
        return super().to_internal_value(data)


class CalibrationPoint(serializers.Serializer):
    step_position = serializers.IntegerField()
    step_name = serializers.CharField()
    control_point_index = serializers.IntegerField()
    question = serializers.CharField()
    is_critical = serializers.BooleanField()
    reviewed = serializers.IntegerField()
    agreements = serializers.IntegerField()
    agreement_rate = serializers.FloatField()
    kappa = serializers.FloatField(allow_null=True, help_text="Cohen's kappa (null when undefined).")
    kappa_ci95 = serializers.ListField(
        child=serializers.FloatField(), allow_null=True, help_text="95 % confidence interval of kappa [low, high]."
    )
    confusion = serializers.DictField(
        child=serializers.DictField(child=serializers.IntegerField()), help_text="AI verdict → reviewer → count."
    )
    guided_reruns = serializers.IntegerField(
        help_text="Reviewed points whose AI verdict a reviewer-guided rerun changed (never counted as the AI "
        "agreeing: agreement and kappa use the AI's verdict before guidance)."
    )
    guided_agreements = serializers.IntegerField(help_text="Of those, guided verdicts equal to the reviewer's.")
    trust_state = serializers.ChoiceField(
        choices=["trusted", "withdrawn"], help_text="withdrawn: new audits hold the AI's verdict as advice."
    )
    trust = serializers.DictField(
        required=False,
        help_text="The point's trust (state, rolling kappa, agreement, sample size, changes): for audit-configs "
        "readers (config data).",
    )


class CalibrationOutput(serializers.Serializer):
    audit_config_id = serializers.IntegerField()
    reviewed = serializers.IntegerField()
    control_points = CalibrationPoint(many=True)


class AuditBatchInput(serializers.Serializer):
    fiche_ids = serializers.ListField(child=serializers.CharField(max_length=64), allow_empty=False)
    audit_config_id = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, default=None, help_text="Default: the fiche's product's config."
    )
    use_rlm = serializers.BooleanField(required=False, default=False)

    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "copy") and "useRlm" in data and "use_rlm" not in data:
            data = data.copy()  # a QueryDict's copy is mutable and keeps its lists
            data["use_rlm"] = data["useRlm"]
        return super().to_internal_value(data)


class AuditBatchCreated(serializers.Serializer):
    batch_id = serializers.CharField()


# --- Disputes and trust ------------------------------------------------------------------------------------

HUMAN_VERDICTS = ["pass", "fail", "not_applicable"]


class DisputeInput(serializers.Serializer):
    comment = serializers.CharField(max_length=4000, allow_blank=False, trim_whitespace=True)
    proposed_status = serializers.ChoiceField(
        choices=["pass", "not_applicable"],
        required=False,
        allow_null=True,
        default=None,
        help_text="The verdict asked for (default: pass).",
    )


class DisputeResolveInput(serializers.Serializer):
    comment = serializers.CharField(max_length=4000, allow_blank=False, trim_whitespace=True)


class DisputeAcceptInput(DisputeResolveInput):
    status = serializers.ChoiceField(
        choices=HUMAN_VERDICTS,
        required=False,
        allow_null=True,
        default=None,
        help_text="The new verdict (default: the one the agent proposed).",
    )


class DisputeOutput(serializers.Serializer):
    id = serializers.CharField()
    audit_id = serializers.CharField()
    step_position = serializers.IntegerField()
    control_point_index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["open", "accepted", "rejected"])
    comment = serializers.CharField()
    proposed_status = serializers.CharField()
    verdict_before = serializers.CharField()
    verdict_after = serializers.CharField(allow_null=True)
    raised_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    resolution_comment = serializers.CharField(allow_null=True)
    resolved_by = serializers.CharField(allow_null=True)
    resolved_at = serializers.DateTimeField(allow_null=True)


class DisputeListQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=["open", "accepted", "rejected"], required=False)
    audit_config_id = serializers.IntegerField(min_value=1, required=False)
    audit_id = serializers.UUIDField(required=False)


class DisputeMetricsQuery(serializers.Serializer):
    audit_config_id = serializers.IntegerField(min_value=1)


class DisputeMetricsPoint(serializers.Serializer):
    step_position = serializers.IntegerField()
    control_point_index = serializers.IntegerField()
    disputes = serializers.IntegerField()
    open = serializers.IntegerField()
    accepted = serializers.IntegerField()
    rejected = serializers.IntegerField()
    acceptance_rate = serializers.FloatField(allow_null=True, help_text="Accepted / resolved.")
    median_days_to_resolve = serializers.FloatField(allow_null=True)


class DisputeMetricsOutput(serializers.Serializer):
    audit_config_id = serializers.IntegerField()
    disputes = serializers.IntegerField()
    acceptance_rate = serializers.FloatField(allow_null=True)
    control_points = DisputeMetricsPoint(many=True)


class TrustChangeOutput(serializers.Serializer):
    at = serializers.DateTimeField()
    state = serializers.ChoiceField(choices=["trusted", "withdrawn"])
    previous_state = serializers.ChoiceField(choices=["trusted", "withdrawn"])
    kappa = serializers.FloatField(allow_null=True)
    agreement = serializers.FloatField(allow_null=True)
    sample_size = serializers.IntegerField()


class TrustOutput(serializers.Serializer):
    state = serializers.ChoiceField(choices=["trusted", "withdrawn"])
    kappa = serializers.FloatField(allow_null=True, help_text="Over the latest AUDIT_TRUST_WINDOW reviews.")
    agreement = serializers.FloatField(allow_null=True)
    sample_size = serializers.IntegerField()
    computed_at = serializers.DateTimeField(allow_null=True)
    changed_at = serializers.DateTimeField(allow_null=True)
    changes = TrustChangeOutput(many=True)


class TrustPointOutput(serializers.Serializer):
    step_position = serializers.IntegerField()
    control_point_index = serializers.IntegerField()
    question = serializers.CharField()
    is_critical = serializers.BooleanField()
    trust = TrustOutput()


class ConfigTrustOutput(serializers.Serializer):
    audit_config_id = serializers.IntegerField()
    control_points = TrustPointOutput(many=True)


# --- Config versions, evaluations, re-audits ----------------------------------------------------------------


class VersionOutput(serializers.Serializer):
    version = serializers.IntegerField()
    name = serializers.CharField()
    is_draft = serializers.BooleanField()
    is_active = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField(allow_null=True)
    activated_at = serializers.DateTimeField(allow_null=True)
    activated_by = serializers.CharField(allow_null=True)
    activated_from_evaluation = serializers.CharField(allow_null=True)


class ActivateInput(serializers.Serializer):
    evaluation_id = serializers.UUIDField(required=False, allow_null=True, default=None)


class EvaluationInput(serializers.Serializer):
    version = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, default=None, help_text="Default: the active version."
    )
    fiche_ids = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        allow_empty=True,
        default=list,
        max_length=1000,
        help_text="Default: the most recent fiches reviewers judged for this config (AUDIT_EVALUATION_FICHES).",
    )
    use_rlm = serializers.BooleanField(required=False, default=False)


class EvaluationOutput(serializers.Serializer):
    id = serializers.CharField()
    audit_config_id = serializers.IntegerField()
    version = serializers.IntegerField()
    baseline_version = serializers.IntegerField(allow_null=True, help_text="The active version it runs beside.")
    fiche_ids = serializers.ListField(child=serializers.CharField())
    use_rlm = serializers.BooleanField()
    status = serializers.ChoiceField(choices=["pending", "running", "completed", "failed"])
    audits = serializers.DictField(help_text="Counts of its audits by status.")
    result = serializers.DictField(
        allow_null=True,
        help_text="Per control point and overall, beside the active version: agreement with reviewers, kappa; "
        "the changed verdicts with both quotes; tokens and wall time.",
    )
    error = serializers.CharField(allow_null=True)
    requested_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)


class EvaluationCreated(serializers.Serializer):
    evaluation_id = serializers.CharField()
    status = serializers.CharField()
    fiches = serializers.IntegerField()


class ReauditInput(serializers.Serializer):
    audit_config_id = serializers.IntegerField(min_value=1)
    version = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)
    fiche_ids = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, allow_empty=True, default=list, max_length=1000
    )
    date_from = serializers.DateField(required=False, allow_null=True, default=None)
    date_to = serializers.DateField(required=False, allow_null=True, default=None)
    use_rlm = serializers.BooleanField(required=False, default=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs["fiche_ids"] and not (attrs["date_from"] and attrs["date_to"]):
            raise serializers.ValidationError({"fiche_ids": ["Name the fiches, or give date_from and date_to."]})
        if attrs["date_from"] and attrs["date_to"] and attrs["date_from"] > attrs["date_to"]:
            raise serializers.ValidationError({"date_from": ["date_from is after date_to."]})
        return attrs


class ReauditCreated(serializers.Serializer):
    batch_id = serializers.CharField()
    fiches = serializers.IntegerField()


class DiffOutput(serializers.Serializer):
    audit_id = serializers.CharField()
    predecessor_id = serializers.CharField()
    fiche_id = serializers.CharField()
    config_version = serializers.DictField()
    status = serializers.DictField()
    niveau = serializers.DictField()
    score_percentage = serializers.DictField()
    is_compliant = serializers.DictField()
    changed_points = serializers.ListField(child=serializers.DictField())
    unchanged_points = serializers.IntegerField()


class ReauditSummaryOutput(serializers.Serializer):
    batch_id = serializers.CharField()
    fiches = serializers.IntegerField()
    completed = serializers.IntegerField()
    niveau_changed = serializers.IntegerField()
    points_moved = serializers.ListField(child=serializers.DictField())
    results = serializers.ListField(child=serializers.DictField())
