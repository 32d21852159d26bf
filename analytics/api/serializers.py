"""Output shapes of the analytics API (documentation: the views return the selectors' dicts)."""

from __future__ import annotations

from rest_framework import serializers


class NiveauxOutput(serializers.Serializer):
    EXCELLENT = serializers.IntegerField()
    BON = serializers.IntegerField()
    ACCEPTABLE = serializers.IntegerField()
    INSUFFISANT = serializers.IntegerField()
    REJET = serializers.IntegerField()


class ComplianceRowOutput(serializers.Serializer):
    key = serializers.CharField(allow_null=True, help_text="agent id, group, product, version id or config:step:point.")
    label = serializers.CharField()  # type: ignore[assignment]  # the output key, not Field.label
    period = serializers.DateField(allow_null=True, help_text="The day, week's Monday or month's first day.")
    compliance_rate = serializers.FloatField(allow_null=True)
    # per audit (overall, agent, group, product, config_version)
    audits = serializers.IntegerField(required=False)
    compliant = serializers.IntegerField(required=False)
    average_score = serializers.FloatField(required=False, allow_null=True)
    niveaux = NiveauxOutput(required=False)
    critical_misses = serializers.IntegerField()
    audits_with_critical_miss = serializers.IntegerField(required=False)
    needs_review = serializers.IntegerField(required=False)
    audited_minutes = serializers.FloatField(required=False)
    llm_cost = serializers.DecimalField(max_digits=20, decimal_places=6, required=False)
    stt_cost = serializers.DecimalField(max_digits=20, decimal_places=6, required=False)
    cost = serializers.DecimalField(max_digits=20, decimal_places=6, required=False)
    cost_per_audit = serializers.DecimalField(max_digits=20, decimal_places=6, required=False, allow_null=True)
    cost_per_audited_minute = serializers.DecimalField(max_digits=20, decimal_places=6, required=False, allow_null=True)
    # per control point
    config_id = serializers.IntegerField(required=False)
    config_name = serializers.CharField(required=False, allow_null=True)
    step_position = serializers.IntegerField(required=False)
    step_name = serializers.CharField(required=False, allow_null=True)
    control_point_index = serializers.IntegerField(required=False)
    is_critical = serializers.BooleanField(required=False)
    verdicts = serializers.IntegerField(required=False)
    applicable = serializers.IntegerField(required=False)
    passed = serializers.IntegerField(required=False)
    failed = serializers.IntegerField(required=False)
    uncertain = serializers.IntegerField(required=False)
    pending = serializers.IntegerField(required=False)
    not_applicable = serializers.IntegerField(required=False)


class FiltersOutput(serializers.Serializer):
    config_id = serializers.IntegerField(allow_null=True)
    group = serializers.CharField(allow_null=True)
    agent = serializers.CharField(allow_null=True)
    product = serializers.CharField(allow_null=True)


class ComplianceOutput(serializers.Serializer):
    from_ = serializers.DateField()
    to = serializers.DateField()
    by = serializers.CharField()
    period = serializers.CharField()
    filters = FiltersOutput()
    rows = ComplianceRowOutput(many=True)

    def get_fields(self):  # "from" is a keyword
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields


class PreviousOutput(serializers.Serializer):
    compliance_rate = serializers.FloatField(allow_null=True)
    audits = serializers.IntegerField(required=False)
    applicable = serializers.IntegerField(required=False)


class WorstRowOutput(ComplianceRowOutput):
    previous = PreviousOutput()
    change = serializers.FloatField(allow_null=True, help_text="Rate now - rate before (null: no rate before).")


class WorstOutput(serializers.Serializer):
    from_ = serializers.DateField()
    to = serializers.DateField()
    previous_from = serializers.DateField()
    previous_to = serializers.DateField()
    by = serializers.CharField()
    min_count = serializers.IntegerField()
    rows = WorstRowOutput(many=True)

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields
