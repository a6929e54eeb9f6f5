"""SME feedback -> MLflow GEPA: corrections become expectations, ratings drive the SME-rating metric.

A feedback item: `{"inputs": {...}, "sme_rating": "excellent"|"good"|"fair"|"poor"|"up"|"down"|number,
optional "scale" ("five_point"/"unit"), "outputs" (the rated answer), "correction", "comment"}`.
An item without `outputs` rates what the current prompt answers, so that answer is produced by
calling `predict_fn` once. A correction also counts as an 'excellent'-rated answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optimization.data import canonical_key, split_holdout, validate_records
from optimization.mlflow_gepa_optimizer import GepaOptimizer
from optimization.results import PromptOptimizationOutcome
from optimization.sme_metric import SMERatingMetric, rated_examples
from optimization.template_agent import PredictFn


def feedback_records(feedback: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One `{"inputs", "expectations"}` record per distinct input (the correction, when given, is the expectation)."""
    records: dict[str, dict[str, Any]] = {}
    for item in validate_records(feedback, "feedback"):
        record = records.setdefault(
            canonical_key(item["inputs"]), {"inputs": item["inputs"], "expectations": {}}
        )
        if item.get("correction"):
            record["expectations"]["expected_response"] = item["correction"]
    return list(records.values())


class HumanFeedbackOptimizer(GepaOptimizer):
    """Optimize prompts from SME ratings and corrections — no judge model required with ratings.

    Takes GepaOptimizer's settings; `optimize_from_feedback` is its entry point.
    """

    def optimize_from_feedback(
        self,
        predict_fn: PredictFn,
        feedback: list[dict[str, Any]],
        prompt_uris: list[str],
        use_ratings_as_metric: bool = True,
    ) -> PromptOptimizationOutcome:
        """Run MLflow GEPA on the rated inputs: the SME-rating metric if `use_ratings_as_metric`,
        else correctness against the corrections (items without a correction are then left out)."""
        records = feedback_records(feedback)
        if use_ratings_as_metric:
            scorers: list[Any] = [SMERatingMetric(rated_examples(feedback, predict_fn)).as_scorer()]
        else:
            records = [r for r in records if r["expectations"]]
            if not records:
                raise ValueError(
                    "feedback: no item has a 'correction' (needed when use_ratings_as_metric=False)"
                )
            scorers = ["correctness"]
        train, held_out = split_holdout(records, argument="feedback")
        return self._run(predict_fn, train, held_out, prompt_uris, scorers)
