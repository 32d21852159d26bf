from rest_framework import serializers


class BatchOutput(serializers.Serializer):
    batch_id = serializers.CharField()
    operation_type = serializers.ChoiceField(choices=["transcription", "audit"])
    total = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["running", "completed"])
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
