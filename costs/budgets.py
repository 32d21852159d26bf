"""Daily budgets: the LLM's and speech-to-text's, global and per user (``BUDGET_*`` settings, in
``COST_CURRENCY``; empty or 0: none), and what new work does at the limit (``BUDGET_MODE``).

The day is ``timezone.localdate()`` in ``TIME_ZONE``; a day's spend is the cost of that day's
``UsageRecord`` rows (global, or the user's: the user the work is for), one indexed SQL aggregate priced by
``costs.pricing.cost_expression``. A budget resets at the next local midnight (``resets_at``).

**Where the gate sits: new work, never work in flight.** An audit is checked once before its steps are
dispatched, a transcription run before its recordings are, a chat message and a rerun when asked; the steps
of a started audit and the recordings of a dispatched run always finish. So a day may overshoot its budget by
at most the work in flight when the limit was crossed (an audit's remaining steps, a run's recordings, the
chats streaming): bounded, and never work silently dropped.

At the limit: ``wait`` (the default) keeps background work waiting (audits ``waiting_budget``, transcription
runs pending with ``waiting_budget_since``; the reconcilers resume them once the budget allows, e.g. the next
day) and ``refuse`` refuses it (429 ``budget_exhausted`` at the API; work created earlier, by a batch or an
automation, fails with the reason). Interactive work (chat, reruns) is refused either way: nobody waits a day
for an answer. The first time a budget is found reached on a day (one ``BudgetExhaustion`` row: its unique
constraint dedupes racing workers) a ``budget.exhausted`` event, a ``notification`` toast (global budgets)
and a WARNING log line go out after commit; the first time work goes on again, ``budget.resumed``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from core.formats import iso
from costs.exceptions import BudgetExhausted
from costs.models import BudgetExhaustion, BudgetMode, UsageKind, UsageRecord
from costs.pricing import cost_expression, currency, money
from realtime.publisher import publish

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("costs.budgets")

GLOBAL, USER = "global", "user"
KIND_NAMES = {UsageKind.LLM.value: "LLM", UsageKind.STT.value: "speech-to-text"}
_LIMIT_SETTINGS = {
    (UsageKind.LLM.value, GLOBAL): "BUDGET_LLM_DAILY",
    (UsageKind.LLM.value, USER): "BUDGET_LLM_USER_DAILY",
    (UsageKind.STT.value, GLOBAL): "BUDGET_STT_DAILY",
    (UsageKind.STT.value, USER): "BUDGET_STT_USER_DAILY",
}


def budget_limit(kind: str, scope: str) -> Decimal | None:
    """The daily budget of ``kind`` for ``scope`` (``global`` / ``user``); None: no budget (empty or 0)."""
    raw = getattr(settings, _LIMIT_SETTINGS[(kind, scope)], None)
    if raw is None or str(raw).strip() in ("", "0"):
        return None
    amount = Decimal(str(raw))
    return amount if amount > 0 else None


def budget_mode() -> str:
    """``wait`` or ``refuse`` (``BUDGET_MODE``)."""
    return BudgetMode.REFUSE if str(settings.BUDGET_MODE).strip().lower() == BudgetMode.REFUSE else BudgetMode.WAIT


def today() -> date:
    return timezone.localdate()


def resets_at(day: date) -> datetime:
    """The next local midnight after ``day`` (when its budgets reset)."""
    return timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min))


def day_spend(kind: str, *, day: date, user_id: int | None = None) -> Decimal:
    """The cost of ``day``'s usage of ``kind`` (a user's only when ``user_id``): one aggregate."""
    rows = UsageRecord.objects.filter(day=day, kind=kind)
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    return money(rows.aggregate(total=Sum(cost_expression()))["total"])


@dataclass(frozen=True)
class BudgetState:
    kind: str
    scope: str  # "global" or "user"
    user_id: int | None
    day: date
    limit: Decimal | None
    spent: Decimal
    resets_at: datetime

    @property
    def remaining(self) -> Decimal | None:
        return None if self.limit is None else max(self.limit - self.spent, Decimal(0))

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.spent >= self.limit

    def retry_after(self, now: datetime | None = None) -> int:
        """Seconds until the budget resets (at least 1)."""
        return max(1, math.ceil((self.resets_at - (now or timezone.now())).total_seconds()))

    def message(self) -> str:
        who = "daily" if self.scope == GLOBAL else "your daily"
        return (
            f"{who[0].upper()}{who[1:]} {KIND_NAMES[self.kind]} budget reached ({self.spent} of {self.limit} "
            f"{currency()} spent on {self.day.isoformat()}); it resets at {iso(self.resets_at)}."
        )

    def reason(self) -> str:
        """The error a piece of background work fails with (refuse mode)."""
        scope = "" if self.scope == GLOBAL else "user's "
        return (
            f"{scope}daily {KIND_NAMES[self.kind]} budget reached ({self.spent} of {self.limit} {currency()} "
            f"spent on {self.day.isoformat()})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "scope": self.scope,
            "day": self.day.isoformat(),
            "limit": None if self.limit is None else str(self.limit),
            "spent": str(self.spent),
            "remaining": None if self.remaining is None else str(self.remaining),
            "exhausted": self.exhausted,
            "resets_at": iso(self.resets_at),
            "currency": currency(),
        }

    def error(self) -> BudgetExhausted:
        details = {
            "kind": self.kind,
            "scope": self.scope,
            "limit": str(self.limit),
            "spent": str(self.spent),
            "resets_at": iso(self.resets_at),
            "currency": currency(),
        }
        return BudgetExhausted(self.message(), retry_after=self.retry_after(), details=details)


def budget_state(kind: str, user: User | None = None, *, day: date | None = None) -> BudgetState:
    """The global budget of ``kind`` (``user`` None), or ``user``'s own, on ``day`` (today)."""
    day = day or today()
    scope = GLOBAL if user is None else USER
    user_id = None if user is None else user.pk
    return BudgetState(
        kind=kind,
        scope=scope,
        user_id=user_id,
        day=day,
        limit=budget_limit(kind, scope),
        spent=day_spend(kind, day=day, user_id=user_id),
        resets_at=resets_at(day),
    )


def blocking(kind: str, user: User | None) -> BudgetState | None:
    """The budget that stops new work of ``kind`` for ``user`` now (the global one first, then the user's;
    None: the work may go on), after telling of it once a day (``note_exhausted``). A budget that allows work
    again after it stopped some tells of that once too (``note_resumed``). Only budgets with a limit cost a
    query."""
    day = today()
    scopes: list[User | None] = [None] if user is None else [None, user]
    for who in scopes:
        scope = GLOBAL if who is None else USER
        if budget_limit(kind, scope) is None:
            note_resumed(kind, who)
            continue
        state = budget_state(kind, who, day=day)
        if state.exhausted:
            note_exhausted(state)
            return state
        note_resumed(kind, who)
    return None


def check(kind: str, user: User | None) -> None:
    """Interactive work (a chat message, a rerun): 429 ``budget_exhausted`` at the limit, whatever the mode."""
    state = blocking(kind, user)
    if state is not None:
        raise state.error()


def new_work(kind: str, user: User | None) -> tuple[str, BudgetState | None]:
    """What background work of ``kind`` for ``user`` does now, in the worker: ``("go", None)``, or at the limit
    ``("wait", state)`` / ``("refuse", state)`` per ``BUDGET_MODE``."""
    state = blocking(kind, user)
    if state is None:
        return "go", None
    return ("refuse" if budget_mode() == BudgetMode.REFUSE else "wait"), state


def check_new_work(kind: str, user: User | None) -> None:
    """Background work asked through the API (an audit, a batch, a transcription): refused (429
    ``budget_exhausted``) at the limit in ``refuse`` mode; in ``wait`` mode it is accepted and waits in the
    worker until the budget allows."""
    if budget_mode() == BudgetMode.REFUSE:
        check(kind, user)


# --- Telling of it, once a day ----------------------------------------------------------------------------


def _payload(kind: str, scope: str, day: date, status: str, **extra: Any) -> dict[str, Any]:
    # budget_id: the only field (besides status) the notify-only copy on the global channel keeps.
    return {
        "budget_id": f"{kind}:{scope}:{day.isoformat()}",
        "kind": kind,
        "scope": scope,
        "day": day.isoformat(),
        "status": status,
        **extra,
    }


def note_exhausted(state: BudgetState) -> bool:
    """Record that ``state``'s budget stopped work today; the first time (of racing workers and requests, one
    wins the unique row) publish ``budget.exhausted`` (the global budget on the global channel, notify-only
    there: its figures are for whom the budgets API shows them; a user's budget in full on their own channel),
    a generic ``notification`` toast for a global budget, and log a WARNING. Whether it was the first time."""
    mode = budget_mode()
    try:
        with transaction.atomic():
            BudgetExhaustion.objects.create(
                day=state.day,
                kind=state.kind,
                user_id=state.user_id,
                mode=mode,
                limit=state.limit or Decimal(0),
                spent=state.spent,
            )
    except IntegrityError:
        return False  # already told today
    logger.warning(
        "budget_exhausted",
        extra={
            "kind": state.kind,
            "scope": state.scope,
            "user_id": state.user_id,
            "day": state.day.isoformat(),
            "limit": str(state.limit),
            "spent": str(state.spent),
            "mode": mode,
        },
    )
    payload = _payload(
        state.kind,
        state.scope,
        state.day,
        "exhausted",
        mode=mode,
        resets_at=iso(state.resets_at),
        limit=str(state.limit),
        spent=str(state.spent),
        currency=currency(),
    )
    publish("budget.exhausted", payload, user_id=state.user_id)
    if state.scope == GLOBAL:
        then = (
            "les nouveaux travaux attendent demain" if mode == BudgetMode.WAIT else "les nouveaux travaux sont refusés"
        )
        publish(
            "notification",
            {
                "type": "warning",
                "message": f"Le budget quotidien {KIND_NAMES[state.kind]} est atteint",
                "description": f"{then[0].upper()}{then[1:]} (remise à zéro à minuit).",
                "duration": 10000,
                "budget_id": payload["budget_id"],
            },
        )
    return True


def note_resumed(kind: str, user: User | None) -> int:
    """The budget of ``kind`` (global, or ``user``'s) allows work again: the exhaustions not yet resumed are
    marked so, and ``budget.resumed`` is published once for each (the first resume after each day it
    stopped work). How many resumed."""
    user_id = None if user is None else user.pk
    rows = BudgetExhaustion.objects.filter(kind=kind, resumed_at__isnull=True)
    rows = rows.filter(user__isnull=True) if user_id is None else rows.filter(user_id=user_id)
    pending = list(rows.values_list("pk", "day"))
    resumed = 0
    for pk, day in pending:
        if not BudgetExhaustion.objects.filter(pk=pk, resumed_at__isnull=True).update(resumed_at=timezone.now()):
            continue  # another worker told of it
        resumed += 1
        scope = GLOBAL if user_id is None else USER
        logger.info("budget_resumed", extra={"kind": kind, "scope": scope, "user_id": user_id, "day": day.isoformat()})
        publish("budget.resumed", _payload(kind, scope, day, "resumed"), user_id=user_id)
    return resumed
