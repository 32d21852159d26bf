"""Reads of audits: the audit in the API's shape (steps, control points, verified and rejected
citations), lists filtered by scope (through the audit's fiche), the admin's timeline view, an audit's
history of reruns and reviews, and the calibration of the AI against reviewers."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import Prefetch, QuerySet

from accounts.permissions import can_access, scope_queryset
from audits.models import (
    PENDING,
    Audit,
    AuditControlPointDefinition,
    AuditPurpose,
    AuditStepResult,
    Citation,
    ControlPointResult,
    ControlPointTrust,
    ControlPointTrustChange,
    Dispute,
    DisputeStatus,
    Evaluation,
    HumanReview,
    RerunEvent,
)
from core.exceptions import ConflictError, NotFoundError, PermissionDeniedError
from core.formats import iso, uuid_or_none
from costs.selectors import audit_cost_block
from privacy.redaction import redact_text

if TYPE_CHECKING:
    from accounts.models import User


def audits_for(user: User, *, action: str = "read", purpose: str | None = AuditPurpose.PRODUCTION) -> QuerySet[Audit]:
    """Audits whose fiche is in the user's ``audits`` scope; production ones unless ``purpose`` says otherwise
    (None: every purpose). An evaluation's audits never count in compliance figures or calibration."""
    audits = Audit.objects.select_related("fiche", "config_version")
    if purpose is not None:
        audits = audits.filter(purpose=purpose)
    return scope_queryset(
        audits,
        user,
        "audits",
        action="read" if action == "read" else "write",
        group_field="fiche__groupe",
        user_field="fiche__crm_user_id",
    )


def audit_for_user(user: User, audit_id: object, *, action: str = "read") -> Audit:
    key = uuid_or_none(audit_id)
    audit = Audit.objects.select_related("fiche", "config_version").filter(pk=key).first() if key else None
    if audit is None:
        raise NotFoundError(f"No audit {audit_id}.", code="audit_not_found", details={"audit_id": str(audit_id)})
    if not can_access(user, "audits", audit.fiche, action="read" if action == "read" else "write"):
        raise PermissionDeniedError(
            "This audit's fiche is outside your audits scope.", code="scope_denied", details={"audit_id": str(audit_id)}
        )
    return audit


def audit_summary_dict(audit: Audit, *, counts: bool | None = None) -> dict[str, Any]:
    """The audit's summary; ``counts``: whether it is the audit that counts for its fiche and config (computed
    when not given: pass it for a page, from ``counting_audit_ids``)."""
    if counts is None:
        counts = str(audit.pk) in counting_audit_ids([audit])
    return {
        "audit_id": str(audit.pk),
        "fiche_id": audit.fiche.fiche_id,
        "audit_config_id": audit.config_id,
        "config_version": audit.config_version.version,
        "status": audit.status,
        "use_rlm": audit.tools_mode,
        "model": audit.model,
        "overall_score": audit.overall_score,
        "max_score": audit.max_score,
        "score_percentage": audit.score_percentage,
        "niveau": audit.niveau,
        "is_compliant": audit.is_compliant,
        "critical_issues": audit.critical_issues,
        "needs_review": audit.needs_review,
        "total_tokens": audit.total_tokens,
        "duration_seconds": audit.duration_seconds,
        "error": audit.error,
        "created_at": iso(audit.created_at),
        "completed_at": iso(audit.completed_at),
        "purpose": audit.purpose,
        "evaluation_id": str(audit.evaluation_id) if audit.evaluation_id else None,
        "predecessor_id": str(audit.predecessor_id) if audit.predecessor_id else None,
        "pinned": audit.pinned_at is not None,
        "counts": counts,
    }


def _citation(c: Citation, shown: Callable[[str], str]) -> dict[str, Any]:
    return {"text": shown(c.text), "speaker": c.speaker, "call_id": c.call_id, "start": c.start, "end": c.end}


def _clear(text: str) -> str:
    return text


def _shown(redacted: bool) -> Callable[[str], str]:
    """How a text of the calls (quote, rationale) is shown: as stored, or with its personal data replaced by
    placeholders for a reader who does not see it in clear (``privacy.access``)."""
    return redact_text if redacted else _clear


def _point(result: ControlPointResult, definition: Any, shown: Callable[[str], str] = _clear) -> dict[str, Any]:
    citations = list(result.citations.all())
    return {
        "index": result.index,
        "question": definition.question if definition else "",
        "is_critical": definition.is_critical if definition else False,
        "status": result.effective_status,
        "ai_status": result.status,
        "model_status": result.ai_status,
        "gate_reason": result.gate_reason,
        "guided": result.guided,
        "unguided_ai_status": result.unguided_ai_status,
        "conditional": definition.conditional if definition else False,
        "speaker": definition.speaker if definition else "agent",
        "human_status": result.human_status,
        "advisory": result.advisory,
        "pending_review": result.effective_status == PENDING,
        "rationale": shown(result.rationale),
        "citations": [_citation(c, shown) for c in citations if c.verified],
        "rejected_citations": [{"text": shown(c.quote), "reason": c.reason} for c in citations if not c.verified],
    }


def step_dict(row: AuditStepResult, *, redacted: bool = False) -> dict[str, Any]:
    definitions = {p.index: p for p in row.step.control_points.all()}
    return {
        "position": row.position,
        "name": row.step.name,
        "weight": row.step.weight,
        "is_critical": row.step.is_critical,
        "status": row.status,
        "score": row.score,
        "max_score": row.max_score,
        "conforme": row.conforme,
        "tokens_used": row.tokens_used,
        "error": row.error,
        "control_points": [_point(r, definitions.get(r.index), _shown(redacted)) for r in row.control_points.all()],
    }


def _with_results(steps: QuerySet[AuditStepResult]) -> QuerySet[AuditStepResult]:
    """Step rows with what ``step_dict`` reads: the definition, control points in order, citations in order."""
    return steps.select_related("step").prefetch_related(
        "step__control_points",
        Prefetch(
            "control_points",
            queryset=ControlPointResult.objects.order_by("index").prefetch_related(
                Prefetch("citations", queryset=Citation.objects.order_by("position"))
            ),
        ),
    )


def audit_dict(audit: Audit, *, redacted: bool = False) -> dict[str, Any]:
    """The audit with its steps, and ``cost``: what its LLM calls (steps and reruns) cost (one query).
    ``redacted``: quotes and rationales with their personal data replaced by placeholders."""
    steps = _with_results(AuditStepResult.objects.filter(audit=audit)).order_by("position")
    return {
        **audit_summary_dict(audit),
        "steps": [step_dict(s, redacted=redacted) for s in steps],
        "cost": audit_cost_block(audit.pk),
    }


# --- The admin's audit page ------------------------------------------------------------------------


@dataclass
class TimelinePiece:
    text: str
    cited_by: list[str]  # labels of the verified citations covering this text ("2.1": step 2, point 1)


@dataclass
class TimelineTurn:
    anchor: str
    call_id: str
    clock: str
    speaker: str
    pieces: list[TimelinePiece]
    cited: bool


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def _turn_for(turns: list[dict[str, Any]], citation: Citation) -> int | None:
    """The turn holding a verified citation: its call, its start inside the turn, its words in the text."""
    start = citation.start or 0.0
    for position, turn in enumerate(turns):
        if turn["call_id"] != citation.call_id or not turn["start"] - 0.5 <= start <= turn["end"] + 0.5:
            continue
        if citation.text and citation.text in turn["text"]:
            return position
    return None


def _pieces(text: str, spans: list[tuple[int, int, str]]) -> list[TimelinePiece]:
    """``text`` cut at the citation spans' edges, each piece with the labels of the spans covering it."""
    cuts = sorted({0, len(text), *(s for s, _, _ in spans), *(e for _, e, _ in spans)})
    pieces = []
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        if lo == hi:
            continue
        labels = [label for s, e, label in spans if s <= lo and hi <= e]
        pieces.append(TimelinePiece(text[lo:hi], labels))
    return pieces or [TimelinePiece(text, [])]


def audit_admin_report(audit: Audit, *, redacted: bool = False) -> dict[str, Any]:
    """What a reviewer reads on the admin's audit page: the summary, each step and control point with
    its verified and rejected citations, and the timeline with the verified citations marked where
    they were said (the calls as the LLM read them); ``redacted`` (a reader who does not see personal data in
    clear): all of it with placeholders."""
    from transcriptions.selectors import timeline_for

    data = audit_dict(audit, redacted=redacted)
    citations = list(
        Citation.objects.filter(control_point__step_result__audit=audit, verified=True)
        .select_related("control_point__step_result")
        .order_by("control_point__step_result__position", "control_point__index", "position")
    )
    # The calls as the auditor read them (redacted with LLM_REDACT_PII: the quotes hold its placeholders), and
    # always redacted for a reader who does not see personal data in clear.
    as_read = redacted or settings.LLM_REDACT_PII
    turns = timeline_for(audit.fiche, redacted=as_read).turns if citations or audit.is_terminal else []
    if as_read:
        for c in citations:  # located in the redacted turns (a quote made on a redacted timeline is unchanged)
            c.text = redact_text(c.text)
    spans: dict[int, list[tuple[int, int, str]]] = {}
    anchors: dict[tuple[int, int, int], str] = {}
    ordinal: dict[tuple[int, int], int] = {}  # the n-th verified citation of a point, as in the API's list
    for c in citations:
        point_key = (c.control_point.step_result.position, c.control_point.index)
        n = ordinal[point_key] = ordinal.get(point_key, -1) + 1
        position = _turn_for(turns, c)
        if position is None:
            continue
        at = turns[position]["text"].find(c.text)
        spans.setdefault(position, []).append((at, at + len(c.text), f"{point_key[0]}.{point_key[1]}"))
        anchors[(*point_key, n)] = f"turn-{position}"
    for step in data["steps"]:
        for point in step["control_points"]:
            for n, citation in enumerate(point["citations"]):
                citation["anchor"] = anchors.get((step["position"], point["index"], n))
                citation["clock"] = _clock(citation["start"] or 0.0)
    timeline = [
        TimelineTurn(
            anchor=f"turn-{position}",
            call_id=turn["call_id"],
            clock=_clock(turn["start"]),
            speaker=turn["speaker"],
            pieces=_pieces(turn["text"], spans.get(position, [])),
            cited=position in spans,
        )
        for position, turn in enumerate(turns)
    ]
    return {
        "audit": data,
        "timeline": timeline,
        "cited_turns": len(spans),
        "verified": len(citations),
        "history": audit_history(audit),
    }


def review_created_dict(audit: Audit, step: AuditStepResult, reviews: list[Any]) -> dict[str, Any]:
    """The answer to a review: the reviews made, the step rescored, the audit's new summary."""
    row = _with_results(AuditStepResult.objects.filter(pk=step.pk)).get()
    return {
        "reviews": [
            {
                "id": str(r.pk),
                "step_position": step.position,
                "control_point_index": r.control_point_index,
                "status": r.status,
                "ai_status": r.ai_status,
                "previous_status": r.previous_status,
                "comment": r.comment,
                "reviewer": r.reviewer.email if r.reviewer else None,
                "created_at": iso(r.created_at),
            }
            for r in reviews
        ],
        "step": step_dict(row),
        "audit": audit_summary_dict(audit),
    }


# --- History and calibration ---------------------------------------------------------------------------


def _who(user: Any) -> str | None:
    return user.email if user is not None else None


def audit_history(audit: Audit) -> list[dict[str, Any]]:
    """Reruns, reviews and disputes of an audit, oldest first (a dispute at the time it was raised)."""
    entries: list[tuple[datetime, dict[str, Any]]] = []
    for e in RerunEvent.objects.filter(audit=audit).select_related("requested_by"):
        entries.append(
            (
                e.created_at,
                {
                    "type": "rerun",
                    "id": str(e.pk),
                    "at": iso(e.created_at),
                    "by": _who(e.requested_by),
                    "step_position": e.position,
                    "control_point_index": e.control_point_index,
                    "scope": "step" if e.control_point_index is None else "control_point",
                    "instructions": e.instructions,
                    "use_rlm": e.tools_mode,
                    "status": e.status,
                    "error": e.error,
                    "original": e.original,
                    "rerun": e.rerun,
                    "comparison": e.comparison,
                    "completed_at": iso(e.completed_at),
                },
            )
        )
    for r in HumanReview.objects.filter(step_result__audit=audit).select_related("reviewer", "step_result"):
        entries.append(
            (
                r.created_at,
                {
                    "type": "review",
                    "id": str(r.pk),
                    "at": iso(r.created_at),
                    "by": _who(r.reviewer),
                    "step_position": r.step_result.position,
                    "control_point_index": r.control_point_index,
                    "status": r.status,
                    "ai_status": r.ai_status,
                    "previous_status": r.previous_status,
                    "comment": r.comment,
                    "step_score": {"before": r.step_score_before, "after": r.step_score_after},
                },
            )
        )
    for d in Dispute.objects.filter(audit=audit).select_related("raised_by", "resolved_by"):
        entries.append((d.created_at, {"type": "dispute", "at": iso(d.created_at), **dispute_dict(d)}))
    entries.sort(key=lambda item: (item[0], item[1]["type"]))
    return [entry for _, entry in entries]


def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Cohen's kappa of (ai, human) label pairs; None when chance agreement is total (undefined)."""
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == h for a, h in pairs) / n
    ai, human = Counter(a for a, _ in pairs), Counter(h for _, h in pairs)
    expected = sum(ai[label] * human[label] for label in set(ai) | set(human)) / (n * n)
    if expected >= 1.0:
        return None
    return round((observed - expected) / (1 - expected), 4)


def calibration(
    audits: QuerySet[Audit],
    *,
    config_id: int,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    with_trust: bool = False,
) -> dict[str, Any]:
    """Per control point of a config: reviewed verdicts, agreement between the AI and the reviewer, Cohen's
    kappa and the confusion counts; lowest kappa first.

    The AI's verdict is its own, after the evidence gate and **before any reviewer-guided rerun**
    (``unguided_status``): a rerun a reviewer steered towards their answer would otherwise count as the AI
    agreeing. Guided verdicts are reported beside it (``guided_reruns``, ``guided_agreements``), never in the
    agreement or kappa. Each point has a 95 % confidence interval of its kappa; ``with_trust`` (a reader of
    audit-configs: trust is config data, computed over every reviewer's window) adds its trust state, rolling
    figures and changes; everyone sees the point's ``trust_state`` (its audits show it as ``advisory`` anyway)."""
    points = ControlPointResult.objects.filter(
        step_result__audit__in=audits.filter(config_id=config_id), human_status__isnull=False
    )
    if date_from is not None:
        points = points.filter(step_result__audit__created_at__gte=date_from)
    if date_to is not None:
        points = points.filter(step_result__audit__created_at__lte=date_to)
    grouped: dict[tuple[int, int], list[tuple[str, str]]] = defaultdict(list)
    guided: dict[tuple[int, int], list[bool]] = defaultdict(list)  # per guided verdict: agreed with the reviewer
    latest: dict[tuple[int, int], tuple[int, int, str]] = {}  # key -> (version, step id, step name)
    rows = points.values_list(
        "step_result__position",
        "index",
        "status",
        "unguided_status",
        "guided",
        "human_status",
        "step_result__audit__config_version__version",
        "step_result__step_id",
        "step_result__step__name",
    )
    for position, index, current, unguided, was_guided, human, version, step_id, step_name in rows:
        key = (position, index)
        grouped[key].append((unguided or current, human or ""))
        if was_guided:
            guided[key].append(current == human)
        if key not in latest or version > latest[key][0]:
            latest[key] = (version, step_id, step_name)
    definitions = {
        (d.step_id, d.index): d
        for d in AuditControlPointDefinition.objects.filter(step_id__in={v[1] for v in latest.values()})
    }
    trusts = trust_by_point(config_id)
    result: list[dict[str, Any]] = []
    for key, pairs in grouped.items():
        _, step_id, step_name = latest[key]
        definition = definitions.get((step_id, key[1]))
        confusion: dict[str, dict[str, int]] = defaultdict(dict)
        for ai, human in pairs:
            confusion[ai][human] = confusion[ai].get(human, 0) + 1
        agreed = sum(a == h for a, h in pairs)
        result.append(
            {
                "step_position": key[0],
                "step_name": step_name,
                "control_point_index": key[1],
                "question": definition.question if definition else "",
                "is_critical": definition.is_critical if definition else False,
                "reviewed": len(pairs),
                "agreements": agreed,
                "agreement_rate": round(agreed / len(pairs), 4),
                "kappa": cohen_kappa(pairs),
                "kappa_ci95": kappa_interval(pairs),
                "confusion": {ai: dict(humans) for ai, humans in sorted(confusion.items())},
                "guided_reruns": len(guided[key]),
                "guided_agreements": sum(guided[key]),
                "trust_state": trusts[key].state if key in trusts else "trusted",
                **({"trust": trust_dict(trusts.get(key))} if with_trust else {}),
            }
        )
    result.sort(key=lambda r: (r["kappa"] is None, r["kappa"] if r["kappa"] is not None else 0, -r["reviewed"]))
    total = sum(r["reviewed"] for r in result)
    return {
        "audit_config_id": config_id,
        "from": iso(date_from),
        "to": iso(date_to),
        "reviewed": total,
        "control_points": result,
    }


def kappa_interval(pairs: list[tuple[str, str]]) -> list[float] | None:
    """A 95 % confidence interval of Cohen's kappa (the large-sample standard error of Cohen, 1960:
    sqrt(po (1 - po) / (n (1 - pe)^2))), clipped to [-1, 1]; None when kappa is undefined."""
    n = len(pairs)
    kappa = cohen_kappa(pairs)
    if not n or kappa is None:
        return None
    observed = sum(a == h for a, h in pairs) / n
    ai, human = Counter(a for a, _ in pairs), Counter(h for _, h in pairs)
    expected = sum(ai[label] * human[label] for label in set(ai) | set(human)) / (n * n)
    se = math.sqrt(observed * (1 - observed) / (n * (1 - expected) ** 2))
    return [round(max(-1.0, kappa - 1.96 * se), 4), round(min(1.0, kappa + 1.96 * se), 4)]


# --- Trust per control point ------------------------------------------------------------------------------


def trust_change_dict(change: ControlPointTrustChange) -> dict[str, Any]:
    return {
        "at": iso(change.at),
        "state": change.state,
        "previous_state": change.previous_state,
        "kappa": change.kappa,
        "agreement": change.agreement,
        "sample_size": change.sample_size,
    }


def trust_dict(trust: ControlPointTrust | None) -> dict[str, Any]:
    """A point's trust: state, the rolling window's figures, and every change of state (oldest first)."""
    if trust is None:
        return {
            "state": "trusted",
            "kappa": None,
            "agreement": None,
            "sample_size": 0,
            "computed_at": None,
            "changed_at": None,
            "changes": [],
        }
    return {
        "state": trust.state,
        "kappa": trust.kappa,
        "agreement": trust.agreement,
        "sample_size": trust.sample_size,
        "computed_at": iso(trust.computed_at),
        "changed_at": iso(trust.changed_at),
        "changes": [trust_change_dict(c) for c in trust.changes.all()],
    }


def trust_by_point(config_id: int) -> dict[tuple[int, int], ControlPointTrust]:
    rows = ControlPointTrust.objects.filter(config_id=config_id).prefetch_related(
        Prefetch("changes", queryset=ControlPointTrustChange.objects.order_by("at", "id"))
    )
    return {(t.step_position, t.control_point_index): t for t in rows}


def config_trust(config_id: int) -> dict[str, Any]:
    """Every control point of a config's current version with its trust (config data: audit-configs readers)."""
    from audits.models import AuditConfig

    config = AuditConfig.objects.select_related("current_version").filter(pk=config_id).first()
    if config is None:
        raise NotFoundError(f"No audit config {config_id}.", code="audit_config_not_found")
    known = trust_by_point(config_id)
    points = []
    if config.current_version is not None:
        for d in AuditControlPointDefinition.objects.filter(step__config_version=config.current_version).select_related(
            "step"
        ):
            key = (d.step.position, d.index)
            points.append(
                {
                    "step_position": key[0],
                    "control_point_index": key[1],
                    "question": d.question,
                    "is_critical": d.is_critical,
                    "trust": trust_dict(known.pop(key, None)),
                }
            )
    for key, trust in sorted(known.items()):  # points of older versions
        points.append(
            {
                "step_position": key[0],
                "control_point_index": key[1],
                "question": "",
                "is_critical": False,
                "trust": trust_dict(trust),
            }
        )
    points.sort(key=lambda p: (p["step_position"], p["control_point_index"]))
    return {"audit_config_id": config_id, "control_points": points}


# --- Disputes ---------------------------------------------------------------------------------------------


def dispute_dict(d: Dispute) -> dict[str, Any]:
    return {
        "id": str(d.pk),
        "audit_id": str(d.audit_id),
        "step_position": d.step_position,
        "control_point_index": d.control_point_index,
        "status": d.status,
        "comment": d.comment,
        "proposed_status": d.proposed_status,
        "verdict_before": d.verdict_before,
        "verdict_after": d.verdict_after or None,
        "raised_by": _who(d.raised_by),
        "created_at": iso(d.created_at),
        "resolution_comment": d.resolution_comment or None,
        "resolved_by": _who(d.resolved_by),
        "resolved_at": iso(d.resolved_at),
    }


def disputes_for(user: User, *, action: str = "read") -> QuerySet[Dispute]:
    """Disputes on audits in the user's ``audits`` scope."""
    return Dispute.objects.filter(audit__in=audits_for(user, action=action)).select_related("raised_by", "resolved_by")


def dispute_for_user(user: User, dispute_id: object, *, action: str = "read") -> Dispute:
    key = uuid_or_none(dispute_id)
    dispute = Dispute.objects.select_related("audit__fiche").filter(pk=key).first() if key else None
    if dispute is None:
        raise NotFoundError(f"No dispute {dispute_id}.", code="dispute_not_found")
    audit_for_user(user, dispute.audit_id, action=action)
    return dispute


def dispute_metrics(disputes: QuerySet[Dispute], *, config_id: int) -> dict[str, Any]:
    """Per control point of a config: disputes, open / accepted / rejected, acceptance rate (of the resolved)
    and median days to resolve; most disputed first."""
    rows = disputes.filter(audit__config_id=config_id).values_list(
        "step_position", "control_point_index", "status", "created_at", "resolved_at"
    )
    grouped: dict[tuple[int, int], list[tuple[str, Any, Any]]] = defaultdict(list)
    for position, index, status, created, resolved_at in rows:
        grouped[(position, index)].append((status, created, resolved_at))
    points: list[dict[str, Any]] = []
    for (position, index), items in grouped.items():
        counts = Counter(status for status, _, _ in items)
        days = sorted((r - c).total_seconds() / 86400 for _, c, r in items if r is not None)
        settled = counts[DisputeStatus.ACCEPTED] + counts[DisputeStatus.REJECTED]
        points.append(
            {
                "step_position": position,
                "control_point_index": index,
                "disputes": len(items),
                "open": counts[DisputeStatus.OPEN],
                "accepted": counts[DisputeStatus.ACCEPTED],
                "rejected": counts[DisputeStatus.REJECTED],
                "acceptance_rate": round(counts[DisputeStatus.ACCEPTED] / settled, 4) if settled else None,
                "median_days_to_resolve": round(statistics.median(days), 3) if days else None,
            }
        )
    points.sort(key=lambda p: (-p["disputes"], p["step_position"], p["control_point_index"]))
    total = sum(p["disputes"] for p in points)
    accepted = sum(p["accepted"] for p in points)
    settled_all = accepted + sum(p["rejected"] for p in points)
    return {
        "audit_config_id": config_id,
        "disputes": total,
        "acceptance_rate": round(accepted / settled_all, 4) if settled_all else None,
        "control_points": points,
    }


# --- Re-audits: the diff beside the predecessor, the summary of a re-audit, the audit that counts ------------


def _points_of(audit: Audit) -> dict[tuple[int, int], dict[str, Any]]:
    """Each control point of an audit as it counts: its verdict (the reviewer's, else the AI's) and verified
    quotes, with the step's score."""
    rows = _with_results(AuditStepResult.objects.filter(audit=audit))
    points: dict[tuple[int, int], dict[str, Any]] = {}
    for row in rows:
        questions = {d.index: d.question for d in row.step.control_points.all()}
        for p in row.control_points.all():
            points[(row.position, p.index)] = {
                "status": p.effective_status,
                "quotes": [c.text for c in p.citations.all() if c.verified],
                "question": questions.get(p.index, ""),
                "step_score": row.score,
            }
    return points


def _quotes_shown(value: Any, shown: Callable[[str], str]) -> Any:
    """``value`` (a diff's or an evaluation's result) with every ``quotes`` list of texts passed through ``shown``."""
    if isinstance(value, dict):
        return {
            key: [shown(q) if isinstance(q, str) else q for q in item]
            if key == "quotes" and isinstance(item, list)
            else _quotes_shown(item, shown)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_quotes_shown(item, shown) for item in value]
    return value


def audit_diff(audit: Audit, *, redacted: bool = False) -> dict[str, Any]:
    """A re-audit beside its predecessor: niveau, score, and every control point whose verdict changed
    (with both verdicts and both verified quotes; ``redacted``: with placeholders); points only one of the two
    versions has count as changed."""
    predecessor = audit.predecessor
    if predecessor is None:
        raise NotFoundError(
            f"Audit {audit.pk} is not a re-audit: it has no predecessor.",
            code="no_predecessor",
            details={"audit_id": str(audit.pk)},
        )
    if audit.status != "completed":
        raise ConflictError(
            f"Audit {audit.pk} is {audit.status}: it is compared with its predecessor once it completed.",
            code="audit_not_completed",
            details={"audit_id": str(audit.pk), "status": audit.status},
        )
    before, after = _points_of(predecessor), _points_of(audit)
    changed = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if b is not None and a is not None and b["status"] == a["status"]:
            continue
        changed.append(
            {
                "step_position": key[0],
                "control_point_index": key[1],
                "question": (a or b or {}).get("question", ""),
                "before": None if b is None else {"status": b["status"], "quotes": b["quotes"]},
                "after": None if a is None else {"status": a["status"], "quotes": a["quotes"]},
            }
        )
    return {
        "audit_id": str(audit.pk),
        "predecessor_id": str(predecessor.pk),
        "fiche_id": audit.fiche.fiche_id,
        "config_version": {"before": predecessor.config_version.version, "after": audit.config_version.version},
        "status": {"before": predecessor.status, "after": audit.status},
        "niveau": {"before": predecessor.niveau, "after": audit.niveau, "changed": predecessor.niveau != audit.niveau},
        "score_percentage": {"before": predecessor.score_percentage, "after": audit.score_percentage},
        "is_compliant": {"before": predecessor.is_compliant, "after": audit.is_compliant},
        "changed_points": _quotes_shown(changed, _shown(redacted)),
        "unchanged_points": len(set(before) & set(after)) - sum(1 for c in changed if c["before"] and c["after"]),
    }


def reaudit_summary(audits: QuerySet[Audit], *, batch_id: str) -> dict[str, Any]:
    """A re-audit (its batch's audits, in the reader's scope): fiches whose niveau changed and the points that
    moved most."""
    from batches.models import BatchItem

    # The batch's items name their audits (one it followed, already running for the fiche, included).
    refs = BatchItem.objects.filter(batch_id=batch_id, ref_id__isnull=False).values_list("ref_id", flat=True)
    rows = list(
        audits.filter(pk__in=[r for r in refs if uuid_or_none(r)], predecessor__isnull=False)
        .select_related("predecessor__config_version", "fiche", "config_version")
        .order_by("fiche__fiche_id")
    )
    moved: Counter[tuple[int, int]] = Counter()
    fiches: list[dict[str, Any]] = []
    changed_niveau = 0
    for audit in rows:
        if audit.status != "completed":
            fiches.append({"fiche_id": audit.fiche.fiche_id, "audit_id": str(audit.pk), "status": audit.status})
            continue
        diff = audit_diff(audit)
        changed_niveau += bool(diff["niveau"]["changed"])
        for point in diff["changed_points"]:
            moved[(point["step_position"], point["control_point_index"])] += 1
        fiches.append(
            {
                "fiche_id": audit.fiche.fiche_id,
                "audit_id": str(audit.pk),
                "predecessor_id": diff["predecessor_id"],
                "status": audit.status,
                "niveau": diff["niveau"],
                "changed_points": len(diff["changed_points"]),
            }
        )
    return {
        "batch_id": str(batch_id),
        "fiches": len(rows),
        "completed": sum(1 for f in fiches if f["status"] == "completed"),
        "niveau_changed": changed_niveau,
        "points_moved": [
            {"step_position": p, "control_point_index": i, "fiches": n}
            for (p, i), n in sorted(moved.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "results": fiches,
    }


def counting_audit_ids(audits: list[Audit]) -> set[str]:
    """Of these audits, those that count for their fiche and config: the pinned one, else the latest completed
    production audit of the config's active version."""
    pairs = {(a.fiche_id, a.config_id) for a in audits}
    if not pairs:
        return set()
    fiche_ids = {f for f, _ in pairs}
    config_ids = {c for _, c in pairs}
    candidates = (
        Audit.objects.filter(
            fiche_id__in=fiche_ids,
            config_id__in=config_ids,
            purpose=AuditPurpose.PRODUCTION,
            status="completed",
        )
        .order_by("completed_at", "created_at")
        .values_list("pk", "fiche_id", "config_id", "config_version_id", "config__current_version_id", "pinned_at")
    )
    pinned: dict[tuple[int, int], tuple[Any, str]] = {}
    latest: dict[tuple[int, int], str] = {}
    for pk, fiche_id, config_id, version_id, active_id, pinned_at in candidates:
        key = (fiche_id, config_id)
        if key not in pairs:
            continue
        if pinned_at is not None and (key not in pinned or pinned_at > pinned[key][0]):
            pinned[key] = (pinned_at, str(pk))
        if version_id == active_id:
            latest[key] = str(pk)  # ordered by completion: the last one wins
    return {pinned[k][1] if k in pinned else latest[k] for k in pairs if k in pinned or k in latest}


# --- Evaluations --------------------------------------------------------------------------------------------


def _readable_fiches(user: User, fiche_ids: set[str]) -> set[str]:
    """Of these fiche ids, those in the user's ``audits`` read scope (one query)."""
    from fiches.models import FicheCache

    rows = scope_queryset(FicheCache.objects.filter(fiche_id__in=fiche_ids), user, "audits", action="read")
    return set(rows.values_list("fiche_id", flat=True))


def evaluations_for(user: User, *, config_id: int | None = None, limit: int = 100) -> list[Evaluation]:
    """The latest evaluations whose every fiche lies in the user's ``audits`` read scope (their result quotes
    those calls), with their audits' counts by status (``audit_counts``)."""
    rows = Evaluation.objects.select_related("version", "baseline_version", "requested_by").order_by("-created_at")
    if config_id is not None:
        rows = rows.filter(config_id=config_id)
    candidates = list(rows[: limit * 5])
    readable = _readable_fiches(user, {f for e in candidates for f in e.fiche_ids})
    chosen = [e for e in candidates if readable.issuperset(e.fiche_ids)][:limit]
    counts: dict[Any, Counter[str]] = defaultdict(Counter)
    for evaluation_id, status in Audit.objects.filter(evaluation__in=chosen).values_list("evaluation_id", "status"):
        counts[evaluation_id][status] += 1
    for e in chosen:
        e.audit_counts = dict(counts[e.pk])  # type: ignore[attr-defined]
    return chosen


def evaluation_for_user(user: User, evaluation_id: object) -> Evaluation:
    key = uuid_or_none(evaluation_id)
    evaluation = (
        Evaluation.objects.select_related("version", "baseline_version", "requested_by").filter(pk=key).first()
        if key
        else None
    )
    if evaluation is None:
        raise NotFoundError(f"No evaluation {evaluation_id}.", code="evaluation_not_found")
    if not _readable_fiches(user, set(evaluation.fiche_ids)).issuperset(evaluation.fiche_ids):
        raise PermissionDeniedError(
            "This evaluation's fiches are not all in your audits scope.",
            code="scope_denied",
            details={"evaluation_id": str(evaluation.pk)},
        )
    return evaluation


def evaluation_dict(evaluation: Evaluation, *, redacted: bool = False) -> dict[str, Any]:
    """An evaluation and its result (``redacted``: the quotes of the changed points with placeholders)."""
    statuses = getattr(evaluation, "audit_counts", None)
    if statuses is None:
        statuses = Counter(Audit.objects.filter(evaluation=evaluation).values_list("status", flat=True))
    return {
        "id": str(evaluation.pk),
        "audit_config_id": evaluation.config_id,
        "version": evaluation.version.version,
        "baseline_version": evaluation.baseline_version.version if evaluation.baseline_version else None,
        "fiche_ids": list(evaluation.fiche_ids),
        "use_rlm": evaluation.tools_mode,
        "status": evaluation.status,
        "audits": dict(statuses),
        "result": _quotes_shown(evaluation.result, _shown(redacted)),
        "error": evaluation.error,
        "requested_by": _who(evaluation.requested_by),
        "created_at": iso(evaluation.created_at),
        "completed_at": iso(evaluation.completed_at),
    }
