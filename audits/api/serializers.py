"""Input validation and documented output shapes of the audits API. Validation errors name the
field: the message reads ``steps: 2: weight: ...`` and ``details`` nests like the input
(``{"steps": {"2": {"weight": ["..."]}}}``)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class ControlPointInput(serializers.Serializer):
    question = serializers.CharField(max_length=2000, allow_blank=False, trim_whitespace=True)
    evidence_hint = serializers.CharField(max_length=2000, allow_blank=True, required=False, default="")
    is_critical = serializers.BooleanField(required=False, default=False)


class StepInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    instructions = serializers.CharField(allow_blank=True, required=False, default="")
    weight = serializers.IntegerField(min_value=1, help_text="> 0")
    is_critical = serializers.BooleanField(required=False, default=False)
    pass_ratio = serializers.FloatField(min_value=0.0, max_value=1.0, required=False, default=1.0)
    control_points = ControlPointInput(many=True, allow_empty=False)


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
    description = serializers.CharField(allow_blank=True, required=False, default="")
    is_active = serializers.BooleanField(required=False, default=True)
    thresholds = ThresholdsInput(required=False, default={"excellent": 90, "bon": 75, "acceptable": 60})
    steps = StepInput(many=True, allow_empty=False)


class AuditConfigPatchInput(serializers.Serializer):
    """A PATCH: any subset of the config's fields, each one whole (a ``steps`` list replaces the
    steps; ``thresholds`` needs its three values). Not a DRF partial serializer: that would make the
    nested steps and thresholds partial too."""

    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(allow_blank=True, required=False)
    is_active = serializers.BooleanField(required=False)
    thresholds = ThresholdsInput(required=False)
    steps = StepInput(many=True, allow_empty=False, required=False)


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
        if hasattr(data, "dict"):  # a form post's QueryDict: one value per key
            data = data.dict()
        if isinstance(data, dict) and "useRlm" in data and "use_rlm" not in data:
            data = {**data, "use_rlm": data["useRlm"]}
        return super().to_internal_value(data)


class AuditRunOutput(serializers.Serializer):
    audit_id = serializers.CharField()
    status = serializers.CharField()


class AuditListQuery(serializers.Serializer):
    fiche_id = serializers.CharField(required=False)
    status = serializers.ChoiceField(
        choices=["pending", "waiting_transcription", "running", "completed", "failed"], required=False
    )
    audit_config_id = serializers.IntegerField(required=False)
    niveau = serializers.ChoiceField(choices=["EXCELLENT", "BON", "ACCEPTABLE", "INSUFFISANT", "REJET"], required=False)
    is_compliant = serializers.BooleanField(required=False, allow_null=True, default=None)
    needs_review = serializers.BooleanField(required=False, allow_null=True, default=None)
    created_from = serializers.DateTimeField(required=False)
    created_to = serializers.DateTimeField(required=False)


class CitationOutput(serializers.Serializer):
    text = serializers.CharField()
    speaker = serializers.CharField(allow_null=True)
    call_id = serializers.CharField(allow_null=True)
    start = serializers.FloatField(allow_null=True)
    end = serializers.FloatField(allow_null=True)


class RejectedCitationOutput(serializers.Serializer):
    text = serializers.CharField()
    reason = serializers.ChoiceField(
        choices=["not_found", "number_mismatch", "negation_mismatch", "too_short", "speaker_mismatch"]
    )


class PointResultOutput(serializers.Serializer):
    index = serializers.IntegerField()
    question = serializers.CharField()
    is_critical = serializers.BooleanField()
    status = serializers.ChoiceField(choices=["pass", "fail", "uncertain", "not_applicable"])
    ai_status = serializers.ChoiceField(choices=["pass", "fail", "uncertain", "not_applicable"])
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
    status = serializers.ChoiceField(choices=["pending", "waiting_transcription", "running", "completed", "failed"])
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


class AuditOutput(AuditSummaryOutput):
    steps = StepResultOutput(many=True)
