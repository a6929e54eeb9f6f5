"""Paired comparison of two prompt versions on the same examples (the A/B test and the
daemon's promotion gate).

Pass only when the mean relative improvement reaches `min_improvement` and the
paired-bootstrap confidence interval of the mean difference lies above 0, with at least
`min_eval_examples`. Too few examples, or an interval that straddles 0, is
`inconclusive`; anything else is `rejected`. Deterministic for a given seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from optimization.results import relative_improvement

Verdict = Literal["promoted", "rejected", "inconclusive"]
N_RESAMPLES = 2000


@dataclass(frozen=True, slots=True)
class Comparison:
    decision: Verdict
    n_eval: int
    baseline_score: float
    candidate_score: float
    mean_difference: float
    improvement: float
    ci_low: float
    ci_high: float
    confidence: float
    reason: str


def paired_ci(differences: np.ndarray, confidence: float, seed: int) -> tuple[float, float]:
    """Bootstrap CI (BCa, percentile if BCa degenerates) of the mean paired difference."""
    if len(differences) < 2 or np.all(differences == differences[0]):
        value = float(differences[0]) if len(differences) else 0.0
        return value, value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in ("BCa", "percentile"):
            result = stats.bootstrap(
                (differences,),
                np.mean,
                confidence_level=confidence,
                n_resamples=N_RESAMPLES,
                method=method,
                rng=np.random.default_rng(seed),
            )
            low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
            if np.isfinite(low) and np.isfinite(high):
                return low, high
    raise ArithmeticError("bootstrap produced no finite interval")


def compare_paired(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    min_improvement: float = 0.05,
    confidence: float = 0.95,
    min_eval_examples: int = 20,
    seed: int = 0,
) -> Comparison:
    """Compare per-example scores of the same examples (paired by position)."""
    if len(baseline) != len(candidate):
        raise ValueError(
            f"paired scores differ in length: {len(baseline)} baseline vs {len(candidate)} candidate"
        )
    b = np.asarray(baseline, dtype=float)
    c = np.asarray(candidate, dtype=float)
    n = len(b)
    base_mean = float(b.mean()) if n else 0.0
    cand_mean = float(c.mean()) if n else 0.0
    diff = c - b
    mean_diff = float(diff.mean()) if n else 0.0
    improvement = relative_improvement(base_mean, cand_mean)
    low, high = paired_ci(diff, confidence, seed) if n else (0.0, 0.0)
    pct = f"{confidence:.0%}"
    summary = f"mean {base_mean:.3f} -> {cand_mean:.3f} ({improvement:+.1%}), {pct} CI of the difference [{low:+.3f}, {high:+.3f}], n={n}"
    if n < min_eval_examples:
        verdict: Verdict = "inconclusive"
        reason = f"only {n} held-out examples (min_eval_examples {min_eval_examples}); {summary}"
    elif low <= 0.0 <= high:
        verdict, reason = "inconclusive", f"the interval includes 0; {summary}"
    elif low > 0.0 and improvement >= min_improvement:
        verdict, reason = "promoted", f"better beyond doubt; {summary}"
    elif low > 0.0:
        verdict = "rejected"
        reason = f"better, but by less than min_improvement {min_improvement:.1%}; {summary}"
    else:
        verdict, reason = "rejected", f"worse beyond doubt; {summary}"
    return Comparison(verdict, n, base_mean, cand_mean, mean_diff, improvement, low, high, confidence, reason)
