"""Celery tasks of audits: thin wrappers that re-load by id and call one service.

``audit_step_analyze`` calls the LLM: it runs on the ``llm`` queue, consumed by an I/O worker pool
(threads), never in the prefork slots of CRM and orchestration work.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import chord, shared_task
from django.conf import settings

from audits.clients import llm
from audits.evidence import EvidenceIndex
from audits.models import Audit
from audits.services import reviews, runs
from core.limits import LimitBusy
from core.locks import LockNotAcquired, redis_lock
from core.retry import (
    INFRA_MAX_ERRORS,
    TRANSIENT_INFRA_ERRORS,
    error_budget_left,
    retry_after_error,
    retry_waiting,
)
from transcriptions.selectors import timeline_for

logger = logging.getLogger("audits.tasks")

INFRA_RETRY: dict[str, Any] = {
    "autoretry_for": TRANSIENT_INFRA_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 10,
    "max_retries": INFRA_MAX_ERRORS,
}


@shared_task(name="audits.tasks.audit_run", ignore_result=True, **INFRA_RETRY)
def audit_run(audit_id: str) -> str:
    """Orchestrator: the prerequisites, then a chord of one step task per step left, whose body
    is the audit's safety-net finalizer. Waiting for transcripts ends here: their run resumes us."""
    prepared = runs.audit_prepare(audit_id=audit_id)
    if prepared.state == "analyze" and prepared.positions:
        chord(audit_step_analyze.si(audit_id, position) for position in prepared.positions)(audit_finalize.si(audit_id))
    elif prepared.state == "analyze":
        audit_finalize.delay(audit_id)
    return prepared.state


@shared_task(bind=True, name="audits.tasks.llm.audit_step_analyze", ignore_result=False)
def audit_step_analyze(
    self: Any, audit_id: str, position: int, error_attempts: int = 0, infra_attempts: int = 0
) -> dict[str, Any]:
    """Analyze one step: claim it, ask the LLM (under ``LLM_MAX_CONCURRENCY``), gate every quote,
    store the result, and tell the audit's updater. A step done or in other hands is a no-op;
    waits re-enqueue without spending the error budget; transient LLM errors retry with backoff
    (``AUDIT_STEP_MAX_ERRORS``); after that, or on a permanent error, the step fails. Always returns
    normally so the chord completes."""
    try:
        outcome = _analyze(self, audit_id, position)
        if outcome != "skipped":
            settle(audit_id)
        return {"position": position, "outcome": outcome}
    except TRANSIENT_INFRA_ERRORS as exc:
        if error_budget_left(self, max_errors=INFRA_MAX_ERRORS, counter="infra_attempts"):
            raise retry_after_error(self, exc, base=0.5, cap=10.0, counter="infra_attempts") from None
        logger.error("audit_step_infra_failed", extra={"audit_id": audit_id, "position": position})
        return {"position": position, "outcome": "infrastructure unavailable"}  # the reconciler re-drives


def _analyze(task: Any, audit_id: str, position: int) -> str:
    try:
        with redis_lock(f"audit-step:{audit_id}:{position}", timeout=settings.AUDIT_STEP_CLAIM_LEASE_SECONDS):
            row = runs.step_claim(audit_id=audit_id, position=position)
            if row is None:
                return "skipped"
            audit = Audit.objects.select_related("fiche").get(pk=audit_id)
            timeline = timeline_for(audit.fiche)
            try:
                asked = runs.step_ask_llm(audit=audit, definition=row.step, timeline=timeline)
            except LimitBusy:
                runs.step_release(audit_id=audit_id, position=position)
                raise retry_waiting(task, countdown=random.uniform(0.5, 2.0)) from None
            except llm.LlmTransientError as exc:
                if error_budget_left(task, max_errors=settings.AUDIT_STEP_MAX_ERRORS):
                    runs.step_release(audit_id=audit_id, position=position)
                    wait = exc.retry_after
                    if wait is not None and exc.status == 429:  # the provider's own limit: a wait
                        raise retry_waiting(task, countdown=wait + random.uniform(0, 0.5)) from None
                    logger.warning(
                        "audit_step_retry", extra={"audit_id": audit_id, "position": position, "error": str(exc)}
                    )
                    raise retry_after_error(task, exc, base=settings.AUDIT_STEP_RETRY_BASE_SECONDS) from None
                runs.step_fail(audit_id=audit_id, position=position, error=str(exc))
                return "failed"
            except llm.LlmError as exc:
                runs.step_fail(audit_id=audit_id, position=position, error=str(exc))
                return "failed"
            index = EvidenceIndex(timeline.turns, threshold=settings.EVIDENCE_MATCH_THRESHOLD)
            gated = runs.gate_answer(definition=row.step, answer=asked.answer, index=index)
            stored = runs.step_store(audit_id=audit_id, position=position, asked=asked, gated=gated)
            return "completed" if stored else "skipped"
    except LockNotAcquired:
        return "skipped"  # another worker holds this step: it reports


def settle(audit_id: str) -> None:
    """Run the audit's updater under its Redis lock (waiting a moment), else as a durable task."""
    try:
        with redis_lock(f"audit:{audit_id}", timeout=60, wait=2.0):
            runs.audit_step_settled(audit_id=audit_id)
            return
    except LockNotAcquired:
        pass
    audit_settle.delay(audit_id)


def _settle_or_wait(task: Any, audit_id: str) -> bool:
    try:
        with redis_lock(f"audit:{audit_id}", timeout=60, wait=1.0):
            return runs.audit_step_settled(audit_id=audit_id)
    except LockNotAcquired:
        raise retry_waiting(task, countdown=random.uniform(0.2, 1.0)) from None


@shared_task(bind=True, name="audits.tasks.audit_settle", ignore_result=True, **INFRA_RETRY)
def audit_settle(self: Any, audit_id: str) -> bool:
    """The per-audit updater (Redis lock + row lock); waits for the lock, never drops."""
    return _settle_or_wait(self, audit_id)


@shared_task(bind=True, name="audits.tasks.audit_finalize", ignore_result=True, **INFRA_RETRY)
def audit_finalize(self: Any, audit_id: str) -> bool:
    """Chord body: the safety net that ends an audit whose steps have all ended."""
    return _settle_or_wait(self, audit_id)


@shared_task(name="audits.tasks.reconcile_audits", ignore_result=True)
def reconcile_audits() -> dict[str, list[str]]:
    """Beat (every minute): every audit ends, every rerun ends."""
    actions = runs.audit_reconcile()
    for audit_id in actions["redrive"]:
        audit_run.delay(audit_id)
    actions["reruns"] = reviews.reruns_to_redrive()
    for rerun_id in actions["reruns"]:
        audit_step_rerun.delay(rerun_id)
    return actions


@shared_task(bind=True, name="audits.tasks.llm.audit_step_rerun", ignore_result=True)
def audit_step_rerun(self: Any, rerun_id: str, error_attempts: int = 0, infra_attempts: int = 0) -> str:
    """Rerun one step (or one control point) of a completed audit through the same prompt, LLM
    client and evidence gate as a first run; the result replaces the stored one and the audit is
    rescored. Waits and transient errors as ``audit_step_analyze``."""
    try:
        return _rerun(self, rerun_id)
    except TRANSIENT_INFRA_ERRORS as exc:
        if error_budget_left(self, max_errors=INFRA_MAX_ERRORS, counter="infra_attempts"):
            raise retry_after_error(self, exc, base=0.5, cap=10.0, counter="infra_attempts") from None
        logger.error("audit_rerun_infra_failed", extra={"rerun_id": rerun_id})
        return "infrastructure unavailable"  # still pending or running: the reconciler sends it again


def _rerun(task: Any, rerun_id: str) -> str:
    event = reviews.rerun_claim(rerun_id=rerun_id)
    if event is None:
        return "skipped"
    audit, definition = event.audit, event.step_result.step
    timeline = timeline_for(audit.fiche)
    try:
        asked = runs.step_ask_llm(
            audit=audit,
            definition=definition,
            timeline=timeline,
            reviewer_instructions=event.instructions or None,
            only_control_point=event.control_point_index,
            use_rlm=event.use_rlm,
        )
    except LimitBusy:
        reviews.rerun_release(rerun_id=rerun_id)
        raise retry_waiting(task, countdown=random.uniform(0.5, 2.0)) from None
    except llm.LlmTransientError as exc:
        if error_budget_left(task, max_errors=settings.AUDIT_STEP_MAX_ERRORS):
            reviews.rerun_release(rerun_id=rerun_id)
            if exc.retry_after is not None and exc.status == 429:
                raise retry_waiting(task, countdown=exc.retry_after + random.uniform(0, 0.5)) from None
            raise retry_after_error(task, exc, base=settings.AUDIT_STEP_RETRY_BASE_SECONDS) from None
        reviews.rerun_fail(rerun_id=rerun_id, error=str(exc))
        return "failed"
    except llm.LlmError as exc:
        reviews.rerun_fail(rerun_id=rerun_id, error=str(exc))
        return "failed"
    index = EvidenceIndex(timeline.turns, threshold=settings.EVIDENCE_MATCH_THRESHOLD)
    gated = runs.gate_answer(
        definition=definition, answer=asked.answer, index=index, only_control_point=event.control_point_index
    )
    return "completed" if reviews.rerun_apply(rerun_id=rerun_id, asked=asked, gated=gated) else "skipped"
