from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers

from audits.api.serializers import AuditSummaryOutput


class QueueInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=4000)
    is_active = serializers.BooleanField(required=False)
    include_rejet = serializers.BooleanField(required=False, help_text="Every REJET audit enters (default true).")
    include_needs_review = serializers.BooleanField(required=False, help_text="Every needs_review audit (true).")
    include_uncertain = serializers.BooleanField(
        required=False, help_text="Every audit with an uncertain point (true)."
    )
    include_untrusted = serializers.BooleanField(
        required=False, help_text="Every audit with a point whose AI trust is withdrawn (true)."
    )
    sample_percent = serializers.FloatField(
        required=False, min_value=0.0, max_value=100.0, help_text="Share of the other audits sampled (0)."
    )
    seed = serializers.IntegerField(
        required=False, min_value=0, max_value=2**62, help_text="The sample's seed (default: random, stored)."
    )
    audit_config_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=100, help_text="None: every config."
    )
    groupes = serializers.ListField(
        child=serializers.CharField(max_length=128), required=False, max_length=200, help_text="None: every group."
    )


class QueuePatchInput(QueueInput):
    name = serializers.CharField(max_length=200, required=False)


class ProgressOutput(serializers.Serializer):
    waiting = serializers.IntegerField(help_text="Waiting, and claims whose lease expired.")
    claimed = serializers.IntegerField()
    done = serializers.IntegerField()
    median_review_seconds = serializers.FloatField(allow_null=True, help_text="Claim to review, done items.")
    scope = serializers.ChoiceField(
        choices=["queue", "yours"], help_text="queue: the whole queue; yours: the items in your audits write scope."
    )


class RulesOutput(serializers.Serializer):
    rejet = serializers.BooleanField()
    needs_review = serializers.BooleanField()
    uncertain = serializers.BooleanField()
    untrusted = serializers.BooleanField()
    sample_percent = serializers.FloatField()
    seed = serializers.IntegerField()


class QueueOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    is_active = serializers.BooleanField()
    rules = RulesOutput()
    audit_config_ids = serializers.ListField(child=serializers.IntegerField())
    groupes = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    progress = ProgressOutput()


class ItemOutput(serializers.Serializer):
    id = serializers.IntegerField()
    queue_id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=["waiting", "claimed", "done"])
    reasons = serializers.ListField(child=serializers.CharField())
    agent = serializers.CharField()
    week = serializers.DateField()
    entered_at = serializers.DateTimeField()
    claimed_by = serializers.CharField(allow_null=True)
    claimed_at = serializers.DateTimeField(allow_null=True)
    lease_expires_at = serializers.DateTimeField(allow_null=True)
    done_at = serializers.DateTimeField(allow_null=True)
    audit = AuditSummaryOutput()


class ClaimOutput(ItemOutput):
    resumed = serializers.BooleanField(help_text="You already held this item (a live claim in this queue).")


class ItemListQuery(serializers.Serializer):
    state = serializers.ChoiceField(choices=["waiting", "claimed", "done"], required=False)


class BackfillInput(serializers.Serializer):
    date_from = serializers.DateField(required=False, allow_null=True, default=None)
    date_to = serializers.DateField(required=False, allow_null=True, default=None)

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            return super().to_internal_value(data)  # "Invalid data. Expected a dictionary" (400)
        data = dict(data)
        for name in ("from", "to"):
            if name in data:
                data[f"date_{name}"] = data.pop(name)
        return super().to_internal_value(data)

    def validate(self, attrs):
        if attrs["date_from"] and attrs["date_to"] and attrs["date_from"] > attrs["date_to"]:
            raise serializers.ValidationError({"date_from": ["from is after to."]})
        return attrs


class BackfillOutput(serializers.Serializer):
    entered = serializers.IntegerField()
    sample_floor = serializers.IntegerField()
