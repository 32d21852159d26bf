"""A daily LLM budget with real workers, the three simulators and a Pusher stub: the first audit runs and
spends; the next one, requested after the limit, waits (``waiting_budget``) without a single LLM call; the
event and the toast go out once; then the next day comes (that day's usage moved back a day, exactly what
the budget sees after midnight) and the reconciler (beat) resumes the waiting audit, which completes."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db.models import F

from audits.models import Audit
from costs.models import BudgetExhaustion, UsageRecord
from tests.workflow.conftest import wait_for
from tests.workflow.test_audits import (  # noqa: F401 (the auditor fixture)
    COMPLIANT,
    COMPLIANT_2,
    audit_ended,
    auditor,
    detail,
    pusher_events,
    run_audit,
)

pytestmark = [pytest.mark.workflow, pytest.mark.django_db(transaction=True)]


def llm_calls_for(llm, fiche_id: str) -> int:
    """LLM requests whose prompt is about the fiche (the step prompt names it: ``Fiche {id} du ...``)."""
    return sum(
        1
        for r in llm.requests()
        if r["path"] == "/v1/chat/completions"
        and any(f"Fiche {fiche_id} " in (m.get("content") or "") for m in r["body"]["messages"])
    )


def test_a_daily_llm_budget_makes_new_audits_wait_until_the_next_day(audit_stack, auditor):  # noqa: F811
    from audits.tasks import reconcile_audits

    crm, stt, llm, pusher, start = audit_stack
    # A budget one audit overshoots (an audit of 9 steps costs about 0.004 USD at sim-judge-1's default prices).
    start("budget", BUDGET_LLM_DAILY="0.0005", BUDGET_MODE="wait")

    first = audit_ended(run_audit(auditor, COMPLIANT))
    assert first.status == "completed", first.error
    spent = detail(auditor, str(first.pk))["cost"]
    assert spent["calls"] == 9 and float(spent["llm_cost"]) > 0.0005 and spent["currency"] == "USD"
    assert UsageRecord.objects.filter(audit=first, kind="llm", purpose="audit_step").count() == 9

    second_id = run_audit(auditor, COMPLIANT_2)  # wait mode: accepted, then it waits in the worker
    waiting = wait_for(
        lambda: (a := Audit.objects.get(pk=second_id)).status == "waiting_budget" and a,
        timeout=60,
        message="the second audit to wait for the budget",
    )
    assert waiting.dispatched_at is None and waiting.waiting_since is not None
    assert llm_calls_for(llm, COMPLIANT_2) == 0  # not one LLM call for it
    (told,) = BudgetExhaustion.objects.all()
    assert (told.kind, told.user_id, told.mode, told.resumed_at) == ("llm", None, "wait", None)
    wait_for(lambda: pusher_events(pusher, "private-global", "budget.exhausted"), message="budget.exhausted")
    (event,) = [p for _, p in pusher_events(pusher, "private-global", "budget.exhausted")]
    assert event["status"] == "exhausted" and event["redacted"] is True and "spent" not in event  # notify-only
    toasts = [p for _, p in pusher_events(pusher, "private-global", "notification") if p.get("budget_id")]
    assert len(toasts) == 1 and toasts[0]["type"] == "warning"

    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(1.0):
            reconcile_audits.delay()

    beat_thread = threading.Thread(target=beat, daemon=True)
    beat_thread.start()
    try:
        time.sleep(4)  # a few reconciler passes while the budget is still spent: it keeps waiting
        assert Audit.objects.get(pk=second_id).status == "waiting_budget"
        assert llm_calls_for(llm, COMPLIANT_2) == 0

        # Midnight: today's usage becomes yesterday's, which is all the budget looks at.
        UsageRecord.objects.update(day=F("day") - timedelta(days=1))
        second = audit_ended(second_id, timeout=90)
    finally:
        stop.set()
        beat_thread.join()
    assert second.status == "completed", second.error
    assert llm_calls_for(llm, COMPLIANT_2) == 9
    told.refresh_from_db()
    assert told.resumed_at is not None
    wait_for(lambda: pusher_events(pusher, "private-global", "budget.resumed"), message="budget.resumed")
    assert len(pusher_events(pusher, "private-global", "budget.exhausted")) == 1  # told once that day
    assert detail(auditor, second_id)["cost"]["calls"] == 9
