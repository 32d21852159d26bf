"""Input validation and documented output shapes of the chat API."""

from __future__ import annotations

from rest_framework import serializers

MAX_MESSAGE_CHARS = 4000


class ChatInput(serializers.Serializer):
    message = serializers.CharField(max_length=MAX_MESSAGE_CHARS, allow_blank=False, trim_whitespace=True)


class ChatCitationOutput(serializers.Serializer):
    text = serializers.CharField(help_text="The transcript's own words.")
    speaker = serializers.CharField(allow_null=True)
    call_id = serializers.CharField()
    start = serializers.FloatField()
    end = serializers.FloatField()


class ChatRejectedQuoteOutput(serializers.Serializer):
    text = serializers.CharField(help_text="The quote as the answer wrote it.")
    reason = serializers.CharField(help_text="not_found, number_mismatch, negation_mismatch, too_short, ...")


class ChatMessageOutput(serializers.Serializer):
    id = serializers.IntegerField()
    role = serializers.CharField(help_text="user or assistant")
    content = serializers.CharField()
    status = serializers.CharField(help_text="complete, interrupted (the client went away) or failed (the LLM)")
    citations = ChatCitationOutput(many=True)
    rejected = ChatRejectedQuoteOutput(many=True)
    tokens = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class ChatConversationOutput(serializers.Serializer):
    entity_type = serializers.CharField(help_text="audit or fiche")
    entity_id = serializers.CharField()
    conversation_id = serializers.IntegerField(allow_null=True)
    messages = ChatMessageOutput(many=True)
