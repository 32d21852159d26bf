"""Input validation and documented output shapes of the fiches API."""

import re
from datetime import date

from rest_framework import serializers

from fiches.selectors import decode_cursor


class FicheDetailQuery(serializers.Serializer):
    refresh = serializers.BooleanField(
        required=False, default=False, help_text="Refetch from the CRM (needs fiches.write; throttled per fiche)."
    )
    include_mail_devis = serializers.BooleanField(
        required=False, default=False, help_text="Include the (large) mail_devis section."
    )


class FicheMeta(serializers.Serializer):
    # The API's field is called "source"; DRF's metaclass moves declared fields off the class.
    source = serializers.ChoiceField(choices=["cache", "crm"])  # type: ignore[assignment]
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


# --- Progressive fetch ----------------------------------------------------------------------


class StrictDateField(serializers.DateField):
    """YYYY-MM-DD exactly (``strptime`` alone would accept ``2026-2-1``); impossible dates are
    rejected with the same clear message."""

    default_error_messages = {"invalid": "Expected a date as YYYY-MM-DD, got {value!r}."}

    def __init__(self, **kwargs):
        super().__init__(format="%Y-%m-%d", input_formats=["%Y-%m-%d"], **kwargs)

    def to_internal_value(self, value):
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            self.fail("invalid", value=str(value)[:40])
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.fail("invalid", value=value)


class WebhookQueryMixin(serializers.Serializer):
    refresh = serializers.BooleanField(
        required=False, default=False, help_text="Refetch every date in the background (needs fiches.write)."
    )
    webhookUrl = serializers.CharField(
        required=False, allow_blank=False, max_length=2048, help_text="Receives signed progress webhooks."
    )
    webhookSecret = serializers.CharField(
        required=False,
        allow_blank=False,
        max_length=512,
        write_only=True,
        help_text="Signing secret (Standard Webhooks; `whsec_…` base64 or any string). Never returned.",
    )

    def validate(self, attrs):
        if "webhookSecret" in attrs and "webhookUrl" not in attrs:
            raise serializers.ValidationError({"webhookSecret": "webhookSecret needs a webhookUrl."})
        return attrs


class ByDateRangeQuery(WebhookQueryMixin):
    startDate = StrictDateField(help_text="First sales date, YYYY-MM-DD.")
    endDate = StrictDateField(help_text="Last sales date (inclusive), YYYY-MM-DD.")


class ByDateQuery(WebhookQueryMixin):
    date = StrictDateField(help_text="The sales date, YYYY-MM-DD.")


class CachedFiche(serializers.Serializer):
    fiche_id = serializers.CharField()
    cle = serializers.CharField(allow_null=True)
    sales_date = serializers.DateField()
    groupe = serializers.CharField(allow_null=True)
    crm_user_id = serializers.CharField(allow_null=True)
    agent_name = serializers.CharField(allow_null=True)
    prospect_nom = serializers.CharField(allow_null=True)
    prospect_prenom = serializers.CharField(allow_null=True)
    statut = serializers.CharField(allow_null=True)
    produit = serializers.CharField(allow_null=True)
    recordings_count = serializers.IntegerField()
    has_recordings = serializers.BooleanField()
    details_fetched_at = serializers.DateTimeField(allow_null=True)
    last_revalidated_at = serializers.DateTimeField(allow_null=True)


class RangeMeta(serializers.Serializer):
    startDate = serializers.DateField()
    endDate = serializers.DateField()
    totalDays = serializers.IntegerField()
    datesAlreadyFetched = serializers.ListField(child=serializers.DateField())
    datesRemaining = serializers.ListField(child=serializers.DateField())
    complete = serializers.BooleanField()
    backgroundJobId = serializers.UUIDField(allow_null=True)
    jobReused = serializers.BooleanField()
    forceRefresh = serializers.BooleanField()
    totalFiches = serializers.IntegerField(help_text="Cached fiches of the range visible to the caller.")
    cachedFiches = serializers.IntegerField()


class RangeOutput(serializers.Serializer):
    fiches = CachedFiche(many=True)
    meta = RangeMeta()


class JobOutput(serializers.Serializer):
    jobId = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["pending", "processing", "complete", "failed"])
    startDate = serializers.DateField()
    endDate = serializers.DateField()
    progress = serializers.IntegerField(min_value=0, max_value=100)
    completedDays = serializers.IntegerField()
    totalDays = serializers.IntegerField()
    totalFiches = serializers.IntegerField()
    datesCompleted = serializers.ListField(child=serializers.DateField())
    datesRemaining = serializers.ListField(child=serializers.DateField())
    datesFailed = serializers.ListField(child=serializers.DateField())
    forceRefresh = serializers.BooleanField()
    error = serializers.CharField(allow_null=True)
    createdAt = serializers.DateTimeField()
    startedAt = serializers.DateTimeField(allow_null=True)
    completedAt = serializers.DateTimeField(allow_null=True)


class WebhookDeliverySummary(serializers.Serializer):
    id = serializers.IntegerField()
    event = serializers.CharField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    lastStatusCode = serializers.IntegerField(allow_null=True)
    createdAt = serializers.DateTimeField()


class JobDetailOutput(JobOutput):
    webhookConfigured = serializers.BooleanField()
    webhookDeliveries = WebhookDeliverySummary(many=True, help_text="The last 10 deliveries.")


class JobPollOutput(JobOutput):
    partialData = CachedFiche(
        many=True, help_text="Cached fiches of the job's range, filtered by your scope: at most `limit` of them."
    )
    partialDataTruncated = serializers.BooleanField(help_text="More cached fiches follow: fetch them with the cursor.")
    partialDataNextCursor = serializers.CharField(
        allow_null=True, help_text="Pass it as `cursor` for the next page; null on the last page."
    )


class CursorField(serializers.CharField):
    def to_internal_value(self, data):
        try:
            return decode_cursor(super().to_internal_value(data))
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


class JobPollQuery(serializers.Serializer):
    jobId = serializers.UUIDField()
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=5000,
        help_text="At most this many fiches in partialData (default POLL_PARTIAL_DATA_LIMIT).",
    )
    cursor = CursorField(required=False, max_length=200, help_text="partialDataNextCursor of the previous page.")


class JobListQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=["pending", "processing", "complete", "failed"], required=False)


class WarmInput(serializers.Serializer):
    startDate = StrictDateField(help_text="First sales date, YYYY-MM-DD.")
    endDate = StrictDateField(help_text="Last sales date (inclusive), YYYY-MM-DD.")

    def validate(self, attrs):
        if attrs["endDate"] < attrs["startDate"]:
            raise serializers.ValidationError({"endDate": "endDate must be on or after startDate."})
        return attrs


class WarmOutput(serializers.Serializer):
    taskId = serializers.CharField()
    startDate = serializers.DateField()
    endDate = serializers.DateField()
