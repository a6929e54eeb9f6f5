"""The promotion gate (docs/architecture.md, step 9): a prompt's promotion policy applied
to the paired comparison of baseline and candidate on the held-out examples."""

from __future__ import annotations

from collections.abc import Sequence

from optimization.comparison import Comparison, compare_paired
from schemas.config import PromotionPolicy


def decide(
    baseline: Sequence[float], candidate: Sequence[float], policy: PromotionPolicy, seed: int = 0
) -> Comparison:
    """promoted / rejected / inconclusive with the statistics behind it (deterministic per seed)."""
    return compare_paired(
        baseline,
        candidate,
        min_improvement=policy.min_improvement,
        confidence=policy.confidence,
        min_eval_examples=policy.min_eval_examples,
        seed=seed,
    )
