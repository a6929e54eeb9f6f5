"""DSPy metric adapters: 3- and 5-argument metrics, result kinds, scorer-backed metrics."""

import dspy
import pytest

from optimization.metrics import (
    adapt_metric,
    create_dspy_metric,
    create_mlflow_based_metric,
    exact_match_metric,
)
from optimization.scorers import resolve_scorers

EXAMPLE = dspy.Example(question="What is 3*5?", answer="15").with_inputs("question")


def test_three_argument_metric_is_called_without_gepa_arguments() -> None:
    calls = []

    def accuracy(example, pred, trace=None):
        calls.append(trace)
        return example.answer == pred.answer

    result = adapt_metric(accuracy)(EXAMPLE, dspy.Prediction(answer="15"), None, "solve", None)
    assert result.score == 1.0 and calls == [None]


def test_five_argument_metric_keeps_its_feedback() -> None:
    def gepa_metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
        return dspy.Prediction(score=0.5, feedback=f"checked {pred_name}")

    result = adapt_metric(gepa_metric)(EXAMPLE, dspy.Prediction(answer="8"), None, "solve", None)
    assert (result.score, result.feedback) == (0.5, "checked solve")


def test_non_numeric_metric_result_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="metric"):
        adapt_metric(lambda example, pred, trace=None: "good")(EXAMPLE, dspy.Prediction(answer="15"))


def test_exact_match_feedback_states_the_expected_answer() -> None:
    result = exact_match_metric(EXAMPLE, dspy.Prediction(answer="8"))
    assert result.score == 0.0 and 'Expected answer: "15"' in result.feedback


def test_create_dspy_metric_compares_label_and_prediction() -> None:
    metric = create_dspy_metric(lambda expected, predicted: expected == predicted, name="accuracy")
    assert metric(EXAMPLE, dspy.Prediction(answer="15")).score == 1.0
    assert (
        metric.__name__ == "accuracy" and "accuracy" in metric(EXAMPLE, dspy.Prediction(answer="1")).feedback
    )


def test_mlflow_based_metric_carries_scorer_rationales() -> None:
    metric = create_mlflow_based_metric(
        resolve_scorers(["correctness", "exact_match"], judge_model="offline/judge")
    )
    result = metric(EXAMPLE, dspy.Prediction(reasoning="...", answer="8"))
    assert (
        result.score == 0.0
        and "correctness" in result.feedback
        and 'Expected answer: "15"' in result.feedback
    )
