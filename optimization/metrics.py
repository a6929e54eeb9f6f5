"""DSPy metrics: adapt 3- and 5-argument metrics for GEPA, wrap plain scoring functions and MLflow scorers."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import dspy
from mlflow.genai.scorers import Scorer

from optimization.offline.rules import format_expected
from optimization.records import normalize_answer
from optimization.scorers import as_scorer, run_scorers

GepaMetric = Callable[..., dspy.Prediction]


def _label_field(example: dspy.Example) -> str:
    labels = list(example.labels().keys())
    if not labels:
        raise ValueError("trainset: examples have no label field (call .with_inputs(...) on the inputs only)")
    return labels[0]


def _prediction_field(pred: Any, preferred: str) -> Any:
    if hasattr(pred, preferred):
        return getattr(pred, preferred)
    values = (
        {k: v for k, v in dict(pred).items() if k != "reasoning"} if isinstance(pred, dspy.Prediction) else {}
    )
    return next(iter(values.values()), pred) if len(values) == 1 else values or pred


def to_feedback(result: Any) -> dspy.Prediction:
    """A metric result (float, bool, Prediction/dict with score and feedback) as `Prediction(score, feedback)`."""
    if isinstance(result, dspy.Prediction) or isinstance(result, dict):
        score = result["score"] if isinstance(result, dict) else result.score
        feedback = (
            result.get("feedback") if isinstance(result, dict) else getattr(result, "feedback", None)
        ) or ""
        return dspy.Prediction(score=float(score), feedback=str(feedback) or f"Score: {float(score):.2f}")
    if isinstance(result, bool | int | float):
        return dspy.Prediction(score=float(result), feedback=f"Score: {float(result):.2f}")
    raise ValueError(
        f"metric: expected a float, a bool or dspy.Prediction(score=, feedback=), got {type(result).__name__}"
    )


def _accepts_gepa_arguments(metric: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(metric).parameters.values()
    except (TypeError, ValueError):
        return True
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 5


def adapt_metric(metric: Callable[..., Any]) -> GepaMetric:
    """GEPA's 5-argument feedback metric from a 3-argument `(example, pred, trace=None)` or 5-argument metric."""
    if not callable(metric):
        raise ValueError(f"metric: expected a callable, got {type(metric).__name__}")
    five = _accepts_gepa_arguments(metric)

    def gepa_metric(
        gold: dspy.Example, pred: Any, trace: Any = None, pred_name: str | None = None, pred_trace: Any = None
    ) -> dspy.Prediction:
        result = metric(gold, pred, trace, pred_name, pred_trace) if five else metric(gold, pred, trace)
        return to_feedback(result)

    gepa_metric.__name__ = getattr(metric, "__name__", "metric")
    return gepa_metric


def exact_match_metric(example: dspy.Example, pred: Any, trace: Any = None) -> dspy.Prediction:
    """Default DSPy metric: normalized exact match of the label field, with the expected answer as feedback."""
    field = _label_field(example)
    got = _prediction_field(pred, field)
    ok = normalize_answer(got) == normalize_answer(example[field])
    return dspy.Prediction(
        score=float(ok), feedback="Correct." if ok else f"Got {got!r}. {format_expected(str(example[field]))}"
    )


def create_dspy_metric(fn: Callable[[Any, Any], Any], name: str = "metric") -> Callable[..., dspy.Prediction]:
    """A DSPy metric from `fn(expected, predicted)` on the example's label field and the matching prediction field."""

    def metric(example: dspy.Example, pred: Any, trace: Any = None) -> dspy.Prediction:
        field = _label_field(example)
        got = _prediction_field(pred, field)
        result = to_feedback(fn(example[field], got))
        if result.score < 1.0:
            result.feedback = (
                f"{name}: {result.score:.2f}. Got {got!r}. {format_expected(str(example[field]))}"
            )
        return result

    metric.__name__ = name
    return metric


def create_mlflow_based_metric(
    scorers: Sequence[Scorer | Callable[..., Any]],
) -> Callable[..., dspy.Prediction]:
    """A DSPy metric averaging MLflow scorers; its feedback carries the scorers' rationales."""
    if not scorers:
        raise ValueError("scorers: give at least one scorer")
    resolved = [as_scorer(item) for item in scorers]

    def metric(example: dspy.Example, pred: Any, trace: Any = None) -> dspy.Prediction:
        field = _label_field(example)
        outputs = _prediction_field(pred, field)
        labels = example.labels()
        expectations = {"expected_response": labels[field], **{k: v for k, v in labels.items() if k != field}}
        score, feedback = run_scorers(resolved, dict(example.inputs()), outputs, expectations)
        return dspy.Prediction(score=score, feedback=feedback)

    metric.__name__ = "mlflow_scorers"
    return metric
