"""The promotion gate (handlers/promotion.py `gate`): decisions, and its error rates over simulated comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from handlers.promotion import gate
from schemas.config import PromotionPolicy

POLICY = PromotionPolicy()  # min_improvement 0.05, confidence 0.95, min_eval_examples 20


def simulate(rng: np.random.Generator, n: int, fix: float, brk: float) -> tuple[np.ndarray, np.ndarray]:
    """Binary per-example scores: the candidate fixes a baseline failure with probability
    `fix` and breaks a success with probability `brk` (how a prompt edit acts on examples)."""
    baseline = (rng.random(n) < 0.5).astype(float)
    flips = rng.random(n)
    candidate = np.where(baseline == 0, (flips < fix).astype(float), (flips >= brk).astype(float))
    return baseline, candidate


def test_clear_improvement_is_promoted() -> None:
    result = gate([0.0] * 15 + [1.0] * 15, [1.0] * 28 + [0.0] * 2, POLICY)
    assert result.decision == "promoted"
    assert result.ci_low > 0 and result.improvement > 0.05
    assert result.n_eval == 30


def test_identical_scores_are_inconclusive() -> None:
    result = gate([0.5] * 40, [0.5] * 40, POLICY)
    assert result.decision == "inconclusive"
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)


def test_too_few_examples_are_inconclusive_however_large_the_gain() -> None:
    result = gate([0.0] * 10, [1.0] * 10, POLICY)
    assert result.decision == "inconclusive"
    assert "min_eval_examples" in result.reason


def test_significantly_worse_is_rejected() -> None:
    assert gate([1.0] * 30, [0.0] * 25 + [1.0] * 5, POLICY).decision == "rejected"


def test_significant_but_below_min_improvement_is_rejected() -> None:
    baseline = [0.9] * 100
    candidate = [0.92] * 100  # +2.2 %, no variance: significant, too small
    result = gate(baseline, candidate, POLICY)
    assert result.decision == "rejected"
    assert "min_improvement" in result.reason


def test_the_same_inputs_and_seed_give_the_same_decision() -> None:
    rng = np.random.default_rng(3)
    b, c = simulate(rng, 50, 0.2, 0.1)
    assert gate(b, c, POLICY, seed=9) == gate(b, c, POLICY, seed=9)


def test_unpaired_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="paired"):
        gate([1.0], [1.0, 0.0], POLICY)


def test_error_rates_over_200_simulated_comparisons() -> None:
    """A/A: false promotions <= 5 %. A true +15-point gain at n = 100: promoted >= 80 %."""
    rng = np.random.default_rng(20261126)
    trials = 200
    false_promotions = sum(
        gate(*simulate(rng, 100, fix=0.1, brk=0.1), POLICY, seed=i).decision == "promoted"
        for i in range(trials)
    )
    # fix 0.35 of failures, break 0.05 of successes: +0.5*0.35 - 0.5*0.05 = +15 points
    true_promotions = sum(
        gate(*simulate(rng, 100, fix=0.35, brk=0.05), POLICY, seed=i).decision == "promoted"
        for i in range(trials)
    )
    print(
        f"\nA/A false-promotion rate: {false_promotions / trials:.1%}; +15-point power at n=100: {true_promotions / trials:.1%}"
    )
    assert false_promotions / trials <= 0.05
    assert true_promotions / trials >= 0.80
