"""Compliance, computed in code from the control points' verdicts (the LLM never scores).

- A control point is ``pass | fail | uncertain | not_applicable``. The evidence gate has already
  turned a ``pass`` without a verified quote into ``uncertain``.
- A step's applicable points are those not ``not_applicable``; ``score = weight x passed /
  applicable``; ``conforme`` = no critical point failed or uncertain and ``passed / applicable >=
  pass_ratio``. A step with no applicable point is excluded from the audit's scores.
- The audit: ``overall_score`` = sum of the included steps' scores, ``max_score`` = sum of their
  weights, ``score_percentage``; ``niveau`` from the thresholds (EXCELLENT, BON, ACCEPTABLE,
  INSUFFISANT), REJET when any critical point or critical step is not passed; ``is_compliant`` =
  niveau at least ACCEPTABLE and not REJET; ``critical_issues`` = the critical points not passed;
  ``needs_review`` when any point is ``uncertain`` or ``pending``.
- ``pending``: the AI's verdict on a point whose trust is withdrawn (``audits.services.trust``) is advice;
  until a reviewer decides, the point counts like ``uncertain`` (not passed; a critical one is a critical
  issue) and the audit needs review.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PASS, FAIL, UNCERTAIN, NOT_APPLICABLE = "pass", "fail", "uncertain", "not_applicable"
PENDING = "pending"  # an advisory AI verdict (the point's trust is withdrawn) no reviewer has decided yet
_MISSED = (FAIL, UNCERTAIN, PENDING)  # not passed, and a critical miss when the point is critical
_TO_REVIEW = (UNCERTAIN, PENDING)
EXCELLENT, BON, ACCEPTABLE, INSUFFISANT, REJET = "EXCELLENT", "BON", "ACCEPTABLE", "INSUFFISANT", "REJET"
COMPLIANT_NIVEAUX = frozenset({EXCELLENT, BON, ACCEPTABLE})


@dataclass(frozen=True)
class PointVerdict:
    index: int
    status: str
    is_critical: bool
    question: str = ""


@dataclass(frozen=True)
class StepScore:
    score: float
    max_score: float
    conforme: bool
    included: bool
    passed: int
    applicable: int


def step_score(*, weight: float, pass_ratio: float, points: Sequence[PointVerdict]) -> StepScore:
    applicable = [p for p in points if p.status != NOT_APPLICABLE]
    if not applicable:
        return StepScore(0.0, 0.0, True, False, 0, 0)
    passed = sum(1 for p in applicable if p.status == PASS)
    critical_miss = any(p.is_critical and p.status in _MISSED for p in applicable)
    conforme = not critical_miss and passed / len(applicable) >= pass_ratio - 1e-9
    return StepScore(
        round(weight * passed / len(applicable), 4), float(weight), conforme, True, passed, len(applicable)
    )


@dataclass(frozen=True)
class StepOutcome:
    position: int
    name: str
    weight: float
    is_critical: bool
    score: StepScore
    points: Sequence[PointVerdict]


@dataclass(frozen=True)
class Summary:
    overall_score: float
    max_score: float
    score_percentage: float
    niveau: str
    is_compliant: bool
    critical_issues: list[dict[str, Any]] = field(default_factory=list)
    needs_review: bool = False

    def audit_fields(self) -> dict[str, Any]:
        """The ``Audit`` columns this summary sets (same names)."""
        return dataclasses.asdict(self)


def niveau_for(percentage: float, thresholds: Mapping[str, float]) -> str:
    if percentage >= thresholds["excellent"]:
        return EXCELLENT
    if percentage >= thresholds["bon"]:
        return BON
    if percentage >= thresholds["acceptable"]:
        return ACCEPTABLE
    return INSUFFISANT


def audit_summary(steps: Sequence[StepOutcome], thresholds: Mapping[str, float]) -> Summary:
    included = [s for s in steps if s.score.included]
    overall = round(sum(s.score.score for s in included), 4)
    maximum = float(sum(s.weight for s in included))
    exact = sum(s.score.score for s in included) / maximum * 100 if maximum else 0.0
    percentage = round(exact, 2)  # shown rounded; the niveau is decided on the exact value
    issues = [
        {
            "step_position": s.position,
            "step_name": s.name,
            "control_point_index": p.index,
            "question": p.question,
            "status": p.status,
        }
        for s in steps
        for p in s.points
        if p.is_critical and p.status in _MISSED
    ]
    critical_step_missed = any(s.is_critical and s.score.included and not s.score.conforme for s in steps)
    rejected = bool(issues) or critical_step_missed
    niveau = REJET if rejected else niveau_for(exact, thresholds)
    return Summary(
        overall_score=overall,
        max_score=maximum,
        score_percentage=percentage,
        niveau=niveau,
        is_compliant=niveau in COMPLIANT_NIVEAUX,
        critical_issues=issues,
        needs_review=any(p.status in _TO_REVIEW for s in steps for p in s.points),
    )
