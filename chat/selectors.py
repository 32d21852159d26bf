"""Reads of the chat: the entity a user may chat about (grant scope checked) and which parts of it the
user may read (each under its own grant), a conversation's messages for the API, and the history sent
to the LLM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from accounts.permissions import can_access
from audits.models import Audit
from audits.selectors import audit_for_user
from chat.exceptions import ChatFicheNotFound
from chat.models import ChatConversation, ChatMessage, EntityType, MessageStatus
from fiches import selectors as fiche_selectors
from fiches.models import FicheCache

if TYPE_CHECKING:
    from accounts.models import User

HISTORY_MESSAGES = 50


@dataclass(frozen=True)
class ChatParts:
    """What of the entity the asker may read, each under its own grant and scope (nothing else reaches
    the LLM): the fiche's sections (``fiches.read``), the calls' transcript (``transcriptions.read`` or
    ``recordings.read``), the audit's results (``audits.read``)."""

    fiche: bool
    transcript: bool
    audit: bool

    def withheld(self, *, has_audit: bool) -> list[str]:
        names = [("la fiche du client", self.fiche), ("la transcription des appels", self.transcript)]
        if has_audit:
            names.append(("les résultats de l'audit", self.audit))
        return [name for name, allowed in names if not allowed]


@dataclass(frozen=True)
class ChatEntity:
    """What a conversation is about: an audit (and its fiche) or a fiche, and what the asker may read of it."""

    entity_type: str
    entity_id: str
    fiche: FicheCache
    audit: Audit | None = None
    parts: ChatParts = ChatParts(fiche=False, transcript=False, audit=False)


def chat_parts(user: User, fiche: FicheCache, audit: Audit | None) -> ChatParts:
    return ChatParts(
        fiche=can_access(user, "fiches", fiche),
        transcript=can_access(user, "transcriptions", fiche) or can_access(user, "recordings", fiche),
        audit=audit is not None and can_access(user, "audits", fiche),
    )


def chat_entity_for_user(user: User, entity_type: str, entity_id: str) -> ChatEntity:
    """The audit (``audits.read`` scope) or the cached fiche (``fiches.read`` scope) the user may chat
    about, with the parts of it they may read; 404 when unknown, 403 when outside the scope. Nothing else
    is read before this check."""
    if entity_type == EntityType.AUDIT:
        audit = audit_for_user(user, entity_id)
        return ChatEntity(EntityType.AUDIT, str(audit.pk), audit.fiche, audit, chat_parts(user, audit.fiche, audit))
    fiche_id = str(entity_id).strip()
    fiche = fiche_selectors.fiche_in_scope(user, "fiches", fiche_id)  # foreign and unknown: one answer
    if fiche is None:
        raise ChatFicheNotFound(details={"fiche_id": fiche_id})
    return ChatEntity(EntityType.FICHE, fiche.fiche_id, fiche, None, chat_parts(user, fiche, None))


def conversation_of(user: User, entity: ChatEntity) -> ChatConversation | None:
    return ChatConversation.objects.filter(
        user=user, entity_type=entity.entity_type, entity_id=entity.entity_id
    ).first()


def message_dict(message: ChatMessage) -> dict[str, Any]:
    gated = message.citations or {}
    return {
        "id": message.pk,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "citations": gated.get("citations", []),
        "rejected": gated.get("rejected", []),
        "tokens": message.tokens,
        "created_at": message.created_at.isoformat(),
    }


def conversation_for_user(user: User, entity_type: str, entity_id: str) -> dict[str, Any]:
    """The user's own conversation about the entity, messages in chronological order (empty when none)."""
    entity = chat_entity_for_user(user, entity_type, entity_id)
    conversation = conversation_of(user, entity)
    messages = conversation.messages.order_by("created_at", "id") if conversation else []
    return {
        "entity_type": entity.entity_type,
        "entity_id": entity.entity_id,
        "conversation_id": conversation.pk if conversation else None,
        "messages": [message_dict(m) for m in messages],
    }


def history_for_llm(conversation: ChatConversation, *, limit: int = HISTORY_MESSAGES) -> list[dict[str, str]]:
    """The last ``limit`` complete messages (partial and failed answers left out), oldest first."""
    rows = list(
        conversation.messages.filter(status=MessageStatus.COMPLETE)
        .exclude(content="")
        .order_by("-created_at", "-id")
        .values("role", "content")[:limit]
    )
    return [{"role": row["role"], "content": row["content"]} for row in reversed(rows)]
