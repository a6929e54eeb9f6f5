"""Result objects returned by the optimizers: scores on held-out data and the candidates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from optimization.model_calls import UsageTally


def relative_improvement(initial: float, final: float) -> float:
    """(final - initial) / initial; when initial is 0, the absolute gain (so a gain is never reported as 0)."""
    return (final - initial) / initial if initial > 0 else final - initial


def mean(values: list[float]) -> float:
    """Arithmetic mean; 0.0 for an empty list."""
    return sum(values) / len(values) if values else 0.0


@dataclass
class Candidate:
    """One GEPA candidate: its text per component and its mean held-out (valset) score."""

    texts: dict[str, str]
    val_score: float


@dataclass
class HeldOutScores:
    """Baseline and optimized per-example scores on the same held-out examples, paired by position."""

    baseline_scores: list[float]
    candidate_scores: list[float]
    metric_calls: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    usage: dict[str, UsageTally] = field(default_factory=dict)
    stopped_by: str | None = None
    """The budget that stopped GEPA early (`max_cost_usd`), if one did."""

    @property
    def cost_usd(self) -> float:
        """Estimated USD of the run's model calls, every role (see `usage` per role)."""
        return sum(u.cost_usd for u in self.usage.values())

    @property
    def initial_score(self) -> float:
        """Mean held-out score of the starting prompt/program."""
        return mean(self.baseline_scores)

    @property
    def final_score(self) -> float:
        """Mean held-out score of the optimized prompt/program."""
        return mean(self.candidate_scores)

    @property
    def optimized_score(self) -> float:
        """Alias of `final_score` (the guide uses both names)."""
        return self.final_score

    @property
    def improvement(self) -> float:
        """Relative improvement of `final_score` over `initial_score` (see `relative_improvement`)."""
        return relative_improvement(self.initial_score, self.final_score)


@dataclass
class DSPyOptimizationResult(HeldOutScores):
    """Outcome of `DSPyGepaOptimizer.optimize`: the optimized program and its instructions."""

    optimized_program: Any = None
    instructions: dict[str, str] = field(default_factory=dict)


@dataclass
class PromptOptimizationOutcome(HeldOutScores):
    """Outcome of an MLflow-backend run: optimized templates by prompt name, registered versions if any."""

    templates: dict[str, str] = field(default_factory=dict)
    optimized_prompts: list[Any] = field(default_factory=list)
