"""The gate's limits (optimization/comparison.py, handlers/promotion.py `gate`): a candidate whose
template is longer than `max_template_tokens`, or whose cost per call grew by more than
`max_cost_increase`, is rejected with the figures in the reason; within them the decision is the
mean's; limits never promote."""

from __future__ import annotations

import pytest

from handlers.promotion import gate, promotion_event
from optimization.comparison import compare_paired, cost_per_call, limit_breaches
from schemas.config import PromotionPolicy
from schemas.events import VersionCost

BASELINE = [float(i < 60) for i in range(100)]
BETTER = [1.0] * 100  # +40 points: promoted on the mean
SAME = list(BASELINE)  # inconclusive on the mean

SHORT = VersionCost(
    template_tokens=40, calls=100, tokens_per_call=120.0, cost_per_call_usd=0.0, cost_unknown=True
)
LONG = VersionCost(
    template_tokens=4000, calls=100, tokens_per_call=4080.0, cost_per_call_usd=0.0, cost_unknown=True
)
PRICED_A = VersionCost(template_tokens=40, calls=100, tokens_per_call=120.0, cost_per_call_usd=0.0001)
PRICED_B = VersionCost(template_tokens=60, calls=100, tokens_per_call=150.0, cost_per_call_usd=0.00018)


def test_a_template_beyond_max_template_tokens_turns_a_promotion_into_a_rejection() -> None:
    within = compare_paired(
        BASELINE, BETTER, baseline_cost=SHORT, candidate_cost=LONG, max_template_tokens=5000
    )
    assert within.decision == "promoted"
    beyond = compare_paired(
        BASELINE, BETTER, baseline_cost=SHORT, candidate_cost=LONG, max_template_tokens=500
    )
    assert beyond.decision == "rejected"
    assert beyond.reason.startswith(
        "better beyond doubt but beyond the limit(s): template 4000 tokens > max_template_tokens 500 (baseline 40); mean 0.600 -> 1.000"
    )
    assert (beyond.baseline_cost, beyond.candidate_cost) == (SHORT, LONG)


def test_cost_increase_in_tokens_per_call_when_no_price_is_known() -> None:
    judged = compare_paired(BASELINE, BETTER, baseline_cost=SHORT, candidate_cost=LONG, max_cost_increase=0.5)
    assert judged.decision == "rejected"
    assert (
        "cost per call +3300.0% > max_cost_increase +50.0% (tokens per call 120.0 -> 4080.0, no price known)"
        in judged.reason
    )


def test_cost_increase_in_usd_per_call_when_priced() -> None:
    assert cost_per_call(PRICED_A, PRICED_B) == (0.0001, 0.00018, "USD")
    rejected = compare_paired(
        BASELINE, BETTER, baseline_cost=PRICED_A, candidate_cost=PRICED_B, max_cost_increase=0.5
    )
    assert rejected.decision == "rejected"
    assert (
        "cost per call +80.0% > max_cost_increase +50.0% (USD per call 0.0001 -> 0.00018)" in rejected.reason
    )
    # +25 % in tokens, +80 % in USD: USD decides when priced
    assert (
        compare_paired(
            BASELINE, BETTER, baseline_cost=PRICED_A, candidate_cost=PRICED_B, max_cost_increase=0.9
        ).decision
        == "promoted"
    )


def test_both_limits_are_named() -> None:
    judged = compare_paired(
        BASELINE,
        BETTER,
        baseline_cost=SHORT,
        candidate_cost=LONG,
        max_template_tokens=500,
        max_cost_increase=1.0,
    )
    assert judged.decision == "rejected"
    assert "max_template_tokens 500" in judged.reason and "max_cost_increase +100.0%" in judged.reason


def test_limits_never_promote_and_are_appended_to_other_verdicts() -> None:
    judged = compare_paired(BASELINE, SAME, baseline_cost=SHORT, candidate_cost=LONG, max_template_tokens=500)
    assert judged.decision == "inconclusive"
    assert judged.reason.endswith(
        "; also beyond the limit(s): template 4000 tokens > max_template_tokens 500 (baseline 40)"
    )
    small = compare_paired(
        BASELINE,
        BETTER,
        baseline_cost=LONG,
        candidate_cost=SHORT,
        max_template_tokens=500,
        max_cost_increase=0.0,
    )
    assert small.decision == "promoted"


def test_no_measurement_no_limit() -> None:
    assert limit_breaches(None, None, max_template_tokens=1, max_cost_increase=0.0) == []
    unmeasured = VersionCost(template_tokens=10)
    assert cost_per_call(unmeasured, unmeasured) is None
    assert limit_breaches(unmeasured, VersionCost(template_tokens=10), max_cost_increase=0.0) == []
    assert compare_paired(BASELINE, BETTER, max_template_tokens=1).decision == "promoted"


def test_gate_takes_the_limits_from_the_policy_and_the_event_carries_the_figures() -> None:
    policy = PromotionPolicy(max_template_tokens=500, max_cost_increase=0.5)
    judged = gate(BASELINE, BETTER, policy, baseline_cost=SHORT, candidate_cost=LONG)
    assert judged.decision == "rejected" and "max_template_tokens 500" in judged.reason
    event = promotion_event(
        "p", judged.decision, judged.reason, source="test", baseline_cost=SHORT, candidate_cost=LONG
    )
    assert event.data.candidate_cost is not None and event.data.candidate_cost.template_tokens == 4000
    assert (
        gate(BASELINE, BETTER, PromotionPolicy(), baseline_cost=SHORT, candidate_cost=LONG).decision
        == "promoted"
    )


def test_policy_validation() -> None:
    assert PromotionPolicy().max_template_tokens is None and PromotionPolicy().max_cost_increase is None
    with pytest.raises(ValueError):
        PromotionPolicy(max_template_tokens=0)
    with pytest.raises(ValueError):
        PromotionPolicy(max_cost_increase=-0.1)
