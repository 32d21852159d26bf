"""Compliance computed in code (audits.compliance): a step's score and conformity from its control
points' verdicts, and the audit's summary (scores, niveau against the thresholds, REJET, compliance,
critical issues, review flag)."""

from __future__ import annotations

import pytest

from audits.compliance import (
    ACCEPTABLE,
    BON,
    EXCELLENT,
    FAIL,
    INSUFFISANT,
    NOT_APPLICABLE,
    PASS,
    REJET,
    UNCERTAIN,
    PointVerdict,
    StepOutcome,
    StepScore,
    audit_summary,
    niveau_for,
    step_score,
)

DEFAULT_THRESHOLDS = {"excellent": 90, "bon": 75, "acceptable": 60}
CUSTOM_THRESHOLDS = {"excellent": 95.5, "bon": 80, "acceptable": 50}


def points(statuses: str, critical: str = "") -> list[PointVerdict]:
    """``points("PFU-", "c..")``: P pass, F fail, U uncertain, - not applicable; ``c`` marks a
    critical point at the same index."""
    codes = {"P": PASS, "F": FAIL, "U": UNCERTAIN, "-": NOT_APPLICABLE}
    return [
        PointVerdict(index=i, status=codes[s], is_critical=critical[i : i + 1] == "c", question=f"Q{i}?")
        for i, s in enumerate(statuses)
    ]


def outcome(
    position: int,
    statuses: str,
    critical: str = "",
    *,
    weight: float = 10,
    pass_ratio: float = 1.0,
    step_critical=False,
) -> StepOutcome:
    pts = points(statuses, critical)
    return StepOutcome(
        position=position,
        name=f"Step {position}",
        weight=weight,
        is_critical=step_critical,
        score=step_score(weight=weight, pass_ratio=pass_ratio, points=pts),
        points=pts,
    )


# --- One step ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "pass_ratio", "statuses", "critical", "expected"),
    [
        # score = weight x passed / applicable; not_applicable points leave the count
        (10, 1.0, "PPPP", "", StepScore(10.0, 10.0, True, True, 4, 4)),
        (10, 1.0, "PPFF", "", StepScore(5.0, 10.0, False, True, 2, 4)),
        (15, 0.5, "PF--", "", StepScore(7.5, 15.0, True, True, 1, 2)),
        (10, 0.5, "P-F-U", "", StepScore(3.3333, 10.0, False, True, 1, 3)),
        (20, 0.0, "FFF", "", StepScore(0.0, 20.0, True, True, 0, 3)),
        (12, 1.0, "-P", "", StepScore(12.0, 12.0, True, True, 1, 1)),
        # uncertain counts as applicable and not passed
        (10, 0.5, "PU", "", StepScore(5.0, 10.0, True, True, 1, 2)),
        # pass_ratio boundary: exactly equal passes, just under fails
        (10, 0.75, "PPPF", "", StepScore(7.5, 10.0, True, True, 3, 4)),
        (10, 0.76, "PPPF", "", StepScore(7.5, 10.0, False, True, 3, 4)),
        (10, 0.5, "PF", "", StepScore(5.0, 10.0, True, True, 1, 2)),
        (10, 2 / 3, "PPF", "", StepScore(6.6667, 10.0, True, True, 2, 3)),
        (10, 0.67, "PPF", "", StepScore(6.6667, 10.0, False, True, 2, 3)),
        # a critical point failed or uncertain: not conforme although the ratio passes
        (10, 0.5, "PPPF", "...c", StepScore(7.5, 10.0, False, True, 3, 4)),
        (10, 0.5, "PPPU", "...c", StepScore(7.5, 10.0, False, True, 3, 4)),
        (10, 0.0, "UP", "c.", StepScore(5.0, 10.0, False, True, 1, 2)),
        # a critical point that passed or does not apply changes nothing
        (10, 0.5, "PPF-", "c..c", StepScore(6.6667, 10.0, True, True, 2, 3)),
        # nothing applicable: excluded (no score, no maximum)
        (10, 1.0, "---", "c..", StepScore(0.0, 0.0, True, False, 0, 0)),
        (10, 1.0, "", "", StepScore(0.0, 0.0, True, False, 0, 0)),
    ],
)
def test_step_score(weight, pass_ratio, statuses, critical, expected):
    assert step_score(weight=weight, pass_ratio=pass_ratio, points=points(statuses, critical)) == expected


# --- Niveau against the thresholds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percentage", "thresholds", "expected"),
    [
        (100, DEFAULT_THRESHOLDS, EXCELLENT),
        (90, DEFAULT_THRESHOLDS, EXCELLENT),
        (89.99, DEFAULT_THRESHOLDS, BON),
        (75, DEFAULT_THRESHOLDS, BON),
        (74.99, DEFAULT_THRESHOLDS, ACCEPTABLE),
        (60, DEFAULT_THRESHOLDS, ACCEPTABLE),
        (59.99, DEFAULT_THRESHOLDS, INSUFFISANT),
        (0, DEFAULT_THRESHOLDS, INSUFFISANT),
        (95.5, CUSTOM_THRESHOLDS, EXCELLENT),
        (95.49, CUSTOM_THRESHOLDS, BON),
        (90, CUSTOM_THRESHOLDS, BON),
        (80, CUSTOM_THRESHOLDS, BON),
        (79.99, CUSTOM_THRESHOLDS, ACCEPTABLE),
        (60, CUSTOM_THRESHOLDS, ACCEPTABLE),
        (50, CUSTOM_THRESHOLDS, ACCEPTABLE),
        (49.99, CUSTOM_THRESHOLDS, INSUFFISANT),
    ],
)
def test_niveau_for_the_thresholds_boundaries(percentage, thresholds, expected):
    assert niveau_for(percentage, thresholds) == expected


# --- The audit's summary ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "thresholds", "expected"),
    [
        # (overall_score, max_score, score_percentage, niveau, is_compliant, needs_review)
        pytest.param(
            [outcome(1, "PP", weight=60), outcome(2, "PPP", weight=40)],
            DEFAULT_THRESHOLDS,
            (100.0, 100.0, 100.0, EXCELLENT, True, False),
            id="all-passed",
        ),
        pytest.param(
            [outcome(1, "P", weight=90), outcome(2, "PF", weight=20, pass_ratio=0.5)],
            DEFAULT_THRESHOLDS,
            (100.0, 110.0, 90.91, EXCELLENT, True, False),
            id="excellent",
        ),
        pytest.param(
            [outcome(1, "P", weight=90), outcome(2, "F", weight=10, pass_ratio=0.0)],
            DEFAULT_THRESHOLDS,
            (90.0, 100.0, 90.0, EXCELLENT, True, False),
            id="exactly-90",
        ),
        pytest.param(
            [outcome(1, "P", weight=8999), outcome(2, "F", weight=1001, pass_ratio=0.0)],
            DEFAULT_THRESHOLDS,
            (8999.0, 10000.0, 89.99, BON, True, False),
            id="89.99-is-bon",
        ),
        pytest.param(
            [outcome(1, "P", weight=17999), outcome(2, "F", weight=2001, pass_ratio=0.0)],
            DEFAULT_THRESHOLDS,
            (17999.0, 20000.0, 90.0, BON, True, False),
            id="89.995-shows-90-but-is-bon",
        ),
        pytest.param(
            [outcome(1, "P", weight=75), outcome(2, "F", weight=25, pass_ratio=0.0)],
            DEFAULT_THRESHOLDS,
            (75.0, 100.0, 75.0, BON, True, False),
            id="exactly-75",
        ),
        pytest.param(
            [outcome(1, "P", weight=60), outcome(2, "FF", weight=40, pass_ratio=0.0)],
            DEFAULT_THRESHOLDS,
            (60.0, 100.0, 60.0, ACCEPTABLE, True, False),
            id="exactly-60",
        ),
        pytest.param(
            [outcome(1, "P", weight=5999), outcome(2, "F", weight=4001, pass_ratio=0.0)],
            DEFAULT_THRESHOLDS,
            (5999.0, 10000.0, 59.99, INSUFFISANT, False, False),
            id="59.99-is-insuffisant",
        ),
        pytest.param(
            [outcome(1, "P", weight=80), outcome(2, "F", weight=20, pass_ratio=0.0)],
            CUSTOM_THRESHOLDS,
            (80.0, 100.0, 80.0, BON, True, False),
            id="custom-bon",
        ),
        pytest.param(
            [outcome(1, "P", weight=50), outcome(2, "F", weight=50, pass_ratio=0.0)],
            CUSTOM_THRESHOLDS,
            (50.0, 100.0, 50.0, ACCEPTABLE, True, False),
            id="custom-acceptable",
        ),
        pytest.param(
            [outcome(1, "P", weight=90), outcome(2, "F", weight=10, pass_ratio=0.0)],
            CUSTOM_THRESHOLDS,
            (90.0, 100.0, 90.0, BON, True, False),
            id="custom-90-is-not-excellent",
        ),
        pytest.param(
            # a step with no applicable point counts in neither the overall nor the maximum
            [outcome(1, "PF", weight=30, pass_ratio=0.5), outcome(2, "--", "cc", weight=70, step_critical=True)],
            DEFAULT_THRESHOLDS,
            (15.0, 30.0, 50.0, INSUFFISANT, False, False),
            id="excluded-step",
        ),
        pytest.param(
            # an uncertain non-critical point: needs review, nothing else
            [outcome(1, "PPPU", weight=100, pass_ratio=0.75)],
            DEFAULT_THRESHOLDS,
            (75.0, 100.0, 75.0, BON, True, True),
            id="uncertain-needs-review",
        ),
        pytest.param(
            # a critical point failed: REJET whatever the percentage
            [outcome(1, "PPPP", weight=90), outcome(2, "PF", ".c", weight=10, pass_ratio=0.5)],
            DEFAULT_THRESHOLDS,
            (95.0, 100.0, 95.0, REJET, False, False),
            id="critical-point-failed",
        ),
        pytest.param(
            # a critical point uncertain: REJET and review
            [outcome(1, "PPPP", weight=90), outcome(2, "PU", ".c", weight=10, pass_ratio=0.0)],
            DEFAULT_THRESHOLDS,
            (95.0, 100.0, 95.0, REJET, False, True),
            id="critical-point-uncertain",
        ),
        pytest.param(
            # a critical step not conforme (its ratio), no critical point missed: REJET
            [outcome(1, "PPPP", weight=90), outcome(2, "PPF", weight=10, step_critical=True)],
            DEFAULT_THRESHOLDS,
            (96.6667, 100.0, 96.67, REJET, False, False),
            id="critical-step-not-conforme",
        ),
        pytest.param(
            # a non-critical step not conforme does not reject
            [outcome(1, "PPPP", weight=90), outcome(2, "PPF", weight=10)],
            DEFAULT_THRESHOLDS,
            (96.6667, 100.0, 96.67, EXCELLENT, True, False),
            id="non-critical-step-not-conforme",
        ),
        pytest.param(
            # a critical step conforme at its pass ratio, and a critical point not applicable
            [outcome(1, "PPPF-", "....c", weight=100, pass_ratio=0.75, step_critical=True)],
            DEFAULT_THRESHOLDS,
            (75.0, 100.0, 75.0, BON, True, False),
            id="critical-step-conforme-at-ratio",
        ),
        pytest.param(
            # a critical step with nothing applicable is excluded, not a rejection
            [outcome(1, "P", weight=10), outcome(2, "-", weight=10, step_critical=True)],
            DEFAULT_THRESHOLDS,
            (10.0, 10.0, 100.0, EXCELLENT, True, False),
            id="critical-step-excluded",
        ),
        pytest.param(
            # nothing applicable anywhere: 0 %, INSUFFISANT (current behaviour)
            [outcome(1, "--", weight=10), outcome(2, "-", weight=10)],
            DEFAULT_THRESHOLDS,
            (0.0, 0.0, 0.0, INSUFFISANT, False, False),
            id="nothing-applicable",
        ),
        pytest.param([], DEFAULT_THRESHOLDS, (0.0, 0.0, 0.0, INSUFFISANT, False, False), id="no-steps"),
    ],
)
def test_audit_summary(steps, thresholds, expected):
    summary = audit_summary(steps, thresholds)
    assert (
        summary.overall_score,
        summary.max_score,
        summary.score_percentage,
        summary.niveau,
        summary.is_compliant,
        summary.needs_review,
    ) == expected


@pytest.mark.parametrize(
    ("steps", "niveau", "compliant"),
    [
        ([outcome(1, "P", weight=100)], EXCELLENT, True),
        ([outcome(1, "PPPF", weight=100, pass_ratio=0)], BON, True),
        ([outcome(1, "PPPFF", weight=100, pass_ratio=0)], ACCEPTABLE, True),
        ([outcome(1, "PF", weight=100, pass_ratio=0)], INSUFFISANT, False),
        ([outcome(1, "PF", "c.", weight=100, pass_ratio=0)], INSUFFISANT, False),  # the critical point passed
        ([outcome(1, "PF", ".c", weight=100, pass_ratio=0)], REJET, False),
        ([outcome(1, "PPPPPPPPPF", ".........c", weight=100, pass_ratio=0)], REJET, False),  # 90 % yet REJET
    ],
)
def test_is_compliant_only_for_excellent_bon_or_acceptable(steps, niveau, compliant):
    summary = audit_summary(steps, DEFAULT_THRESHOLDS)
    assert (summary.niveau, summary.is_compliant) == (niveau, compliant)


def test_critical_issues_list_exactly_the_critical_points_not_passed():
    steps = [
        outcome(1, "PFU-", "cccc", weight=20, step_critical=True),  # 1 and 2 are issues; 0 passed, 3 n/a
        outcome(2, "FU", "..", weight=10),  # not critical: no issue (but uncertain: review)
        outcome(3, "-", "c", weight=10),  # critical but not applicable: no issue
        outcome(4, "PPF", "..c", weight=30, pass_ratio=0.5),
    ]
    summary = audit_summary(steps, DEFAULT_THRESHOLDS)
    assert summary.critical_issues == [
        {"step_position": 1, "step_name": "Step 1", "control_point_index": 1, "question": "Q1?", "status": FAIL},
        {"step_position": 1, "step_name": "Step 1", "control_point_index": 2, "question": "Q2?", "status": UNCERTAIN},
        {"step_position": 4, "step_name": "Step 4", "control_point_index": 2, "question": "Q2?", "status": FAIL},
    ]
    assert (summary.niveau, summary.is_compliant, summary.needs_review) == (REJET, False, True)
    # overall: 20*1/3 + 0 + 30*2/3 over 60 (step 3 excluded)
    assert (summary.overall_score, summary.max_score, summary.score_percentage) == (26.6667, 60.0, 44.44)


def test_a_clean_audit_has_no_critical_issues_and_no_review():
    summary = audit_summary([outcome(1, "PP-", "cc.", weight=10), outcome(2, "PF", weight=10)], DEFAULT_THRESHOLDS)
    assert summary.critical_issues == []
    assert summary.needs_review is False
    assert (summary.score_percentage, summary.niveau) == (75.0, BON)
