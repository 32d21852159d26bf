"""Disputes: the agent whose sale it is contests one control point's verdict; a reviewer accepts it (the
verdict changes through the review path: rescored, a history row, events) or rejects it, with a comment
either way, and the agent sees the outcome.

Rules: the disputer reads the audit in their ``audits`` scope **and** is the sale's agent (their
``crm_user_id`` is the fiche's); only a verdict held against the agent (``fail``, ``uncertain``) is
disputed, asking for ``pass`` (default) or ``not_applicable`` (422 ``verdict_not_disputable`` otherwise: a
``pending`` point already awaits a reviewer); within ``AUDIT_DISPUTE_WINDOW_DAYS`` of the audit's completion; one open
dispute per point (409 ``dispute_open``), and none again on a point whose last dispute was resolved while
its verdict has not changed since (409 ``dispute_already_resolved``). The resolver holds ``audits`` write in
scope and is not the disputer.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audits.models import (
    PENDING,
    Audit,
    AuditPurpose,
    AuditStatus,
    AuditStepResult,
    ControlPointResult,
    Dispute,
    DisputeStatus,
    PointStatus,
)
from audits.services import reviews
from core.exceptions import ConflictError, DomainRuleError, InvalidInput, NotFoundError, PermissionDeniedError
from core.formats import iso
from realtime.publisher import publish

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger("audits.disputes")

# A dispute contests a verdict held against the agent, and asks for one in their favour.
DISPUTABLE = (PointStatus.FAIL, PointStatus.UNCERTAIN)
PROPOSABLE = (PointStatus.PASS, PointStatus.NOT_APPLICABLE)


def _comment(text: str | None) -> str:
    text = (text or "").strip()
    if not text:
        raise InvalidInput("A comment is required.", details={"comment": ["This field may not be blank."]})
    return text


def _point(audit: Audit, position: int, index: int) -> tuple[AuditStepResult, ControlPointResult]:
    row = AuditStepResult.objects.filter(audit=audit, position=position).first()
    point = row.control_points.filter(index=index).first() if row is not None else None
    if row is None or point is None:
        raise NotFoundError(
            f"Audit {audit.pk} has no verdict for control point {index} of step {position}.",
            code="control_point_not_found",
            details={"step_position": position, "control_point_index": index},
        )
    return row, point


def dispute_open(
    *, audit: Audit, position: int, index: int, comment: str, proposed_status: str | None, user: User
) -> Dispute:
    """The agent's dispute of one verdict (the caller checked ``audits`` read scope on the audit)."""
    comment = _comment(comment)
    if not user.crm_user_id or audit.fiche.crm_user_id != user.crm_user_id:
        raise PermissionDeniedError(
            "Only the agent whose sale it is may dispute its audit.",
            code="not_the_agent",
            details={"audit_id": str(audit.pk)},
        )
    if audit.purpose != AuditPurpose.PRODUCTION:
        raise ConflictError(
            "An evaluation's audit judges a config version, not the agent: it cannot be disputed.",
            code="evaluation_audit",
            details={"audit_id": str(audit.pk)},
        )
    if audit.status != AuditStatus.COMPLETED or audit.completed_at is None:
        raise ConflictError(
            f"Audit {audit.pk} is {audit.status}: only a completed audit can be disputed.",
            code="audit_not_completed",
            details={"audit_id": str(audit.pk), "status": audit.status},
        )
    closes = audit.completed_at + timedelta(days=settings.AUDIT_DISPUTE_WINDOW_DAYS)
    if timezone.now() > closes:
        raise DomainRuleError(
            f"The dispute window closed {settings.AUDIT_DISPUTE_WINDOW_DAYS} days after the audit completed.",
            code="dispute_window_closed",
            details={"audit_id": str(audit.pk), "closed_at": iso(closes)},
        )
    with transaction.atomic():
        Audit.objects.select_for_update().filter(pk=audit.pk).get()  # serializes with reviews and reruns
        row, point = _point(audit, position, index)
        current = point.effective_status
        last = Dispute.objects.filter(step_result=row, control_point_index=index).order_by("-created_at").first()
        if last is not None and last.status == DisputeStatus.OPEN:
            raise ConflictError(
                "This control point already has an open dispute.",
                code="dispute_open",
                details={"dispute_id": str(last.pk)},
            )
        if last is not None and last.verdict_after == current:
            raise ConflictError(
                "This verdict was disputed and the dispute resolved; it has not changed since.",
                code="dispute_already_resolved",
                details={"dispute_id": str(last.pk), "status": last.status},
            )
        if current not in DISPUTABLE:
            raise DomainRuleError(
                f"A {current} verdict cannot be disputed: only a verdict held against the agent "
                f"({', '.join(DISPUTABLE)}) can"
                + (" (this one already awaits a reviewer)." if current == PENDING else "."),
                code="verdict_not_disputable",
                details={"step_position": position, "control_point_index": index, "verdict": current},
            )
        proposed = proposed_status or PointStatus.PASS
        if proposed not in PROPOSABLE:
            raise InvalidInput(
                f"proposed_status must be one of {', '.join(PROPOSABLE)}.",
                details={"proposed_status": [f"{proposed} is not a verdict in the agent's favour."]},
            )
        try:
            with transaction.atomic():
                dispute = Dispute.objects.create(
                    audit=audit,
                    step_result=row,
                    step_position=position,
                    control_point_index=index,
                    comment=comment,
                    proposed_status=proposed,
                    verdict_before=current,
                    raised_by=user,
                )
        except IntegrityError:
            raise ConflictError(
                "This control point already has an open dispute.",
                code="dispute_open",
                details={"dispute_id": str(last.pk) if last is not None else None},
            ) from None
        publish(
            "audit.dispute_opened",
            {
                "audit_id": str(audit.pk),
                "dispute_id": str(dispute.pk),
                "step_position": position,
                "control_point_index": index,
                "verdict": current,
                "proposed_status": proposed,
                "status": DisputeStatus.OPEN,
            },
        )
    logger.info("audit_disputed", extra={"audit_id": str(audit.pk), "dispute_id": str(dispute.pk)})
    return dispute


def dispute_resolve(*, dispute_id: str, accept: bool, comment: str, status: str | None = None, user: User) -> Dispute:
    """Accept (the verdict becomes ``status``, by default the one the agent asked for, through
    ``reviews.review_create``) or reject an open dispute. The caller checked ``audits`` write scope."""
    comment = _comment(comment)
    with transaction.atomic():
        dispute = Dispute.objects.select_for_update().filter(pk=dispute_id).first()
        if dispute is None:
            raise NotFoundError(f"No dispute {dispute_id}.", code="dispute_not_found")
        if dispute.status != DisputeStatus.OPEN:
            raise ConflictError(
                f"Dispute {dispute.pk} is already {dispute.status}.",
                code="dispute_not_open",
                details={"dispute_id": str(dispute.pk), "status": dispute.status},
            )
        if dispute.raised_by_id == user.pk:
            raise PermissionDeniedError("A dispute is resolved by someone else than its author.", code="own_dispute")
        audit = Audit.objects.select_related("fiche", "config_version").get(pk=dispute.audit_id)
        if accept:
            verdict = status or dispute.proposed_status
            if verdict == dispute.verdict_before:
                raise InvalidInput(
                    "Accepting a dispute changes the verdict: reject it to keep the verdict.",
                    details={"status": verdict, "verdict_before": dispute.verdict_before},
                )
            result = reviews.review_create(
                audit=audit,
                position=dispute.step_position,
                control_point_index=dispute.control_point_index,
                status=verdict,
                comment=f"Contestation acceptée : {comment}",
                user=user,
            )
            dispute.review = result.reviews[0]
            dispute.verdict_after = verdict
        else:
            _, point = _point(audit, dispute.step_position, dispute.control_point_index)
            dispute.verdict_after = point.effective_status
        dispute.status = DisputeStatus.ACCEPTED if accept else DisputeStatus.REJECTED
        dispute.resolution_comment, dispute.resolved_by, dispute.resolved_at = comment, user, timezone.now()
        dispute.save()
        publish(
            "audit.dispute_resolved",
            {
                "audit_id": str(audit.pk),
                "dispute_id": str(dispute.pk),
                "step_position": dispute.step_position,
                "control_point_index": dispute.control_point_index,
                "verdict_before": dispute.verdict_before,
                "verdict_after": dispute.verdict_after,
                "resolved_at": iso(dispute.resolved_at),
                "status": dispute.status,
            },
        )
    logger.info("audit_dispute_resolved", extra={"dispute_id": str(dispute.pk), "status": dispute.status})
    return dispute
