"""Input validation and documented output shapes of the fiches API."""

from rest_framework import serializers


class FicheDetailQuery(serializers.Serializer):
    refresh = serializers.BooleanField(
        required=False, default=False, help_text="Refetch from the CRM (needs fiches.write; throttled per fiche)."
    )
    include_mail_devis = serializers.BooleanField(
        required=False, default=False, help_text="Include the (large) mail_devis section."
    )


class FicheMeta(serializers.Serializer):
    source = serializers.ChoiceField(choices=["cache", "crm"])
    hasDetails = serializers.BooleanField()
    stale = serializers.BooleanField(help_text="True when the CRM was unreachable and the cached copy is served.")
    staleReason = serializers.CharField(allow_null=True)
    refreshSkipped = serializers.BooleanField(help_text="True when refresh=true fell inside the per-fiche cooldown.")
    nextRefreshAllowedAt = serializers.DateTimeField(allow_null=True)
    detailsFetchedAt = serializers.DateTimeField(allow_null=True)
    lastRevalidatedAt = serializers.DateTimeField(allow_null=True)


class FicheDetailOutput(serializers.Serializer):
    success = serializers.BooleanField()
    message = serializers.CharField(allow_null=True)
    cle = serializers.CharField(allow_null=True)
    fiche = serializers.DictField(help_text="The CRM gateway's `fiche` object (see crm-gateway.md).")
    meta = FicheMeta()


class RecordingOutput(serializers.Serializer):
    call_id = serializers.CharField()
    recording_url = serializers.CharField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    duration_seconds = serializers.FloatField(allow_null=True)
    direction = serializers.CharField(allow_null=True)
    from_number = serializers.CharField(allow_null=True)
    to_number = serializers.CharField(allow_null=True)


class RecordingsOutput(serializers.Serializer):
    fiche_id = serializers.CharField()
    count = serializers.IntegerField()
    recordings = RecordingOutput(many=True)
