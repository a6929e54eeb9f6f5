"""Scorer resolution and the offline demo/test judges."""

import pytest
from mlflow.entities import Feedback
from mlflow.genai.scorers import Correctness, Guidelines

from optimization.scorers import resolve_scorers, run_scorers, score_value

EXPECT = {"expected_response": "You can return items within 30 days."}


def custom_metric(outputs, expectations):
    """A plain function scorer importable as module:function."""
    return 1.0


def test_names_resolve_to_offline_judges_with_an_offline_judge_model() -> None:
    scorers = resolve_scorers(
        ["exact_match", "correctness", "professionalism", 'guidelines:must say "30 days"'],
        judge_model="offline/judge",
    )
    assert [s.name for s in scorers] == ["exact_match", "correctness", "professionalism", "guidelines"]
    score, feedback = run_scorers(
        scorers, {"query": "return?"}, "You can return items within 30 days.", EXPECT
    )
    assert score == 1.0 and "correctness" in feedback


def test_names_resolve_to_mlflow_judges_with_a_real_judge_model() -> None:
    correctness, professionalism = resolve_scorers(
        ["correctness", "professionalism"], judge_model="openai/gpt-4.1-mini"
    )
    assert isinstance(correctness, Correctness) and isinstance(professionalism, Guidelines)


def test_module_function_and_objects_are_accepted() -> None:
    (imported,) = resolve_scorers([f"{__name__}:custom_metric"], judge_model="offline/judge")
    assert score_value(imported.run(outputs="x", expectations={}))[0] == 1.0


@pytest.mark.parametrize("spec", ["relevance", "guidelines:", "nomodule:missing"])
def test_unknown_scorers_name_the_argument(spec: str) -> None:
    with pytest.raises(ValueError, match="scorers"):
        resolve_scorers([spec], judge_model="offline/judge")


def test_sme_rating_needs_rated_examples() -> None:
    with pytest.raises(ValueError, match="sme_rating"):
        resolve_scorers(["sme_rating"], judge_model="offline/judge")


def test_offline_correctness_is_partial_and_explains() -> None:
    (correctness,) = resolve_scorers(["correctness"], judge_model="offline/judge")
    value, rationale = score_value(correctness.run(outputs="You can return it.", expectations=EXPECT))
    assert 0 < value < 1 and 'Expected answer: "You can return items within 30 days."' in rationale


@pytest.mark.parametrize(
    ("result", "expected"),
    [(True, 1.0), (0.25, 0.25), ("yes", 1.0), (Feedback(value="no", rationale="r"), 0.0), ([1.0, 0.0], 0.5)],
)
def test_score_values_are_normalized(result, expected) -> None:
    assert score_value(result)[0] == expected
