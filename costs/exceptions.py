"""The error new work gets at a daily budget's limit, in the API's error envelope."""

from __future__ import annotations

from typing import Any

from core.exceptions import ThrottledError


class BudgetExhausted(ThrottledError):
    """429 ``budget_exhausted`` with ``Retry-After`` = the seconds to the budget's reset (the next local
    midnight); details: kind, scope, limit, spent, resets_at, currency. A ``ThrottledError``: the error handler
    sends its ``Retry-After``."""

    code = "budget_exhausted"
    default_message = "The daily budget is reached."

    def __init__(self, message: str, *, retry_after: int, details: dict[str, Any]) -> None:
        super().__init__(message, retry_after=retry_after, details=details)
