"""Paired comparison of two prompt versions on the same examples (the A/B test and the
daemon's promotion gate).

Pass only when the mean relative improvement reaches `min_improvement` and the
paired-bootstrap confidence interval of the mean difference lies above 0, with at least
`min_eval_examples`. Too few examples, or an interval that straddles 0, is
`inconclusive`; anything else is `rejected`. Deterministic for a given seed.

With segments (a label per example: a language, a customer tier), a passing candidate is also
`rejected` when any segment with >= `min_examples` examples is worse beyond doubt: the
one-sided upper bound of its mean paired difference (Student t) is below 0 at the gate's
confidence, Bonferroni-corrected for the segments tested. Why Bonferroni: the gate rejects as
soon as *one* segment is harmed, and for the first rejection Holm's step-down test is exactly
Bonferroni, so Holm would only name more segments, never change a decision; Bonferroni keeps
each named segment's reported bound consistent with the decision. Why t rather than the
bootstrap: segments are small (10+ examples) and their corrected quantiles extreme (0.25 % for
20 segments at 95 %), where bootstrap percentiles are unstable.

With limits (each version's `VersionCost`: template tokens, tokens and USD per call), a passing
candidate is also `rejected` when its template is longer than `max_template_tokens` or its cost
per call exceeds the baseline's by more than `max_cost_increase` (relative): USD per call when
both are known and the baseline's is > 0, else tokens per call (offline or unpriced models). The
reason names each limit and its figures; a candidate rejected or inconclusive anyway gets them
appended. Like segments, limits only ever turn a promotion into a rejection.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from optimization.results import relative_improvement
from schemas.events import VersionCost

Verdict = Literal["promoted", "rejected", "inconclusive"]
N_RESAMPLES = 2000


@dataclass(frozen=True, slots=True)
class SegmentResult:
    """One segment's paired comparison: its one-sided upper bound is corrected for the number of
    segments tested; `harmed` when it is below 0."""

    segment: str
    n: int
    baseline_score: float
    candidate_score: float
    mean_difference: float
    upper: float
    harmed: bool


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
    segments: tuple[SegmentResult, ...] = ()
    baseline_cost: VersionCost | None = None
    candidate_cost: VersionCost | None = None


def cost_per_call(baseline: VersionCost, candidate: VersionCost) -> tuple[float, float, str] | None:
    """(baseline, candidate, unit) of the cost per call the `max_cost_increase` limit compares: USD
    when both versions' are known and the baseline's is > 0, else tokens; None when neither
    was measured."""
    b_usd, c_usd = baseline.cost_per_call_usd, candidate.cost_per_call_usd
    if (
        b_usd is not None
        and c_usd is not None
        and b_usd > 0
        and not (baseline.cost_unknown or candidate.cost_unknown)
    ):
        return b_usd, c_usd, "USD"
    b_tokens, c_tokens = baseline.tokens_per_call, candidate.tokens_per_call
    if b_tokens is not None and c_tokens is not None and b_tokens > 0:
        return b_tokens, c_tokens, "tokens"
    return None


def limit_breaches(
    baseline: VersionCost | None,
    candidate: VersionCost | None,
    *,
    max_template_tokens: int | None = None,
    max_cost_increase: float | None = None,
) -> list[str]:
    """Each limit the candidate is beyond, with its figures (empty: within every limit, or not measured)."""
    if candidate is None:
        return []
    breaches = []
    if max_template_tokens is not None and candidate.template_tokens > max_template_tokens:
        was = f" (baseline {baseline.template_tokens})" if baseline is not None else ""
        breaches.append(
            f"template {candidate.template_tokens} tokens > max_template_tokens {max_template_tokens}{was}"
        )
    measured = cost_per_call(baseline, candidate) if baseline is not None else None
    if max_cost_increase is not None and measured is not None:
        before, after, unit = measured
        increase = after / before - 1.0
        if increase > max_cost_increase:
            figures = (
                f"USD per call {before:.6g} -> {after:.6g}"
                if unit == "USD"
                else f"tokens per call {before:.1f} -> {after:.1f}, no price known"
            )
            breaches.append(
                f"cost per call {increase:+.1%} > max_cost_increase {max_cost_increase:+.1%} ({figures})"
            )
    return breaches


def segment_harm(
    baseline: np.ndarray,
    candidate: np.ndarray,
    segments: Sequence[str | None],
    *,
    confidence: float,
    min_examples: int,
    max_segments: int,
) -> tuple[SegmentResult, ...]:
    """Each tested segment's comparison (module docstring): the `max_segments` largest segments
    with >= `min_examples` examples (ties by name); examples without a segment are not tested."""
    sizes: dict[str, int] = {}
    for segment in segments:
        if segment is not None:
            sizes[segment] = sizes.get(segment, 0) + 1
    tested = sorted((name for name, n in sizes.items() if n >= min_examples), key=lambda k: (-sizes[k], k))
    tested = tested[:max_segments]
    labels = np.array([s if s is not None else "" for s in segments], dtype=object)
    alpha = (1.0 - confidence) / max(len(tested), 1)
    results = []
    for name in tested:
        mask = labels == name
        diff = candidate[mask] - baseline[mask]
        n, mean = int(mask.sum()), float(diff.mean())
        spread = float(diff.std(ddof=1))
        upper = mean + float(stats.t.ppf(1.0 - alpha, n - 1)) * spread / np.sqrt(n) if spread > 0 else mean
        results.append(
            SegmentResult(
                name, n, float(baseline[mask].mean()), float(candidate[mask].mean()), mean, upper, upper < 0.0
            )
        )
    return tuple(results)


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
    segments: Sequence[str | None] | None = None,
    segment_min_examples: int = 10,
    max_segments: int = 20,
    baseline_cost: VersionCost | None = None,
    candidate_cost: VersionCost | None = None,
    max_template_tokens: int | None = None,
    max_cost_increase: float | None = None,
) -> Comparison:
    """Compare per-example scores of the same examples (paired by position); with `segments`
    (one label or None per example), no segment may be worse beyond doubt; with the versions'
    costs, the candidate must stay within `max_template_tokens` and `max_cost_increase`."""
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
    by_segment: tuple[SegmentResult, ...] = ()
    if segments is not None:
        if len(segments) != n:
            raise ValueError(f"{len(segments)} segment labels for {n} paired scores")
        by_segment = segment_harm(
            b,
            c,
            segments,
            confidence=confidence,
            min_examples=segment_min_examples,
            max_segments=max_segments,
        )
        harmed = [r for r in by_segment if r.harmed]
        if verdict == "promoted" and harmed:
            verdict = "rejected"
            named = "; ".join(
                f"{r.segment} {r.baseline_score:.3f} -> {r.candidate_score:.3f} (n={r.n}, upper bound {r.upper:+.3f})"
                for r in harmed
            )
            reason = f"better on average but worse beyond doubt on segment(s) {named}; {summary}"
    breaches = limit_breaches(
        baseline_cost,
        candidate_cost,
        max_template_tokens=max_template_tokens,
        max_cost_increase=max_cost_increase,
    )
    if breaches and verdict == "promoted":
        verdict = "rejected"
        reason = f"better beyond doubt but beyond the limit(s): {'; '.join(breaches)}; {summary}"
    elif breaches:
        reason = f"{reason}; also beyond the limit(s): {'; '.join(breaches)}"
    return Comparison(
        verdict,
        n,
        base_mean,
        cand_mean,
        mean_diff,
        improvement,
        low,
        high,
        confidence,
        reason,
        by_segment,
        baseline_cost,
        candidate_cost,
    )
