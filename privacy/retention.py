"""Retention: personal data past its date, purged in bounded batches (a beat task, daily; or
``manage.py purge_personal_data``). Each kind of data has its setting in days (0 = kept forever):

- ``transcripts`` (``RETENTION_TRANSCRIPT_DAYS``): transcriptions whose transcript is older than the
  cutoff (``transcribed_at``) are deleted, text, words and speaker map with them. Never one a run holds:
  only completed or failed rows whose run (if any) has ended. The usage ledger keeps its rows (``SET_NULL``);
  the fiche shows the recording as not transcribed.
- ``audit_quotes`` (``RETENTION_AUDIT_QUOTE_DAYS``): in audits finished before the cutoff, the citations'
  quote and matched text are blanked (call, times, speaker, verified flag, reason and score stay) and so are
  the quotes of the LLM's stored answer (``raw_result``: each quote's text, its verdict and rationale stay);
  ``evaluation_quotes``: the verified quotes an evaluation's result lists for the points that changed between
  two versions. Verdicts, scores and rationale stay: they are the company's compliance record.
- ``chat_messages`` (``RETENTION_CHAT_DAYS``): messages older than the cutoff are deleted; then
  ``chat_conversations``: conversations left without any message and not used since the cutoff.
- ``webhook_bodies`` (``RETENTION_WEBHOOK_BODY_DAYS``): the payload of a delivery that ended (success or
  failed) and was made before the cutoff becomes ``{}``; a pending or retrying one is never touched.
  ``webhook_responses``: the receiver's response body of attempts made before the cutoff (of ended
  deliveries) is blanked; headers, status codes and errors stay (no personal data; needed to debug a
  receiver). Successful deliveries are still deleted after ``WEBHOOK_RETENTION_DAYS`` by the realtime app.
- ``workflow_logs`` (``RETENTION_WORKFLOW_LOG_DAYS``): rows of ``workflow_logs`` older than the cutoff.

**Bounded.** Each counter's rows are taken by ascending primary key: a batch is one short transaction
that locks at most ``RETENTION_PURGE_BATCH_SIZE`` due rows (``FOR UPDATE SKIP LOCKED``: a row someone holds
is left for the next run, never waited for) and changes them; at most ``RETENTION_PURGE_MAX_BATCHES``
batches per counter and run. A counter stopped at that cap makes the report ``complete=False``: the next
run goes on. Only rows not purged yet are due (a blanked quote is ``''``, a blanked payload ``'{}'``), so a
daily run does not redo the work of the days before. Call it outside a transaction: each batch commits on
its own. Concurrent runs split the rows between them.

**Reported.** One ``PurgeReport`` per run, written as each kind ends (a run killed midway still says what it
did): every counter with the rows it changed (``null``: its kind is kept forever), ``finished_at``, and the
failure of a kind in ``error`` (the other kinds still run). One log line ``retention_purged`` with the counts;
no personal data is ever logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import BooleanField, Exists, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from audits.models import AuditStepResult, Citation, Evaluation
from chat.models import ChatConversation, ChatMessage
from fiches.models import WorkflowLog
from privacy.models import PurgeReport
from realtime.models import DeliveryStatus, WebhookDelivery, WebhookDeliveryAttempt
from realtime.webhooks import PURGED_PAYLOAD
from transcriptions.models import TERMINAL_RUN_STATUSES, Transcription, TranscriptionStatus

logger = logging.getLogger("privacy.retention")

ENDED_DELIVERY = (DeliveryStatus.SUCCESS, DeliveryStatus.FAILED)
EMPTY_PAYLOAD = PURGED_PAYLOAD  # a redelivery of it is refused (realtime.webhooks)
# An evaluation's result: ``changed[*].{baseline,candidate}.quotes`` (lists of the verified quotes' text).
EVALUATION_QUOTES = '$.changed[*].*.quotes[*] ? (@ != "")'

Counts = dict[str, int]
Row = tuple[Any, ...]


@dataclass(frozen=True)
class Step:
    """One table's purge within a kind: ``due(cutoff)`` its rows past the cutoff and not purged yet;
    ``apply(rows)`` changes the rows a batch locked (``(pk, *fields)`` tuples) and returns the counts."""

    counter: str
    due: Callable[[datetime], QuerySet[Any]]
    apply: Callable[[list[Row]], Counts]
    fields: tuple[str, ...] = ()
    also: tuple[str, ...] = ()  # other counters ``apply`` reports
    count: Callable[[datetime], Counts] | None = None  # what is due, for a dry run (default: ``due`` counted)

    @property
    def counters(self) -> tuple[str, ...]:
        return (self.counter, *self.also)

    def count_due(self, cutoff: datetime) -> Counts:
        return self.count(cutoff) if self.count else {self.counter: self.due(cutoff).count()}


@dataclass(frozen=True)
class Kind:
    name: str
    setting: str  # its retention in days (0: kept forever)
    steps: tuple[Step, ...]

    @property
    def days(self) -> int:
        return int(getattr(settings, self.setting))

    @property
    def counters(self) -> tuple[str, ...]:
        return tuple(c for step in self.steps for c in step.counters)

    def cutoff(self, now: datetime) -> datetime | None:
        """Rows older than this are due; ``None``: kept forever."""
        return now - timedelta(days=self.days) if self.days > 0 else None


# --- Transcripts -----------------------------------------------------------------------------------------


def _due_transcripts(cutoff: datetime) -> QuerySet[Any]:
    # Only rows nobody works on: ended (completed, or failed keeping an older transcript) and not claimed by a
    # run still going (a forced re-transcription moves its rows to pending first: they are not due).
    idle = Q(run__isnull=True) | Q(run__status__in=TERMINAL_RUN_STATUSES)
    ended = (TranscriptionStatus.COMPLETED, TranscriptionStatus.FAILED)
    return Transcription.objects.filter(idle, status__in=ended, transcribed_at__lt=cutoff)


def _delete_transcripts(rows: list[Row]) -> Counts:
    # Through the ORM so every foreign key pointing here is honoured (the usage ledger's SET_NULL); only the
    # primary keys are loaded, never the words.
    _, deleted = Transcription.objects.filter(pk__in=[r[0] for r in rows]).only("pk").delete()
    return {"transcripts": deleted.get(Transcription._meta.label, 0)}


# --- Audit quotes ----------------------------------------------------------------------------------------


def _due_citations(cutoff: datetime) -> QuerySet[Any]:
    return Citation.objects.filter(control_point__step_result__audit__completed_at__lt=cutoff).exclude(
        quote="", text=""
    )


def _count_citations(cutoff: datetime) -> Counts:
    due = _due_citations(cutoff)
    steps = due.order_by().values("control_point__step_result_id").distinct().count()
    return {"audit_quotes": due.count(), "audit_answers": steps}


def blank_answer(answer: Any) -> bool:
    """Blank, in place, the text of every quote of an LLM step answer (``{"control_points": [{"index",
    "status", "quotes": [{"text", "speaker"}], "rationale"}]}``); True when something changed."""
    changed = False
    points = answer.get("control_points") if isinstance(answer, dict) else None
    for point in points if isinstance(points, list) else ():
        quotes = point.get("quotes") if isinstance(point, dict) else None
        for quote in quotes if isinstance(quotes, list) else ():
            if isinstance(quote, dict) and quote.get("text"):
                quote["text"] = ""
                changed = True
    return changed


def _blank_citations(rows: list[Row]) -> Counts:
    # Lock order: the citations (taken by the batch), then their steps, both without waiting. A step held now
    # (a rerun storing its answer) keeps its citations for the next run: a citation and the answer it came
    # from are blanked together, so "no quote left in the citations" means none in the answers either.
    wanted = {step_id for _, step_id in rows}
    steps = list(
        AuditStepResult.objects.filter(pk__in=wanted)
        .select_for_update(skip_locked=True)
        .only("pk", "raw_result")
        .order_by("pk")
    )
    locked = {s.pk for s in steps}
    citations = [pk for pk, step_id in rows if step_id in locked]
    blanked = Citation.objects.filter(pk__in=citations).update(quote="", text="")
    answers = [s for s in steps if blank_answer(s.raw_result)]
    AuditStepResult.objects.bulk_update(answers, ["raw_result"])
    return {"audit_quotes": blanked, "audit_answers": len(answers)}


def _due_evaluations(cutoff: datetime) -> QuerySet[Any]:
    column = f'"{Evaluation._meta.db_table}"."result"'
    has_quote = RawSQL(f"jsonb_path_exists({column}, %s::jsonpath)", [EVALUATION_QUOTES], output_field=BooleanField())
    return Evaluation.objects.filter(has_quote, completed_at__lt=cutoff)


def _blank_evaluations(rows: list[Row]) -> Counts:
    changed = []
    for evaluation in Evaluation.objects.filter(pk__in=[r[0] for r in rows]).only("pk", "result"):
        result = evaluation.result if isinstance(evaluation.result, dict) else {}
        blanked = False
        for entry in result.get("changed") or ():
            for side in entry.values() if isinstance(entry, dict) else ():
                quotes = side.get("quotes") if isinstance(side, dict) else None
                if isinstance(quotes, list) and any(quotes):
                    side["quotes"] = ["" for _ in quotes]
                    blanked = True
        if blanked:
            changed.append(evaluation)
    Evaluation.objects.bulk_update(changed, ["result"])
    return {"evaluation_quotes": len(changed)}


# --- Chat ------------------------------------------------------------------------------------------------


def _due_messages(cutoff: datetime) -> QuerySet[Any]:
    return ChatMessage.objects.filter(created_at__lt=cutoff)


def _delete_messages(rows: list[Row]) -> Counts:
    deleted, _ = ChatMessage.objects.filter(pk__in=[r[0] for r in rows]).delete()
    return {"chat_messages": deleted}


def _due_conversations(cutoff: datetime) -> QuerySet[Any]:
    # Not used since the cutoff (a message stored bumps ``updated_at``) and left without a message.
    messages = ChatMessage.objects.filter(conversation=OuterRef("pk"))
    return ChatConversation.objects.filter(updated_at__lt=cutoff).exclude(Exists(messages))


def _count_conversations(cutoff: datetime) -> Counts:
    recent = ChatMessage.objects.filter(conversation=OuterRef("pk"), created_at__gte=cutoff)
    return {
        "chat_conversations": ChatConversation.objects.filter(updated_at__lt=cutoff).exclude(Exists(recent)).count()
    }


def _delete_conversations(rows: list[Row]) -> Counts:
    # The usage ledger points here (SET_NULL): through the ORM.
    _, deleted = ChatConversation.objects.filter(pk__in=[r[0] for r in rows]).delete()
    return {"chat_conversations": deleted.get(ChatConversation._meta.label, 0)}


# --- Webhooks --------------------------------------------------------------------------------------------


def _due_payloads(cutoff: datetime) -> QuerySet[Any]:
    return WebhookDelivery.objects.filter(status__in=ENDED_DELIVERY, created_at__lt=cutoff).exclude(
        payload=EMPTY_PAYLOAD
    )


def _blank_payloads(rows: list[Row]) -> Counts:
    return {"webhook_bodies": WebhookDelivery.objects.filter(pk__in=[r[0] for r in rows]).update(payload=EMPTY_PAYLOAD)}


def _due_responses(cutoff: datetime) -> QuerySet[Any]:
    return WebhookDeliveryAttempt.objects.filter(delivery__status__in=ENDED_DELIVERY, started_at__lt=cutoff).exclude(
        response_body=""
    )


def _blank_responses(rows: list[Row]) -> Counts:
    attempts = WebhookDeliveryAttempt.objects.filter(pk__in=[r[0] for r in rows])
    return {"webhook_responses": attempts.update(response_body="")}


# --- Workflow logs ---------------------------------------------------------------------------------------


def _due_logs(cutoff: datetime) -> QuerySet[Any]:
    return WorkflowLog.objects.filter(created_at__lt=cutoff)


def _delete_logs(rows: list[Row]) -> Counts:
    deleted, _ = WorkflowLog.objects.filter(pk__in=[r[0] for r in rows]).delete()
    return {"workflow_logs": deleted}


KINDS: tuple[Kind, ...] = (
    Kind("transcripts", "RETENTION_TRANSCRIPT_DAYS", (Step("transcripts", _due_transcripts, _delete_transcripts),)),
    Kind(
        "audit_quotes",
        "RETENTION_AUDIT_QUOTE_DAYS",
        (
            Step(
                "audit_quotes",
                _due_citations,
                _blank_citations,
                fields=("control_point__step_result_id",),
                also=("audit_answers",),
                count=_count_citations,
            ),
            Step("evaluation_quotes", _due_evaluations, _blank_evaluations),
        ),
    ),
    Kind(
        "chat_messages",
        "RETENTION_CHAT_DAYS",
        (
            Step("chat_messages", _due_messages, _delete_messages),
            Step("chat_conversations", _due_conversations, _delete_conversations, count=_count_conversations),
        ),
    ),
    Kind(
        "webhook_bodies",
        "RETENTION_WEBHOOK_BODY_DAYS",
        (
            Step("webhook_bodies", _due_payloads, _blank_payloads),
            Step("webhook_responses", _due_responses, _blank_responses),
        ),
    ),
    Kind("workflow_logs", "RETENTION_WORKFLOW_LOG_DAYS", (Step("workflow_logs", _due_logs, _delete_logs),)),
)

COUNTERS: tuple[str, ...] = tuple(c for kind in KINDS for c in kind.counters)


# --- The run ---------------------------------------------------------------------------------------------


def _batch(step: Step, cutoff: datetime, after: Any, size: int) -> tuple[list[Row], Counts]:
    """One short transaction: lock up to ``size`` due rows after ``after`` (skipping held ones), change them."""
    with transaction.atomic():
        due = step.due(cutoff)
        if after is not None:
            due = due.filter(pk__gt=after)
        rows = list(
            due.order_by("pk").select_for_update(skip_locked=True, of=("self",)).values_list("pk", *step.fields)[:size]
        )
        return rows, step.apply(rows) if rows else {}


def _run_step(step: Step, cutoff: datetime, counts: Counts) -> bool:
    """Batches of ``step`` until nothing is due or the cap; adds to ``counts``. False when it stopped at the cap."""
    size, cap = settings.RETENTION_PURGE_BATCH_SIZE, settings.RETENTION_PURGE_MAX_BATCHES
    after = None
    for _ in range(cap):
        rows, changed = _batch(step, cutoff, after, size)
        for counter, n in changed.items():
            counts[counter] = counts.get(counter, 0) + n
        if len(rows) < size:
            return True
        after = rows[-1][0]
    return False


def purge_due(*, now: datetime | None = None) -> PurgeReport:
    """Purge every kind's data past its retention (bounded: see the module), record and log what was done."""
    now = now or timezone.now()
    report = PurgeReport.objects.create(purged={})
    purged: dict[str, int | None] = {}
    capped: list[str] = []
    errors: list[str] = []
    for kind in KINDS:
        counts: Counts = dict.fromkeys(kind.counters, 0)
        try:
            cutoff = kind.cutoff(now)
            if cutoff is None:
                purged.update(dict.fromkeys(kind.counters, None))
                continue
            for step in kind.steps:
                if not _run_step(step, cutoff, counts):
                    capped.append(step.counter)
        except SoftTimeLimitExceeded:
            errors.append(f"{kind.name}: stopped at the task's time limit")
            purged.update(counts)
            break
        except Exception as exc:  # one kind failing never stops the others
            logger.exception("retention_kind_failed", extra={"kind": kind.name})
            errors.append(f"{kind.name}: {type(exc).__name__}: {str(exc)[:500]}")
        purged.update(counts)
        PurgeReport.objects.filter(pk=report.pk).update(purged=purged)
    purged = {c: purged.get(c, 0) for c in COUNTERS}  # kinds a time limit stopped before: 0
    report.purged = purged
    report.complete = not capped and not errors
    report.error = "\n".join(errors) or None
    report.finished_at = timezone.now()
    report.save(update_fields=["purged", "complete", "error", "finished_at"])
    logger.info(
        "retention_purged",
        extra={
            "report_id": report.pk,
            **{c: n for c, n in purged.items() if n is not None},
            "kept_forever": ",".join(c for c, n in purged.items() if n is None) or "-",
            "capped": ",".join(capped) or "-",
            "complete": report.complete,
            "failed": bool(errors),
        },
    )
    return report


def count_due(*, now: datetime | None = None) -> dict[str, int | None]:
    """What a purge would change now, per counter (``None``: kept forever). Reads only."""
    now = now or timezone.now()
    counts: dict[str, int | None] = {}
    for kind in KINDS:
        cutoff = kind.cutoff(now)
        for step in kind.steps:
            if cutoff is None:
                counts.update(dict.fromkeys(step.counters, None))
            else:
                counts.update(step.count_due(cutoff))
    return counts
