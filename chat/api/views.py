"""Chat API. A POST answers with Server-Sent Events once every check has passed; any error before
that is a plain JSON error response. Views validate input, call one service or selector, and return."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasGrant, request_user
from chat import selectors, services
from chat.api import serializers as s
from chat.models import EntityType
from core.limits import spending
from core.openapi import errors

STREAM_DESCRIPTION = (
    "Answers `text/event-stream`: `event: token` `{delta}` as the LLM streams, then `event: citations` "
    "`{citations: [{text, speaker, call_id, start, end}], rejected: [{text, reason}]}` (the answer's quotes "
    "checked against the fiche's calls), then `event: done` `{message_id, tokens}`; `event: error` `{message}` "
    'when the LLM fails mid-answer, or `{message, code: "server_stopping"}` when the server is restarting '
    "(the partial answer is kept as interrupted: ask again). Errors before the stream starts are JSON: 400, 401, "
    "403, 404, 429 "
    "(`chat_requests_throttled`: over your CHAT_USER_RATE; `chat_streams_limit`: CHAT_MAX_STREAMS_PER_USER answers "
    "already streaming; `llm_busy`: every LLM slot chats may use is busy; `budget_exhausted`: the daily LLM budget, "
    "global or yours, is reached, until it resets at midnight; all with `Retry-After`), 503 (LLM not configured, or "
    "Redis down)."
)


class AcceptEventStream(DefaultContentNegotiation):
    """Stream clients send ``Accept: text/event-stream``: errors raised before the stream are JSON anyway."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type


def event_stream(stream: services.ChatStream) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stream, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


class _ChatView(APIView):
    entity_type: str
    read_key: str
    content_negotiation_class = AcceptEventStream

    def get_permissions(self):
        action = "read" if self.request.method == "GET" else "write"
        return [HasGrant("chat", action)(), HasGrant(self.read_key, "read")()]

    def _get(self, request: Request, entity_id: str) -> Response:
        return Response(selectors.conversation_for_user(request_user(request), self.entity_type, entity_id))

    def _post(self, request: Request, entity_id: str) -> StreamingHttpResponse:
        data = s.ChatInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = request_user(request)
        with spending(user, "chat"):  # CHAT_USER_RATE; a message refused (403, 404, 429, 503) does not count
            stream = services.chat_start(
                user=user,
                entity_type=self.entity_type,
                entity_id=entity_id,
                message=data.validated_data["message"],
            )
        return event_stream(stream)


AUDIT_ID = OpenApiParameter("audit_id", str, OpenApiParameter.PATH)
FICHE_ID = OpenApiParameter("fiche_id", str, OpenApiParameter.PATH, description="The CRM fiche id.")
STREAM_RESPONSE = OpenApiResponse(description="Server-Sent Events (text/event-stream).")


class AuditChatView(_ChatView):
    entity_type = EntityType.AUDIT
    read_key = "audits"

    @extend_schema(
        tags=["chat"],
        summary="Your conversation about an audit (needs chat.read, audits.read and the audit in scope)",
        parameters=[AUDIT_ID],
        responses={200: s.ChatConversationOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, audit_id: str) -> Response:
        return self._get(request, audit_id)

    @extend_schema(
        tags=["chat"],
        summary="Ask about an audit; the answer streams (needs chat.write, audits.read and the audit in scope)",
        description=STREAM_DESCRIPTION,
        parameters=[AUDIT_ID],
        request=s.ChatInput,
        responses={200: STREAM_RESPONSE, **errors(400, 401, 403, 404, 429, 503)},
    )
    def post(self, request: Request, audit_id: str) -> StreamingHttpResponse:
        return self._post(request, audit_id)


class FicheChatView(_ChatView):
    entity_type = EntityType.FICHE
    read_key = "fiches"

    @extend_schema(
        tags=["chat"],
        summary="Your conversation about a fiche (needs chat.read, fiches.read and the fiche in scope)",
        parameters=[FICHE_ID],
        responses={200: s.ChatConversationOutput, **errors(401, 403, 404)},
    )
    def get(self, request: Request, fiche_id: str) -> Response:
        return self._get(request, fiche_id)

    @extend_schema(
        tags=["chat"],
        summary="Ask about a fiche's calls; the answer streams (needs chat.write, fiches.read and the fiche in scope)",
        description=STREAM_DESCRIPTION,
        parameters=[FICHE_ID],
        request=s.ChatInput,
        responses={200: STREAM_RESPONSE, **errors(400, 401, 403, 404, 429, 503)},
    )
    def post(self, request: Request, fiche_id: str) -> StreamingHttpResponse:
        return self._post(request, fiche_id)
