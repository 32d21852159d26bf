"""Fiches API. Views validate input, call one service or selector, and return."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasGrant, can_access
from config.openapi import errors
from fiches import selectors
from fiches.api import serializers as s
from fiches.exceptions import FicheNotFound, ScopeDenied
from fiches.services.details import fiche_get_for_user

FICHE_ID = OpenApiParameter("fiche_id", str, OpenApiParameter.PATH, description="The CRM fiche id.")


class FicheDetailView(APIView):
    permission_classes = [HasGrant("fiches", "read")]

    @extend_schema(
        tags=["fiches"],
        summary="One fiche's full details (cache first, CRM on a miss)",
        description=(
            "Served from the cache when its full details are cached; otherwise fetched from the CRM by id, "
            "persisted and returned. `refresh=true` (needs fiches.write) refetches at most once per "
            "FICHE_FORCE_REFRESH_COOLDOWN_MS per fiche. CRM down: the cached copy with `meta.stale`, or 503."
        ),
        parameters=[FICHE_ID, s.FicheDetailQuery],
        responses={200: s.FicheDetailOutput, **errors(400, 401, 403, 404, 503)},
    )
    def get(self, request, fiche_id: str):
        query = s.FicheDetailQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        if query.validated_data["refresh"]:
            HasGrant("fiches", "write").require(request.user)
        return Response(fiche_get_for_user(user=request.user, fiche_id=fiche_id, **query.validated_data))


class RecordingsView(APIView):
    permission_classes = [HasGrant("recordings", "read")]

    @extend_schema(
        tags=["fiches"],
        summary="The cached recordings of a fiche (needs recordings.read and the fiche in scope)",
        parameters=[FICHE_ID],
        responses={200: s.RecordingsOutput, **errors(401, 403, 404)},
    )
    def get(self, request, fiche_id: str):
        row = selectors.fiche_row(fiche_id)
        if row is None:
            raise FicheNotFound(f"Fiche {fiche_id} is not cached.", details={"fiche_id": fiche_id})
        if not can_access(request.user, "recordings", row):
            raise ScopeDenied(details={"fiche_id": fiche_id})
        recordings = selectors.recordings_for(row)
        return Response({"fiche_id": row.fiche_id, "count": len(recordings), "recordings": recordings})
