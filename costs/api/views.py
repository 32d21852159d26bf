"""Costs API. Views validate input, call one selector, and return."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import HasGrant, request_user
from core.openapi import errors
from costs import selectors
from costs.api import serializers as s
from costs.selectors import GROUPINGS


class CostsView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["analytics"],
        summary="What the LLM and speech-to-text work on fiches in your audits scope cost, grouped",
        description=(
            "Usage recorded per provider call, priced from settings (LLM_PRICES per model and million tokens, cached "
            "prompt tokens at their cached price, LLM_DEFAULT_PRICE for an unlisted model, STT_PRICE_PER_HOUR), in "
            "COST_CURRENCY, as decimal strings. Only usage whose fiche is in your `audits` read scope counts: you "
            "never see what work on a fiche you cannot read cost (ALL scope: every row, chats about nothing in "
            "particular and unattributed work included). `from`/`to` are budget days (TIME_ZONE), at most 366; "
            "400 `invalid_date_range` / `date_range_too_long`. Totals include the cost per audited minute of call."
        ),
        parameters=[
            OpenApiParameter(
                "from", str, description="First day (YYYY-MM-DD), inclusive; default: 29 days before `to`."
            ),
            OpenApiParameter("to", str, description="Last day (YYYY-MM-DD), inclusive; default: today."),
            OpenApiParameter("group_by", str, enum=list(GROUPINGS), description="Default: day."),
        ],
        responses={200: s.CostsOutput, **errors(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        query = s.CostsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(selectors.costs_report(request_user(request), **query.validated_data))


class BudgetsView(APIView):
    permission_classes = [HasGrant("audits", "read")]

    @extend_schema(
        tags=["analytics"],
        summary="Today's daily budgets: yours always, the global ones if your audits read scope is ALL",
        description=(
            "Per kind (llm, stt): your own budget (BUDGET_*_USER_DAILY; work requested by you) and, only for users "
            "whose `audits` read scope is ALL, the global one (BUDGET_*_DAILY; everyone's work): others get null. "
            "A null limit means no budget. `mode` (BUDGET_MODE) says what new work does at the limit: wait (for "
            "the reset at local midnight) or refuse (429 `budget_exhausted`); chats and reruns are refused either way."
        ),
        responses={200: s.BudgetsOutput, **errors(401, 403)},
    )
    def get(self, request: Request) -> Response:
        return Response(selectors.budgets_for_user(request_user(request)))
