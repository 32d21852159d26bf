"""Prices from settings, against hand-computed figures: cached prompt tokens at the cached price (at the input
price for a model without one), an unlisted model at the default price (flagged), audio hours; and the SQL
expression that prices each row gives the same figures as Python, so sums are one query."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db.models import Sum

from costs.models import UsageRecord
from costs.pricing import cost_expression, llm_cost, llm_price, stt_cost
from tests.costs.conftest import usage

pytestmark = pytest.mark.django_db


def test_llm_cost_bills_cached_prompt_tokens_at_the_cached_price():
    # 5,904 uncached x 0.15 + 4,096 cached x 0.075 + 1,000 completion x 0.60 = 1,792.8 per million
    assert llm_cost("sim-judge-1", 10_000, 1_000, 4_096) == Decimal("0.001793")
    assert llm_cost("sim-judge-1", 10_000, 1_000, 0) == Decimal("0.002100")  # 1,500 + 600
    # A model without a cached price bills cached tokens at its input price: 10,000 x 2 + 100 x 8 = 20,800.
    assert llm_cost("big-model", 10_000, 100, 4_096) == Decimal("0.020800")
    assert llm_cost("sim-judge-1", 1_000_000, 0, 2_000_000) == Decimal("0.075000")  # cached never above prompt


def test_an_unlisted_model_is_priced_at_the_default_price_and_flagged():
    price, by_default = llm_price("mystery-9")
    assert by_default and price.input == Decimal("2.5")
    assert llm_price("sim-judge-1")[1] is False
    # 2,000 x 2.50 + 500 x 10.00 = 10,000 per million
    assert llm_cost("mystery-9", 2_000, 500) == Decimal("0.010000")


def test_speech_to_text_is_priced_per_audio_hour():
    assert stt_cost(1800) == Decimal("0.200000")
    assert stt_cost(1) == Decimal("0.000111")  # 0.40 / 3600 = 0.0001111...
    assert stt_cost(0) == Decimal("0.000000")


def test_a_price_change_reprices_history(settings):
    assert llm_cost("sim-judge-1", 1_000_000, 0) == Decimal("0.150000")
    settings.LLM_PRICES = {"sim-judge-1": {"input": 0.30, "output": 1.20}}
    assert llm_cost("sim-judge-1", 1_000_000, 0) == Decimal("0.300000")


def test_the_sql_expression_prices_each_row_as_python_does(fiches):
    rows = [
        usage(prompt_tokens=10_000, completion_tokens=1_000, cached_tokens=4_096),
        usage(model="big-model", prompt_tokens=10_000, completion_tokens=100, cached_tokens=4_096),
        usage(model="mystery-9", prompt_tokens=2_000, completion_tokens=500),
        usage(model="sim-judge-1", prompt_tokens=7, completion_tokens=3),  # rounds to 0.000003
        usage(kind="stt", model="scribe_v2", audio_seconds=1800),
        usage(kind="stt", model="scribe_v2", audio_seconds=61.5),
    ]
    priced = dict(UsageRecord.objects.annotate(cost=cost_expression()).values_list("pk", "cost"))
    for row in rows:
        expected = (
            stt_cost(row.audio_seconds)
            if row.kind == "stt"
            else llm_cost(row.model, row.prompt_tokens, row.completion_tokens, row.cached_tokens)
        )
        assert priced[row.pk] == expected, (row, priced[row.pk], expected)
    total = UsageRecord.objects.aggregate(total=Sum(cost_expression()))["total"]
    assert (
        total
        == sum(priced.values())
        == Decimal("0.001793")
        + Decimal("0.020800")
        + Decimal("0.010000")
        + Decimal("0.000003")
        + Decimal("0.200000")
        + Decimal("0.006833")
    )
