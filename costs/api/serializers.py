"""Input validation and documented output shapes of the costs API."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from core.exceptions import InvalidInput
from costs.selectors import GROUPINGS

MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 30


def _money(help_text: str = "") -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=20, decimal_places=6, coerce_to_string=True, help_text=help_text)


class CostsQuery(serializers.Serializer):
    """``from`` / ``to``: budget days (``TIME_ZONE``), inclusive; by default the last 30 days."""

    to = serializers.DateField(required=False, help_text="Last day, inclusive (default: today).")
    group_by = serializers.ChoiceField(choices=list(GROUPINGS), required=False, default="day")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["from"] = serializers.DateField(
            required=False, help_text=f"First day, inclusive (default: {DEFAULT_RANGE_DAYS - 1} days before `to`)."
        )
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        date_to = attrs.get("to") or timezone.localdate()
        try:
            date_from = attrs.get("from") or date_to - timedelta(days=DEFAULT_RANGE_DAYS - 1)
        except OverflowError:  # `to` in the first days of year 1
            date_from = date.min
        if date_from > date_to:
            raise InvalidInput(
                "`from` must not be after `to`.",
                code="invalid_date_range",
                details={"from": date_from.isoformat(), "to": date_to.isoformat()},
            )
        if (date_to - date_from).days + 1 > MAX_RANGE_DAYS:
            raise InvalidInput(
                f"The range may cover at most {MAX_RANGE_DAYS} days.",
                code="date_range_too_long",
                details={"from": date_from.isoformat(), "to": date_to.isoformat(), "max_days": MAX_RANGE_DAYS},
            )
        return {"date_from": date_from, "date_to": date_to, "group_by": attrs.get("group_by") or "day"}


class _Figures(serializers.Serializer):
    llm_cost = _money("LLM calls (cached prompt tokens at the cached price).")
    stt_cost = _money("Speech-to-text (audio hours).")
    cost = _money("llm_cost + stt_cost.")
    prompt_tokens = serializers.IntegerField(help_text="Cached ones included.")
    completion_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField()
    audio_seconds = serializers.FloatField()
    calls = serializers.IntegerField(help_text="Recorded provider calls (usage rows).")
    priced_by_default = serializers.BooleanField(
        help_text="Some LLM usage is of a model not in LLM_PRICES, priced at LLM_DEFAULT_PRICE."
    )
    priced_by_default_models = serializers.ListField(child=serializers.CharField())


class CostRowOutput(_Figures):
    key = serializers.CharField(
        allow_null=True,
        help_text="The group: a date (day; week: its Monday; month: its first day), a user id, an audit id, a "
        "transcription run id, a model or a purpose. Null: usage without one (e.g. speech-to-text by audit).",
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["label"] = serializers.CharField(help_text="What the key is, for people (a user's e-mail, ...).")
        return fields


class CostTotalsOutput(_Figures):
    audited_call_minutes = serializers.FloatField(
        help_text="Minutes of the recordings of the fiches audited (or rerun) in the range."
    )
    cost_per_audited_minute = _money("cost / audited_call_minutes (null when no call was audited).")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["cost_per_audited_minute"].allow_null = True
        return fields


class CostsOutput(serializers.Serializer):
    to = serializers.DateField()
    group_by = serializers.ChoiceField(choices=list(GROUPINGS))
    currency = serializers.CharField(help_text="COST_CURRENCY")
    rows = CostRowOutput(many=True)
    truncated = serializers.BooleanField(help_text="More groups than shown (the largest costs first).")
    totals = CostTotalsOutput()

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["from"] = serializers.DateField()
        return fields


class BudgetStateOutput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["llm", "stt"])
    scope = serializers.ChoiceField(choices=["global", "user"])
    day = serializers.DateField(help_text="Today (TIME_ZONE).")
    limit = serializers.DecimalField(
        max_digits=20, decimal_places=6, allow_null=True, help_text="The daily budget; null: none."
    )
    spent = _money("Today's spend.")
    remaining = serializers.DecimalField(max_digits=20, decimal_places=6, allow_null=True)
    exhausted = serializers.BooleanField(help_text="New work waits or is refused until resets_at.")
    resets_at = serializers.DateTimeField(help_text="The next local midnight.")
    currency = serializers.CharField()


class BudgetKindOutput(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["llm", "stt"])
    user = BudgetStateOutput(help_text="Your own daily budget (work requested by you).")
    global_ = BudgetStateOutput(
        allow_null=True, help_text="The global daily budget: only for users whose audits read scope is ALL."
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["global"] = fields.pop("global_")
        return fields


class BudgetsOutput(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["wait", "refuse"], help_text="BUDGET_MODE: what new work does.")
    currency = serializers.CharField()
    budgets = BudgetKindOutput(many=True)
