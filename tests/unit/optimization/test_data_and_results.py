"""Data validation, converters, the deterministic split and score summaries."""

import pytest

from optimization.data import convert_to_dspy_examples, split_holdout, validate_records
from optimization.results import HeldOutScores, relative_improvement


def test_split_is_deterministic_and_order_independent() -> None:
    items = [{"inputs": {"q": str(i)}} for i in range(10)]
    train, val = split_holdout(items)
    assert (train, val) == split_holdout(list(reversed(items)))
    assert len(val) == 3 and len(train) == 7


def test_split_needs_two_examples() -> None:
    with pytest.raises(ValueError, match="trainset"):
        split_holdout([{"inputs": {"q": "1"}}])


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ([], "train_data: no examples"),
        ([{"inputs": {}}], r"train_data\[0\]"),
        ([{"inputs": {"x": 1}}], "lack"),
    ],
)
def test_records_are_validated(records, match) -> None:
    with pytest.raises(ValueError, match=match):
        validate_records(records, "train_data", input_keys=["query"])


def test_convert_flat_dicts_and_records() -> None:
    flat = convert_to_dspy_examples([{"question": "2+2?", "answer": "4"}], ["question"], "answer")
    records = convert_to_dspy_examples(
        [{"inputs": {"question": "2+2?"}, "expectations": {"expected_response": "4"}}], ["question"], "answer"
    )
    assert flat[0].toDict() == records[0].toDict() == {"question": "2+2?", "answer": "4"}
    assert set(flat[0].inputs().keys()) == {"question"}


@pytest.mark.parametrize(
    ("data", "keys", "match"),
    [
        ([], ["q"], "data"),
        ([{"question": "x", "answer": "y"}], ["query"], "input_keys"),
        ([{"question": "x"}], ["question"], "output_key"),
    ],
)
def test_convert_errors_name_the_argument(data, keys, match) -> None:
    with pytest.raises(ValueError, match=match):
        convert_to_dspy_examples(data, keys, "answer")


def test_improvement_is_relative_and_defined_from_zero() -> None:
    assert relative_improvement(0.5, 0.75) == 0.5
    assert relative_improvement(0.0, 0.5) == 0.5
    scores = HeldOutScores([0.5, 0.5], [1.0, 0.5])
    assert (scores.initial_score, scores.final_score, scores.optimized_score, scores.improvement) == (
        0.5,
        0.75,
        0.75,
        0.5,
    )
