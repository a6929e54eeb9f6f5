"""`PromptOptimizer`: one object for the three ways to optimize (DSPy GEPA, MLflow GEPA, SME feedback)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dspy

from optimization.dspy_gepa_optimizer import DSPyGepaOptimizer
from optimization.human_feedback import HumanFeedbackOptimizer
from optimization.mlflow_gepa_optimizer import GepaOptimizer
from optimization.results import DSPyOptimizationResult, PromptOptimizationOutcome
from optimization.template_agent import PredictFn


class PromptOptimizer:
    """Unified API; `reflection_model` and `max_metric_calls` apply to the MLflow-based methods."""

    def __init__(
        self,
        reflection_model: str = "databricks-claude-sonnet-4",
        max_metric_calls: int = 100,
        auto: str = "light",
    ) -> None:
        self.reflection_model = reflection_model
        self.max_metric_calls = max_metric_calls
        self.auto = auto

    def optimize_with_dspy_gepa(
        self,
        program: dspy.Module,
        trainset: list[dspy.Example],
        metric: Callable[..., Any] | None = None,
        valset: list[dspy.Example] | None = None,
        **options: Any,
    ) -> DSPyOptimizationResult:
        """DSPy GEPA on a DSPy program (see `DSPyGepaOptimizer`)."""
        return DSPyGepaOptimizer(auto=options.pop("auto", self.auto), **options).optimize(
            program, trainset, valset, metric
        )

    def optimize_with_gepa(
        self,
        predict_fn: PredictFn,
        train_data: list[dict[str, Any]],
        prompt_uris: list[str],
        scorers: list[Any] | None = None,
        **options: Any,
    ) -> PromptOptimizationOutcome:
        """MLflow GEPA on any predict_fn (see `GepaOptimizer`)."""
        return GepaOptimizer(**self._mlflow_settings(options)).optimize(
            predict_fn, train_data, prompt_uris, scorers
        )

    def optimize_from_feedback(
        self,
        predict_fn: PredictFn,
        feedback: list[dict[str, Any]],
        prompt_uris: list[str],
        use_ratings_as_metric: bool = True,
        **options: Any,
    ) -> PromptOptimizationOutcome:
        """MLflow GEPA from SME ratings/corrections (see `HumanFeedbackOptimizer`)."""
        optimizer = HumanFeedbackOptimizer(**self._mlflow_settings(options))
        return optimizer.optimize_from_feedback(predict_fn, feedback, prompt_uris, use_ratings_as_metric)

    def _mlflow_settings(self, options: dict[str, Any]) -> dict[str, Any]:
        """This object's reflection model and budget, overridden by per-call `options`."""
        reflection = (
            {}
            if {"reflection_model", "reflection_lm"} & set(options)
            else {"reflection_model": self.reflection_model}
        )
        return {**reflection, "max_metric_calls": self.max_metric_calls, **options}
