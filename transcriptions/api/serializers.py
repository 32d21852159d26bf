"""Input validation and documented output shapes of the transcriptions API."""

from django.conf import settings
from rest_framework import serializers

from transcriptions.models import Priority


class TranscribeInput(serializers.Serializer):
    priority = serializers.ChoiceField(choices=Priority.values, default=Priority.NORMAL, required=False)
    force = serializers.BooleanField(
        default=False, required=False, help_text="Transcribe again recordings already transcribed."
    )


class TranscribeOutput(serializers.Serializer):
    fiche_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["pending", "processing", "completed", "no_recordings"])
    total_recordings = serializers.IntegerField()
    to_transcribe = serializers.IntegerField()
    run_id = serializers.CharField(allow_null=True)


class StatusQuery(serializers.Serializer):
    include_words = serializers.BooleanField(default=False, required=False, help_text="Add each word's timing.")


class RecordingTranscriptOutput(serializers.Serializer):
    call_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["none", "pending", "processing", "completed", "failed"])
    language = serializers.CharField(allow_null=True)
    duration_seconds = serializers.FloatField(allow_null=True)
    text = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    attempts = serializers.IntegerField()
    transcribed_at = serializers.DateTimeField(allow_null=True)
    words = serializers.ListField(child=serializers.DictField(), required=False, help_text="With include_words.")
    speaker_map = serializers.DictField(required=False, help_text="Diarized speaker id → agent | client.")


class SttCostOutput(serializers.Serializer):
    currency = serializers.CharField(help_text="COST_CURRENCY")
    stt_cost = serializers.DecimalField(
        max_digits=20, decimal_places=6, coerce_to_string=True, help_text="The fiche's recordings (STT_PRICE_PER_HOUR)."
    )
    audio_seconds = serializers.FloatField()
    run_stt_cost = serializers.DecimalField(
        max_digits=20, decimal_places=6, coerce_to_string=True, allow_null=True, help_text="Its latest run's."
    )
    run_audio_seconds = serializers.FloatField(allow_null=True)


class StatusOutput(serializers.Serializer):
    fiche_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["none", "pending", "processing", "completed", "partial", "failed"])
    total_recordings = serializers.IntegerField()
    transcribed = serializers.IntegerField()
    failed = serializers.IntegerField()
    run_id = serializers.CharField(allow_null=True)
    waiting_budget = serializers.BooleanField(
        help_text="Its latest run waits for the daily speech-to-text budget (until it allows, e.g. the next day)."
    )
    recordings = RecordingTranscriptOutput(many=True)
    cost = SttCostOutput()


class TurnOutput(serializers.Serializer):
    call_id = serializers.CharField()
    speaker = serializers.ChoiceField(choices=["agent", "client"])
    start = serializers.FloatField(help_text="Seconds from the recording's start.")
    end = serializers.FloatField()
    text = serializers.CharField()


class TimelineOutput(serializers.Serializer):
    fiche_id = serializers.CharField()
    recordings = serializers.IntegerField(help_text="Recordings with a transcript.")
    turns = TurnOutput(many=True)


class BatchInput(serializers.Serializer):
    fiche_ids = serializers.ListField(child=serializers.CharField(max_length=64), allow_empty=False)
    priority = serializers.ChoiceField(choices=Priority.values, default=Priority.NORMAL, required=False)

    def validate_fiche_ids(self, value: list[str]) -> list[str]:
        ids = list(dict.fromkeys(v.strip() for v in value if v.strip()))  # order kept, duplicates once
        limit = settings.TRANSCRIPTION_BATCH_MAX
        if not ids:
            raise serializers.ValidationError("Give at least one fiche id.")
        if len(ids) > limit:
            raise serializers.ValidationError(f"At most {limit} fiche ids per batch (TRANSCRIPTION_BATCH_MAX).")
        return ids


class BatchCreated(serializers.Serializer):
    batch_id = serializers.CharField()
