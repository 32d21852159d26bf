"""Celery tasks of audits: thin wrappers that re-load by id and call one service.

``audit_step_analyze`` calls the LLM: it runs on the ``llm`` queue, consumed by an I/O worker pool
(threads), never in the prefork slots of CRM and orchestration work.

On the workflow kernel: the orchestrator fans out plain messages (``core.dispatch.fan_out``), each step
reports its end to the audit's inbox (``AUDIT_INBOX``; updater ``core.tasks.apply_outcome``), a step's
claim and its LLM slot are leases the worker's heartbeat renews (``core.leases``), and the reconciler
(``core.reconcile``) re-drives stalled audits and a dead worker's steps.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import shared_task
from django.conf import settings

from audits.evidence import EvidenceIndex
from audits.models import Audit
from audits.services import evaluations, finish, prepare, reconcile, reviews, steps
from core.dispatch import fan_out, send
from core.inbox import report
from core.leases import keep_alive
from core.limits import LimitBusy
from core.retry import (
    INFRA_RETRY,
    TRANSIENT_INFRA_ERRORS,
    error_budget_left,
    retry_after_error,
    retry_infra,
    retry_waiting,
    wait_backoff,
)
from llm import client as llm
from transcriptions.selectors import llm_timeline_for

logger = logging.getLogger("audits.tasks")


@shared_task(name="audits.tasks.audit_run", ignore_result=True, **INFRA_RETRY)
def audit_run(audit_id: str) -> str:
    """Orchestrator: the prerequisites, then one step message per step left (the audit's updater ends
    it; the reconciler is the safety net). Waiting for transcripts ends here: their run resumes us."""
    prepared = prepare.audit_prepare(audit_id=audit_id)
    if prepared.state == "analyze" and prepared.positions:
        fan_out(audit_step_analyze, ((audit_id, position) for position in prepared.positions))
    elif prepared.state == "analyze":  # nothing left to analyze: the updater ends it
        report(finish.AUDIT_INBOX, audit_id, [None])
    return prepared.state


@shared_task(bind=True, name="audits.tasks.llm.audit_step_analyze", ignore_result=True)
def audit_step_analyze(
    self: Any,
    audit_id: str,
    position: int,
    error_attempts: int = 0,
    infra_attempts: int = 0,
    wait_attempts: int = 0,
    outcome: str | None = None,
) -> dict[str, Any]:
    """Analyze one step: claim it, ask the LLM (under ``LLM_MAX_CONCURRENCY``), gate every quote,
    store the result, and tell the audit's updater. The claim and the LLM slot are short leases the
    worker's heartbeat renews while it works (a dead worker gives both back within
    ``CLAIM_LEASE_SECONDS``; the reconciler then sends the step again). A step done or in a live
    worker's hands is a no-op (that worker reports); waiting for a slot re-enqueues with a growing
    backoff without spending the error budget; transient LLM errors retry with backoff
    (``AUDIT_STEP_MAX_ERRORS``); after that, or on a permanent error, the step fails. A transient
    database or Redis error retries the task; one while telling the updater retries only that
    (``outcome`` carries it: the LLM is not asked again)."""
    ended = outcome
    try:
        if ended is None:
            ended = _analyze(self, audit_id, position)
        if ended != "skipped":
            report(finish.AUDIT_INBOX, audit_id, [position])
        return {"position": position, "outcome": ended}
    except TRANSIENT_INFRA_ERRORS as exc:
        retry_infra(self, exc, keep={"outcome": ended})
        return {"position": position, "outcome": "infrastructure unavailable"}  # the reconciler re-drives


def _analyze(task: Any, audit_id: str, position: int) -> str:
    row = steps.step_claim(audit_id=audit_id, position=position)
    if row is None:
        return "skipped"  # done, failed, or a live worker holds it: that worker reports
    token = row.claim_token
    with keep_alive(steps.claim_lease(row)):
        audit = Audit.objects.select_related("fiche").get(pk=audit_id)
        timeline = llm_timeline_for(audit.fiche)
        try:
            asked = steps.step_ask_llm(audit=audit, definition=row.step, timeline=timeline)
        except LimitBusy:
            steps.step_release(audit_id=audit_id, position=position, token=token)
            raise wait_backoff(task) from None  # every LLM slot is in live hands: wait, longer each time
        except llm.LlmTransientError as exc:
            if error_budget_left(task, max_errors=settings.AUDIT_STEP_MAX_ERRORS):
                steps.step_release(audit_id=audit_id, position=position, token=token)
                wait = exc.retry_after
                if wait is not None and exc.status == 429:  # the provider's own limit: a wait
                    raise retry_waiting(task, countdown=wait + random.uniform(0, 0.5)) from None
                logger.warning(
                    "audit_step_retry", extra={"audit_id": audit_id, "position": position, "error": str(exc)}
                )
                raise retry_after_error(task, exc, base=settings.AUDIT_STEP_RETRY_BASE_SECONDS) from None
            failed = steps.step_fail(audit_id=audit_id, position=position, error=str(exc), token=token)
            return "failed" if failed else "skipped"
        except llm.LlmError as exc:
            failed = steps.step_fail(audit_id=audit_id, position=position, error=str(exc), token=token)
            return "failed" if failed else "skipped"
        index = EvidenceIndex(timeline.turns, threshold=settings.EVIDENCE_MATCH_THRESHOLD)
        gated = steps.gate_answer(definition=row.step, answer=asked.answer, index=index)
        stored = steps.step_store(audit_id=audit_id, position=position, asked=asked, gated=gated, token=token)
        return "completed" if stored else "skipped"


@shared_task(name="audits.tasks.reconcile_audits", ignore_result=True)
def reconcile_audits() -> dict[str, list[str]]:
    """Beat (every minute): every audit ends, every rerun ends."""
    actions = reconcile.audit_reconcile()
    for audit_id in actions["redrive"]:
        send(audit_run, audit_id)
    for unit in actions["steps"]:  # a dead worker's steps
        audit_id, position = unit.rsplit(":", 1)
        send(audit_step_analyze, audit_id, int(position))
    actions["reruns"] = reviews.reruns_to_redrive()
    for rerun_id in actions["reruns"]:
        send(audit_step_rerun, rerun_id)
    return actions


@shared_task(bind=True, name="audits.tasks.llm.audit_step_rerun", ignore_result=True)
def audit_step_rerun(self: Any, rerun_id: str, error_attempts: int = 0, infra_attempts: int = 0) -> str:
    """Rerun one step (or one control point) of a completed audit through the same prompt, LLM
    client and evidence gate as a first run; the result replaces the stored one and the audit is
    rescored. Waits and transient errors as ``audit_step_analyze``."""
    try:
        return _rerun(self, rerun_id)
    except TRANSIENT_INFRA_ERRORS as exc:
        retry_infra(self, exc)
        return "infrastructure unavailable"  # still pending or running: the reconciler sends it again


def _rerun(task: Any, rerun_id: str) -> str:
    event = reviews.rerun_claim(rerun_id=rerun_id)
    if event is None:
        return "skipped"
    with keep_alive(reviews.rerun_lease(event)):
        audit, definition = event.audit, event.step_result.step
        timeline = llm_timeline_for(audit.fiche)
        try:
            asked = steps.step_ask_llm(
                audit=audit,
                definition=definition,
                timeline=timeline,
                reviewer_instructions=event.instructions or None,
                only_control_point=event.control_point_index,
                tools_mode=event.tools_mode,
            )
        except LimitBusy:
            reviews.rerun_release(rerun_id=rerun_id)
            raise wait_backoff(task) from None
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
        gated = steps.gate_answer(
            definition=definition, answer=asked.answer, index=index, only_control_point=event.control_point_index
        )
        applied = reviews.rerun_apply(rerun_id=rerun_id, asked=asked, gated=gated, token=event.claim_token)
        return "completed" if applied else "skipped"


@shared_task(name="audits.tasks.reconcile_evaluations", ignore_result=True)
def reconcile_evaluations() -> list[str]:
    """Beat: settle running evaluations whose last audit's hook was lost."""
    return evaluations.reconcile_evaluations()
