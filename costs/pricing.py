"""What usage costs, from the prices in settings (never stored: a price change re-prices history).

- ``LLM_PRICES`` (per model, per million tokens: ``input``, ``cached_input``, ``output``) and
  ``LLM_DEFAULT_PRICE`` for a model not listed; ``STT_PRICE_PER_HOUR`` of audio; all in ``COST_CURRENCY``.
- Providers report ``prompt_tokens`` *including* the cached ones: those are billed at ``cached_input``
  (``input`` when the model has no cached price) and the rest at ``input``.
- ``llm_cost`` / ``stt_cost`` price one call in Python; ``cost_expression()`` prices each ``UsageRecord`` row
  in SQL with the same arithmetic (and the same rounding: 6 places, half away from zero, per row), so sums by
  any grouping are one query and match the per-row figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db.models import Case, DecimalField, ExpressionWrapper, F, Q, Value, When
from django.db.models.functions import Cast, Round

PLACES = 6
QUANTUM = Decimal(1).scaleb(-PLACES)
MILLION = Decimal(1_000_000)
SECONDS_PER_HOUR = Decimal(3600)
_NUMERIC = DecimalField(max_digits=30, decimal_places=12)
MONEY_FIELD = DecimalField(max_digits=20, decimal_places=PLACES)


@dataclass(frozen=True)
class LlmPrice:
    """Per million tokens, in ``COST_CURRENCY``."""

    input: Decimal
    cached_input: Decimal
    output: Decimal


def _price(raw: dict[str, object]) -> LlmPrice:
    given = Decimal(str(raw["input"]))
    cached = raw.get("cached_input")
    return LlmPrice(given, Decimal(str(cached)) if cached is not None else given, Decimal(str(raw["output"])))


def llm_prices() -> dict[str, LlmPrice]:
    """``LLM_PRICES`` by model."""
    return {str(model): _price(raw) for model, raw in dict(settings.LLM_PRICES).items()}


def default_llm_price() -> LlmPrice:
    return _price(dict(settings.LLM_DEFAULT_PRICE))


def llm_price(model: str) -> tuple[LlmPrice, bool]:
    """The model's price and whether it is ``LLM_DEFAULT_PRICE`` (the model is not in ``LLM_PRICES``)."""
    prices = llm_prices()
    if model in prices:
        return prices[model], False
    return default_llm_price(), True


def stt_price_per_hour() -> Decimal:
    return Decimal(str(settings.STT_PRICE_PER_HOUR))


def currency() -> str:
    return str(settings.COST_CURRENCY)


def money(value: Decimal | int | float | None) -> Decimal:
    """An amount rounded to 6 places (half away from zero, as Postgres rounds ``numeric``)."""
    return Decimal(str(value or 0)).quantize(QUANTUM, rounding=ROUND_HALF_UP)


def llm_cost(model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
    """One LLM call's cost: uncached prompt tokens at ``input``, cached ones at ``cached_input``, completion
    tokens at ``output`` (per million)."""
    price, _ = llm_price(model)
    cached = min(max(cached_tokens, 0), prompt_tokens)
    total = (prompt_tokens - cached) * price.input + cached * price.cached_input + completion_tokens * price.output
    return money(total / MILLION)


def stt_cost(seconds: float) -> Decimal:
    """Speech-to-text of ``seconds`` of audio at ``STT_PRICE_PER_HOUR``."""
    return money(Decimal(str(seconds or 0)) * stt_price_per_hour() / SECONDS_PER_HOUR)


def _value(amount: Decimal) -> Value:
    return Value(amount, output_field=_NUMERIC)


def _tokens(field: str) -> Cast:
    return Cast(F(field), _NUMERIC)


def _llm_expression(price: LlmPrice) -> ExpressionWrapper:
    return ExpressionWrapper(
        (
            (_tokens("prompt_tokens") - _tokens("cached_tokens")) * _value(price.input)
            + _tokens("cached_tokens") * _value(price.cached_input)
            + _tokens("completion_tokens") * _value(price.output)
        )
        / _value(MILLION),
        output_field=_NUMERIC,
    )


def cost_expression() -> Round:
    """Each ``UsageRecord`` row's cost in SQL: a ``CASE`` over the priced models, the default price for the
    others, audio hours for speech-to-text."""
    whens = [
        When(Q(kind="llm", model=model), then=_llm_expression(price)) for model, price in sorted(llm_prices().items())
    ]
    whens.append(When(Q(kind="llm"), then=_llm_expression(default_llm_price())))
    whens.append(
        When(
            Q(kind="stt"),
            then=ExpressionWrapper(
                Cast(F("audio_seconds"), _NUMERIC) * _value(stt_price_per_hour()) / _value(SECONDS_PER_HOUR),
                output_field=_NUMERIC,
            ),
        )
    )
    return Round(Case(*whens, default=_value(Decimal(0)), output_field=_NUMERIC), PLACES, output_field=MONEY_FIELD)
