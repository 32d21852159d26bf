"""Trust per control point, continuously: the AI's verdict on a point decides on its own only while
reviewers agree with it.

For each (config, step position, control point index) — the key calibration uses, across versions — the
window is the latest ``AUDIT_TRUST_WINDOW`` reviewed verdicts (one per audit's point: its latest review),
each a pair (the AI's own first verdict, the reviewer's). From the window: agreement and Cohen's kappa.

- With at least ``AUDIT_TRUST_MIN_REVIEWS`` pairs and kappa below ``AUDIT_TRUST_MIN_KAPPA``, the point's
  trust is **withdrawn**: new audits (and reruns) store the AI's verdict as advice (``advisory``), the point
  counts as ``pending`` until a reviewer decides, the audit needs review and enters the review queues.
- When kappa is back at or above the minimum (same sample rule), trust is **restored**.
- Every change is a ``ControlPointTrustChange`` row (when, kappa, agreement, sample size), an
  ``audit.trust_changed`` event and a log line.

Kappa is undefined when both raters used one same label throughout (chance agreement is total); every pair
then agrees, which counts as kappa 1 here. The state is refreshed in the transaction of every review, so
the review that tips the window decides at once; audits running then pick it up from their next step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.models import AuditPurpose, ControlPointTrust, ControlPointTrustChange, HumanReview, TrustState
from audits.selectors import cohen_kappa
from core.formats import iso
from realtime.publisher import publish

logger = logging.getLogger("audits.trust")


@dataclass(frozen=True)
class Window:
    pairs: list[tuple[str, str]]

    @property
    def size(self) -> int:
        return len(self.pairs)

    @property
    def agreement(self) -> float | None:
        return round(sum(a == h for a, h in self.pairs) / len(self.pairs), 4) if self.pairs else None

    @property
    def kappa(self) -> float | None:
        """Cohen's kappa; 1.0 when every pair agrees on one same label (kappa is undefined there)."""
        if not self.pairs:
            return None
        kappa = cohen_kappa(self.pairs)
        return 1.0 if kappa is None else kappa


def window(config_id: int, step_position: int, control_point_index: int, *, size: int | None = None) -> Window:
    """The latest reviewed verdicts of a point: (the AI's first verdict, the reviewer's), newest first, one per
    audit's point (a point reviewed twice counts once, with its latest review)."""
    size = settings.AUDIT_TRUST_WINDOW if size is None else size
    rows = (
        HumanReview.objects.filter(
            config_id=config_id,
            step_position=step_position,
            control_point_index=control_point_index,
            step_result__audit__purpose=AuditPurpose.PRODUCTION,  # an evaluation's audits never count
        )
        .order_by("-created_at", "-id")
        .values_list("step_result_id", "ai_first_status", "ai_status", "status")
    )
    seen: set[int] = set()
    pairs: list[tuple[str, str]] = []
    for step_result_id, first, ai, human in rows.iterator(chunk_size=max(size * 2, 50)):
        if step_result_id in seen:
            continue
        seen.add(step_result_id)
        pairs.append((first or ai, human))
        if len(pairs) >= size:
            break
    return Window(pairs)


def decide(current: str, w: Window) -> str:
    """The state a window calls for (the current one while the sample is under the minimum)."""
    if w.size < settings.AUDIT_TRUST_MIN_REVIEWS or w.kappa is None:
        return current
    return TrustState.WITHDRAWN if w.kappa < settings.AUDIT_TRUST_MIN_KAPPA else TrustState.TRUSTED


def refresh(*, config_id: int, step_position: int, control_point_index: int) -> ControlPointTrust:
    """Recompute a point's window and state (under the trust row's lock); record and announce a change."""
    now = timezone.now()
    with transaction.atomic():
        ControlPointTrust.objects.get_or_create(
            config_id=config_id, step_position=step_position, control_point_index=control_point_index
        )
        trust = ControlPointTrust.objects.select_for_update().get(
            config_id=config_id, step_position=step_position, control_point_index=control_point_index
        )
        w = window(config_id, step_position, control_point_index)
        state = decide(trust.state, w)
        previous = trust.state
        trust.kappa, trust.agreement, trust.sample_size, trust.computed_at = w.kappa, w.agreement, w.size, now
        if state != previous:
            trust.state, trust.changed_at = state, now
            ControlPointTrustChange.objects.create(
                trust=trust,
                state=state,
                previous_state=previous,
                kappa=w.kappa,
                agreement=w.agreement,
                sample_size=w.size,
            )
        trust.save()
        if state != previous:
            publish(
                "audit.trust_changed",
                {
                    "config_id": str(config_id),
                    "step_position": step_position,
                    "control_point_index": control_point_index,
                    "previous_state": previous,
                    "kappa": w.kappa,
                    "agreement": w.agreement,
                    "sample_size": w.size,
                    "changed_at": iso(now),
                    "status": state,
                },
            )
            logger.warning(
                "audit_trust_changed",
                extra={
                    "config_id": config_id,
                    "step_position": step_position,
                    "control_point_index": control_point_index,
                    "state": state,
                    "kappa": w.kappa,
                    "sample_size": w.size,
                },
            )
    return trust


def withdrawn_indexes(config_id: int, step_position: int) -> set[int]:
    """The control points of a config's step whose AI verdicts are advice now."""
    return set(
        ControlPointTrust.objects.filter(
            config_id=config_id, step_position=step_position, state=TrustState.WITHDRAWN
        ).values_list("control_point_index", flat=True)
    )
