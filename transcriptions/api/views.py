"""Transcriptions API. Views validate input, call one service or selector, and return."""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasGrant, request_user
from batches import services as batches
from core.exceptions import NotFoundError
from core.limits import spending
from core.openapi import errors
from costs import budgets
from fiches.services.access import fiche_with_details
from privacy.access import sees_personal_data
from transcriptions import selectors
from transcriptions.api import serializers as s
from transcriptions.services import runs

FICHE_ID = OpenApiParameter("fiche_id", str, OpenApiParameter.PATH, description="The CRM fiche id.")


class FicheTranscriptionView(APIView):
    def get_permissions(self):
        return [HasGrant("transcriptions", "read" if self.request.method == "GET" else "write")()]

    @extend_schema(
        tags=["transcriptions"],
        summary="Transcribe a fiche's recordings (needs transcriptions.write and the fiche in scope)",
        description=(
            "Fetches the fiche's details first when they are not cached. Recordings already transcribed are "
            "skipped unless `force`. 202 with the run queued (or already running); 200 with `completed` when "
            "nothing is left to do, or `no_recordings`. Follow it on `private-fiche-{fiche_id}` or by polling GET. "
            "Every request, forced or not (one can start vendor work when nothing is transcribed yet), counts "
            "against the user's TRANSCRIPTION_USER_RATE: 429 `transcription_requests_throttled` with Retry-After "
            "beyond it; refused requests (403, 404, 409, 503) do not count. At the daily speech-to-text budget "
            "(global or yours), BUDGET_MODE=wait queues the run (pending until the budget allows, e.g. the next "
            "day); BUDGET_MODE=refuse answers 429 `budget_exhausted` with Retry-After."
        ),
        parameters=[FICHE_ID],
        request=s.TranscribeInput,
        responses={202: s.TranscribeOutput, 200: s.TranscribeOutput, **errors(400, 401, 403, 404, 409, 429, 503)},
    )
    def post(self, request: Request, fiche_id: str) -> Response:
        data = s.TranscribeInput(data=request.data)
        data.is_valid(raise_exception=True)
        runs.require_vendor_configured()
        user = request_user(request)
        with spending(user, "transcription"):
            fiche = fiche_with_details(fiche_id=fiche_id, user=user, key="transcriptions", action="write")
            budgets.check_new_work("stt", user)  # refuse mode: 429 budget_exhausted before a run is made
            result = runs.transcription_request(fiche=fiche, user=user, **data.validated_data)
        return Response(result.as_dict(), status=202 if result.run_id else 200)

    @extend_schema(
        tags=["transcriptions"],
        summary="A fiche's transcription status and its recordings' transcripts",
        parameters=[FICHE_ID, s.StatusQuery],
        responses={200: s.StatusOutput, **errors(400, 401, 403, 404, 429, 503)},
    )
    def get(self, request: Request, fiche_id: str) -> Response:
        query = s.StatusQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        fiche = fiche_with_details(fiche_id=fiche_id, user=request_user(request), key="transcriptions")
        redacted = not sees_personal_data(request_user(request))
        return Response(
            selectors.fiche_status(fiche, include_words=query.validated_data["include_words"], redacted=redacted)
        )


class TimelineView(APIView):
    permission_classes = [HasGrant("transcriptions", "read")]

    @extend_schema(
        tags=["transcriptions"],
        summary="The fiche's conversation as speaker turns (recordings in start order, then time)",
        parameters=[FICHE_ID],
        responses={200: s.TimelineOutput, **errors(401, 403, 404, 429, 503)},
    )
    def get(self, request: Request, fiche_id: str) -> Response:
        fiche = fiche_with_details(fiche_id=fiche_id, user=request_user(request), key="transcriptions")
        timeline = selectors.timeline_for(fiche, redacted=not sees_personal_data(request_user(request)))
        return Response({"fiche_id": fiche.fiche_id, "recordings": timeline.recordings, "turns": timeline.turns})


class RecordingTranscriptionView(APIView):
    permission_classes = [HasGrant("transcriptions", "read")]

    @extend_schema(
        tags=["transcriptions"],
        summary="One recording's transcription, with its word timings and speaker map",
        parameters=[FICHE_ID, OpenApiParameter("call_id", str, OpenApiParameter.PATH)],
        responses={200: s.RecordingTranscriptOutput, **errors(401, 403, 404, 429, 503)},
    )
    def get(self, request: Request, fiche_id: str, call_id: str) -> Response:
        fiche = fiche_with_details(fiche_id=fiche_id, user=request_user(request), key="transcriptions")
        data = selectors.recording_for_fiche(fiche, call_id, redacted=not sees_personal_data(request_user(request)))
        if data is None:
            raise NotFoundError(
                f"Fiche {fiche.fiche_id} has no recording {call_id}.",
                code="recording_not_found",
                details={"fiche_id": fiche.fiche_id, "call_id": call_id},
            )
        return Response(data)


class TranscriptionBatchView(APIView):
    permission_classes = [HasGrant("transcriptions", "write")]

    @extend_schema(
        tags=["transcriptions"],
        summary="Transcribe many fiches in the background (at most TRANSCRIPTION_BATCH_MAX)",
        description=(
            "Each fiche must be in your transcriptions scope (checked now for cached fiches, and when its turn "
            "comes for the others). Follow it with GET /api/batches/{batch_id} or batch.* events on your "
            "private-user-{id} channel. "
            "Counts its fiches against the user's BATCH_USER_RATE (shared with audit batches; 429 "
            "`batch_requests_throttled` with Retry-After). BUDGET_MODE=refuse at the daily speech-to-text budget: 429 "
            "`budget_exhausted` (wait mode: its runs wait)."
        ),
        request=s.BatchInput,
        responses={202: s.BatchCreated, **errors(400, 401, 403, 429, 503)},
    )
    def post(self, request: Request) -> Response:
        data = s.BatchInput(data=request.data)
        data.is_valid(raise_exception=True)
        runs.require_vendor_configured()
        budgets.check_new_work("stt", request_user(request))
        batch = batches.batch_create(
            user=request_user(request),
            operation_type="transcription",
            fiche_ids=data.validated_data["fiche_ids"],
            options={"priority": data.validated_data["priority"]},
            max_items=settings.TRANSCRIPTION_BATCH_MAX,
            permission="transcriptions",
            spend_kind="batch",
        )
        return Response({"batch_id": str(batch.pk)}, status=202)
