from django.conf import settings
from django.db import models
from django.utils import timezone


class EntityType(models.TextChoices):
    AUDIT = "audit"
    FICHE = "fiche"


class MessageRole(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"


class MessageStatus(models.TextChoices):
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"  # the client went away mid-answer: the partial answer
    FAILED = "failed"  # the LLM failed mid-answer: what had arrived


class ChatConversation(models.Model):
    """One user's conversation about one audit or one fiche."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_conversations")
    entity_type = models.CharField(max_length=8, choices=EntityType.choices)
    entity_id = models.CharField(max_length=64, help_text="The audit's uuid or the CRM fiche id.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "chat_conversations"
        constraints = [
            models.UniqueConstraint(fields=["user", "entity_type", "entity_id"], name="chat_conversation_per_entity")
        ]

    def __str__(self) -> str:
        return f"{self.entity_type} {self.entity_id} ({self.user_id})"


class ChatMessage(models.Model):
    conversation = models.ForeignKey(ChatConversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=MessageRole.choices)
    content = models.TextField(blank=True, default="")
    citations = models.JSONField(
        default=dict, blank=True, help_text='The gated quotes of an answer: {"citations": [...], "rejected": [...]}.'
    )
    tokens = models.PositiveIntegerField(null=True, blank=True, help_text="Total tokens of the LLM call (answers).")
    status = models.CharField(max_length=16, choices=MessageStatus.choices, default=MessageStatus.COMPLETE)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "chat_messages"
        indexes = [models.Index(fields=["conversation", "created_at"], name="chat_messages_conversation")]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk}"
