"""Chat with the LLM about an audit or a fiche: the context, the stored messages, and the answer
streamed as Server-Sent Events with its quotes gated against the fiche's timeline.

``chat_start`` does everything that can fail with a plain JSON error (scope, configuration, the LLM
slot) and stores the user message; it returns a ``ChatStream``, the SSE body, which holds the LLM slot
until it ends or is closed. Closing it (the client went away) closes the LLM stream at once, releases
the slot and stores the partial answer with status ``interrupted``.

Nothing through a side door: the context holds only the parts the asker may read, each under its own
grant (``chat.selectors.ChatParts``: fiche sections, the transcript, the audit's results); a part left
out is named in the system message so the answer can say so, and quotes are checked only against a
transcript the asker may read. Slots: a user holds at most ``CHAT_MAX_STREAMS_PER_USER`` streams, and
chats together at most ``LLM_MAX_CONCURRENCY - LLM_AUDIT_RESERVED_SLOTS`` LLM calls, so audits always
keep their reserved share; Redis (which holds the slots) down answers 503.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import orjson
import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.evidence import EvidenceIndex
from audits.selectors import audit_dict
from audits.transcript_tools import MAX_SEARCH_RESULTS, TranscriptTools
from chat.exceptions import ChatBusy, ChatLlmNotConfigured, ChatSlotsUnavailable, ChatStreamsLimit
from chat.models import ChatConversation, ChatMessage, MessageRole, MessageStatus
from chat.selectors import ChatEntity, chat_entity_for_user, history_for_llm
from core import shutdown
from core.limits import LimitBusy, Semaphore
from costs import budgets
from costs.models import UsagePurpose
from costs.services import record_llm_usage
from fiches.selectors import fiche_payload
from fiches.services.access import require_not_erased
from llm.client import CHARS_PER_TOKEN, ChatEvent, LlmError, LlmTransientError, Usage, stream_chat
from llm.slots import llm_semaphore
from privacy.access import sees_personal_data
from privacy.redaction import ALL_KINDS, STORAGE_KINDS, redact_data, redact_text
from transcriptions.selectors import Timeline, timeline_for
from transcriptions.timeline import format_offset

if TYPE_CHECKING:
    from accounts.models import User
    from audits.models import Audit
    from fiches.models import FicheCache

logger = logging.getLogger("chat")

FULL_TIMELINE_MAX_CHARS = 60_000  # longer timelines: only the chunks best matching the question
EXCERPT_CHUNKS = 8
SLOT_WAIT_SECONDS = 3.0
FICHE_SECTIONS = ("information", "prospect")

SYSTEM_PROMPT = (
    "Vous êtes l'assistant d'un service qualité qui contrôle des ventes d'assurance conclues par téléphone. "
    "Vous répondez aux questions de l'utilisateur sur {subject} à partir des éléments ci-dessous : {parts}.\n"
    "Règles :\n"
    "1. Répondez uniquement à partir des appels et des éléments fournis ; n'inventez jamais rien.\n"
    "2. Pour rapporter ce que le client ou le conseiller a dit, citez ses paroles mot pour mot entre guillemets "
    "français, exactement comme dans la transcription, sans les reformuler.\n"
    "3. Si les appels ne disent rien sur la question, dites clairement que l'appel ne le dit pas.\n"
    "4. Répondez en français, de façon brève et précise."
)
LLM_UNAVAILABLE = "Le modèle de langage est momentanément indisponible ; réessayez dans un instant."
LLM_REFUSED = "Le modèle de langage n'a pas pu répondre à cette demande."
INTERNAL_ERROR = "Une erreur interne a interrompu la réponse."
SERVER_STOPPING = "Le serveur redémarre : la réponse a été interrompue. Posez la question à nouveau."


class _ServerStopping(Exception):
    """This web process was told to stop CHAT_STOP_SECONDS ago: the answer ends now, before the server kills it."""


# Quotes: passages in « guillemets » or in straight or curly double quotes.
_QUOTE_RE = re.compile(r"«\s*([^«»]+?)\s*»|\"([^\"\n]+)\"|“([^“”\n]+)”")


# --- Quotes and the evidence gate --------------------------------------------------------------------


def extract_quotes(text: str) -> list[str]:
    """The passages ``text`` quotes, in order, once each."""
    quotes = ("".join(group or "" for group in match.groups()).strip() for match in _QUOTE_RE.finditer(text))
    return list(dict.fromkeys(quote for quote in quotes if quote))


def gate_quotes(text: str, turns: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The answer's quotes checked against the timeline: ``{"citations": [{text, speaker, call_id, start,
    end}], "rejected": [{text, reason}]}``; a citation's ``text`` is the transcript's own words."""
    quotes = extract_quotes(text)
    gated: dict[str, list[dict[str, Any]]] = {"citations": [], "rejected": []}
    if not quotes:
        return gated
    index = EvidenceIndex(turns, threshold=settings.EVIDENCE_MATCH_THRESHOLD)
    for quote in quotes:
        check = index.check(quote)
        if check.verified:
            gated["citations"].append(
                {
                    "text": check.matched_text or quote,
                    "speaker": check.speaker,
                    "call_id": check.call_id,
                    "start": check.start,
                    "end": check.end,
                }
            )
        else:
            gated["rejected"].append({"text": quote, "reason": check.reason})
    return gated


# --- Context -------------------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def fiche_context(fiche: FicheCache, *, redacted: bool = False) -> str:
    """The fiche's basics (information and prospect; never ``mail_devis``); ``redacted``: its personal data
    (phone, e-mail, date of birth, address...) replaced by placeholders."""
    body = fiche_payload(fiche)["fiche"]
    if redacted:
        body = redact_data(body)
    lines = [f"## Fiche {fiche.fiche_id}"]
    lines += [f"{section} : {_json(body[section])}" for section in FICHE_SECTIONS if body.get(section)]
    return "\n".join(lines)


def _number(value: float | None) -> str:
    if value is None:
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _yes_no(value: bool | None) -> str:
    return "non déterminé" if value is None else ("oui" if value else "non")


def audit_context(audit: Audit, *, redacted: bool = False) -> str:
    """The audit's results: niveau, score, each step and control point with its verified citations
    (written as timeline lines; ``redacted``: with placeholders)."""
    data = audit_dict(audit, redacted=redacted)
    lines = [
        "## Résultats de l'audit",
        f"Statut : {data['status']} ; niveau : {data['niveau'] or 'non déterminé'} ; "
        f"score : {_number(data['overall_score'])}/{_number(data['max_score'])} "
        f"({_number(data['score_percentage'])} %) ; conforme : {_yes_no(data['is_compliant'])}",
    ]
    for step in data["steps"]:
        lines.append(
            f"Étape {step['position']} — {step['name']} : {step['status']}, score "
            f"{_number(step['score'])}/{_number(step['max_score'])}, conforme : {_yes_no(step['conforme'])}"
        )
        for point in step["control_points"]:
            lines.append(f"- Point {point['index']} ({point['status']}) : {point['question']}")
            for citation in point["citations"]:
                speaker = "Agent" if citation["speaker"] == "agent" else "Client"
                lines.append(f"  [{format_offset(citation['start'] or 0.0)}] {speaker}: {citation['text']}")
    return "\n".join(lines)


def timeline_context(timeline: Timeline, question: str) -> str:
    """The whole rendered timeline, or when it is longer than ``FULL_TIMELINE_MAX_CHARS`` the chunks
    best matching the question (in call order)."""
    if not timeline.turns:
        return "## Appels\nAucune transcription n'est disponible pour cette fiche."
    if len(timeline.text) <= FULL_TIMELINE_MAX_CHARS:
        return f"## Appels\n{timeline.text}"
    tools = TranscriptTools(timeline.chunks)
    wanted = {hit["chunk_id"] for hit in tools.search(question, MAX_SEARCH_RESULTS)[:EXCERPT_CHUNKS]}
    excerpts = [chunk for chunk in tools.chunks if chunk["chunk_id"] in wanted]
    lines = [
        "## Appels (extraits)",
        "La transcription complète est trop longue : voici les passages qui correspondent le mieux à la question.",
    ]
    if not excerpts:
        lines.append("Aucun passage des appels ne correspond à la question.")
    for chunk in excerpts:
        lines.append(f"### Appel {chunk['call_id']} — extrait {chunk['chunk_id']}\n{chunk['text']}")
    return "\n".join(lines)


def build_messages(
    *,
    entity: ChatEntity,
    timeline: Timeline,
    history: Sequence[Mapping[str, str]],
    question: str,
    redacted: bool = False,
) -> list[dict[str, str]]:
    """The request's messages: one system message (rules, fiche, audit results, calls), the history in
    chronological order, then the question. ``redacted``: personal data replaced by placeholders in all of it
    (``timeline`` must then be the redacted one); card numbers and codes are never sent either way."""
    kinds = ALL_KINDS if redacted else STORAGE_KINDS
    allowed = entity.parts
    named = [("la fiche du client", allowed.fiche)]
    if entity.audit is not None:
        named.append(("les résultats de l'audit", allowed.audit))
    named.append(("les appels", allowed.transcript))
    parts = ", ".join(name for name, ok in named if ok) or "aucun élément"
    subject = "un audit qualité d'une vente" if entity.audit is not None else "une vente (fiche client)"
    sections = [SYSTEM_PROMPT.format(subject=subject, parts=parts)]
    withheld = allowed.withheld(has_audit=entity.audit is not None)
    if withheld:
        sections.append(
            "Éléments non communiqués (l'utilisateur n'y a pas accès) : "
            + ", ".join(withheld)
            + ". Si la question porte sur ces éléments, répondez que vous n'y avez pas accès."
        )
    if allowed.fiche:
        sections.append(fiche_context(entity.fiche, redacted=redacted))
    if entity.audit is not None and allowed.audit:
        sections.append(audit_context(entity.audit, redacted=redacted))
    if allowed.transcript:
        sections.append(timeline_context(timeline, question))
    return [
        {"role": "system", "content": "\n\n".join(sections)},
        *({"role": item["role"], "content": redact_text(item["content"], kinds)} for item in history),
        {"role": "user", "content": redact_text(question, kinds)},
    ]


# --- Storage --------------------------------------------------------------------------------------------


def chat_message_store(
    *,
    conversation_id: int,
    role: str,
    content: str,
    status: str = MessageStatus.COMPLETE,
    citations: dict[str, Any] | None = None,
    tokens: int | None = None,
) -> ChatMessage:
    with transaction.atomic():
        message = ChatMessage.objects.create(
            conversation_id=conversation_id,
            role=role,
            content=content,
            status=status,
            citations=citations or {},
            tokens=tokens,
        )
        ChatConversation.objects.filter(pk=conversation_id).update(updated_at=timezone.now())
    return message


# --- The stream -----------------------------------------------------------------------------------------


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ChatStream:
    """The SSE body of one answer: ``token`` events as the LLM streams, then ``citations`` and ``done``
    (or ``error``). Holds the LLM slot (``slot``) until the LLM is done or the stream is closed."""

    def __init__(
        self,
        *,
        conversation_id: int,
        messages: list[dict[str, str]],
        turns: list[dict[str, Any]],
        slot: ExitStack,
        fiche_id: int | None = None,
        user_id: int | None = None,
    ) -> None:
        self.conversation_id = conversation_id
        self._messages = messages
        self._turns = turns
        self._slot = slot
        self._fiche_id = fiche_id
        self._user_id = user_id
        self._llm: Iterator[ChatEvent] | None = None
        self._usage: Usage | None = None  # what the server reported (its final usage chunk)
        self._events = self._run()

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> bytes:
        return next(self._events)

    def close(self) -> None:
        """Called by the server when the response ends or the client went away."""
        try:
            self._events.close()
        finally:
            self._release()

    def _release(self) -> None:
        """Close the LLM stream (closing its HTTP request) and free the slot; idempotent."""
        try:
            close = getattr(self._llm, "close", None)  # a generator: closing it closes the HTTP stream
            if close is not None:
                close()
        finally:
            self._slot.close()

    def _store(self, content: str, status: str, gated: dict[str, Any] | None = None, tokens: int | None = None) -> int:
        """Store the answer and, in the same transaction, the LLM usage it cost (once: the answer is stored
        once). An answer cut short (the client went away, the LLM failed mid-answer) before the server's
        usage arrived is recorded as estimated (characters / 4 of the request and of what had arrived): the
        provider bills what it generated."""
        usage = self._usage
        if usage is None and self._llm is not None and content:
            prompt = math.ceil(sum(len(m.get("content") or "") for m in self._messages) / CHARS_PER_TOKEN)
            completion = math.ceil(len(content) / CHARS_PER_TOKEN)
            usage = Usage(prompt, completion, prompt + completion, True)
        with transaction.atomic():
            message = chat_message_store(
                conversation_id=self.conversation_id,
                role=MessageRole.ASSISTANT,
                content=content,
                status=status,
                citations=gated or {"citations": [], "rejected": []},
                tokens=tokens,
            )
            if usage is not None:
                record_llm_usage(
                    purpose=UsagePurpose.CHAT,
                    usage=usage,
                    model=str(settings.LLM_MODEL),
                    conversation_id=self.conversation_id,
                    fiche_id=self._fiche_id,
                    user_id=self._user_id,
                )
        return message.pk

    def _run(self) -> Generator[bytes, None, None]:
        parts: list[str] = []
        stored = False
        try:
            yield b": stream\n\n"  # headers and a first byte go out at once
            self._llm = stream_chat(messages=self._messages)
            tokens: int | None = None
            for event in self._llm:
                if event.kind == "delta":
                    parts.append(event.text)
                    yield sse("token", {"delta": event.text})
                elif event.usage is not None:
                    tokens = event.usage.total_tokens
                    self._usage = event.usage
                if shutdown.stop_deadline_passed(settings.CHAT_STOP_SECONDS):
                    raise _ServerStopping
            self._release()  # the LLM is done: free the slot before gating and storing
            content = "".join(parts)
            gated = gate_quotes(content, self._turns)
            message_id = self._store(content, MessageStatus.COMPLETE, gated, tokens)
            stored = True
            logger.info(
                "chat_answer_done",
                extra={"conversation_id": self.conversation_id, "message_id": message_id, "tokens": tokens},
            )
            yield sse("citations", gated)
            yield sse("done", {"message_id": message_id, "tokens": tokens})
        except GeneratorExit:
            self._release()
            if not stored:
                self._store("".join(parts), MessageStatus.INTERRUPTED)
                logger.info("chat_answer_interrupted", extra={"conversation_id": self.conversation_id})
            raise
        except _ServerStopping:
            self._release()
            self._store("".join(parts), MessageStatus.INTERRUPTED)
            logger.info("chat_answer_cut_by_stop", extra={"conversation_id": self.conversation_id})
            yield sse("error", {"message": SERVER_STOPPING, "code": "server_stopping"})
        except Exception as exc:
            self._release()
            if isinstance(exc, LlmError):
                logger.warning("chat_llm_error", extra={"conversation_id": self.conversation_id, "error": str(exc)})
                text = LLM_UNAVAILABLE if isinstance(exc, LlmTransientError) else LLM_REFUSED
            else:
                logger.exception("chat_stream_failed", extra={"conversation_id": self.conversation_id})
                text = INTERNAL_ERROR
            if not stored:
                self._store("".join(parts), MessageStatus.FAILED)
            yield sse("error", {"message": text})
        finally:
            self._release()


def _require_llm() -> None:
    key = str(settings.LLM_API_KEY or "").strip().strip("'\"").strip()
    if not str(settings.LLM_BASE_URL or "").strip() or not key:
        raise ChatLlmNotConfigured(details={"missing": "LLM_API_KEY" if not key else "LLM_BASE_URL"})


def chat_llm_semaphore() -> Semaphore:
    """The LLM calls chats may hold together: ``LLM_MAX_CONCURRENCY`` less the audits' reserved share."""
    limit = settings.LLM_MAX_CONCURRENCY - settings.LLM_AUDIT_RESERVED_SLOTS
    return Semaphore("llm-chat", limit=max(1, limit), lease_seconds=settings.CLAIM_LEASE_SECONDS)


def chat_user_semaphore(user: User) -> Semaphore:
    return Semaphore(
        f"chat-streams:{user.pk}",
        limit=settings.CHAT_MAX_STREAMS_PER_USER,
        lease_seconds=settings.CLAIM_LEASE_SECONDS,
    )


def _take_slots(user: User) -> ExitStack:
    """The user's stream slot, a chat slot and an LLM slot (held until the stream ends). 429 when the
    user already has ``CHAT_MAX_STREAMS_PER_USER`` streams or no slot frees up in time; 503 when Redis,
    which holds them, cannot be reached."""
    holder = f"chat:{user.pk}:{uuid.uuid4().hex}"
    slots = ExitStack()
    try:
        try:
            slots.enter_context(chat_user_semaphore(user).slot(holder, wait=0, heartbeat=True))
        except LimitBusy:
            raise ChatStreamsLimit(
                retry_after=5,
                details={"limit": "chat_streams_per_user", "max": settings.CHAT_MAX_STREAMS_PER_USER},
            ) from None
        slots.enter_context(chat_llm_semaphore().slot(holder, wait=SLOT_WAIT_SECONDS, heartbeat=True))
        slots.enter_context(llm_semaphore().slot(holder, wait=SLOT_WAIT_SECONDS, heartbeat=True))
    except LimitBusy as exc:
        slots.close()
        raise ChatBusy(retry_after=math.ceil(exc.retry_after), details={"limit": "llm"}) from None
    except redis.RedisError:
        slots.close()
        logger.warning("chat_slots_unavailable", extra={"user_id": user.pk})
        raise ChatSlotsUnavailable() from None
    except BaseException:
        slots.close()
        raise
    return slots


def chat_start(*, user: User, entity_type: str, entity_id: str, message: str) -> ChatStream:
    """Check the scope and what of the entity the user may read (before reading anything else), the LLM
    configuration, the daily LLM budget and free slots (waiting up to ``SLOT_WAIT_SECONDS``), build the
    context from the readable parts only, store the user message, and return the answer's stream. Raises
    404/403 (entity), 503 (LLM not configured, Redis down), 429 (per-user stream cap, no slot, the daily LLM
    budget reached: ``budget_exhausted``)."""
    entity = chat_entity_for_user(user, entity_type, entity_id)
    require_not_erased(entity.fiche, lock=False)  # nothing of an erased sale is sent to the LLM (privacy)
    _require_llm()
    budgets.check("llm", user)  # at the daily LLM budget (global or the user's): 429 budget_exhausted
    slot = _take_slots(user)
    try:
        conversation, _ = ChatConversation.objects.get_or_create(
            user=user, entity_type=entity.entity_type, entity_id=entity.entity_id
        )
        # Redacted for the LLM (LLM_REDACT_PII), and always for a reader who does not see personal data in
        # clear (privacy.access): the answer, its quotes and citations hold nothing they could not read.
        redacted = settings.LLM_REDACT_PII or not sees_personal_data(user)
        no_calls = Timeline(entity.fiche.fiche_id, [], [], "", 0)
        timeline = timeline_for(entity.fiche, redacted=redacted) if entity.parts.transcript else no_calls
        messages = build_messages(
            entity=entity,
            timeline=timeline,
            history=history_for_llm(conversation),
            question=message,
            redacted=redacted,
        )
    except BaseException:
        slot.close()
        raise
    try:
        # A card number or a code typed in a question is never stored (nor sent).
        stored_question = redact_text(message, STORAGE_KINDS)
        chat_message_store(conversation_id=conversation.pk, role=MessageRole.USER, content=stored_question)
    except BaseException:
        slot.close()
        raise
    return ChatStream(
        conversation_id=conversation.pk,
        messages=messages,
        turns=timeline.turns,
        slot=slot,
        fiche_id=entity.fiche.pk,
        user_id=user.pk,
    )
