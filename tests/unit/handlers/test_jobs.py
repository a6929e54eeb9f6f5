"""Job planning: the deterministic split and the records a job scores."""

from __future__ import annotations

import pytest

from handlers.jobs import NotEnoughData, plan_job, rated_outputs, record, segment_of
from handlers.split import split_examples
from schemas import Example
from schemas.config import PromptPolicy
from tests.unit.handlers.helpers import T0


def example(i: int, **fields) -> Example:
    return Example(trace_id=f"t{i}", inputs={"ticket": f"ticket {i}", "noise": 1}, time=T0, **fields)


def test_split_is_deterministic_disjoint_and_complete() -> None:
    examples = [example(i) for i in range(300)]
    first = split_examples(examples, 0.3)
    again = split_examples(list(reversed(examples)), 0.3)
    ids = lambda part: {e.trace_id for e in part}  # noqa: E731
    assert ids(first.heldout) == ids(again.heldout) and ids(first.train) == ids(again.train)
    assert not ids(first.heldout) & ids(first.train) and not ids(first.val) & ids(first.train)
    assert len(first.train) + len(first.val) + len(first.heldout) == 300
    assert 60 <= len(first.heldout) <= 120  # about 30 %


def test_a_growing_window_keeps_held_out_examples_held_out() -> None:
    """An example held out once is held out in every later snapshot (no leak into training)."""
    small = split_examples([example(i) for i in range(100)], 0.3)
    large = split_examples([example(i) for i in range(200)], 0.3)
    assert {e.trace_id for e in small.heldout} <= {e.trace_id for e in large.heldout}


def test_tiny_windows_still_get_three_parts() -> None:
    split = split_examples([example(i) for i in range(3)], 0.3)
    assert split.train and split.val and split.heldout


def test_records_take_the_input_keys_and_perfect_outputs_as_expectations() -> None:
    rated = example(1, outputs="billing", rating=1.0)
    assert record(rated, ["ticket"]) == {
        "inputs": {"ticket": "ticket 1"},
        "expectations": {"expected_response": "billing"},
    }
    poor = example(2, outputs="account", rating=0.0)
    assert record(poor, ["ticket"])["expectations"] == {}


def test_rated_outputs_include_corrections_as_excellent_answers() -> None:
    corrected = example(
        1,
        outputs="account",
        rating=0.0,
        comments=["wrong team"],
        expectations={"expected_response": "billing"},
    )
    [wrong, right] = rated_outputs([corrected], ["ticket"])
    assert (wrong.output, wrong.rating, wrong.comment) == ("account", 0.0, "wrong team")
    assert (right.output, right.rating) == ("billing", 1.0)


def policy(**fields) -> PromptPolicy:
    return PromptPolicy.model_validate({"name": "p", "input_keys": ["ticket"], **fields})


def test_expectation_scorers_keep_only_examples_they_can_score() -> None:
    examples = [example(i, expectations={"expected_response": "x"}) for i in range(30)] + [
        example(100 + i) for i in range(30)
    ]
    plan = plan_job(examples, policy(scorers=["exact_match"]))
    assert len(plan.train) + len(plan.val) + len(plan.heldout) == 30
    sme = plan_job(examples, policy(scorers=["sme_rating"]))
    assert len(sme.train) + len(sme.val) + len(sme.heldout) == 60


def test_no_usable_example_is_a_clear_failure() -> None:
    with pytest.raises(NotEnoughData, match="need expectations"):
        plan_job([example(i) for i in range(10)], policy(scorers=["exact_match"]))
    with pytest.raises(NotEnoughData, match="too few"):
        plan_job([example(1, expectations={"expected_response": "x"})], policy())


def test_segment_labels_come_from_an_attribute_or_an_input() -> None:
    example = Example(
        trace_id="t1",
        inputs={"ticket": "x", "tier": 2, "nested": {"a": 1}},
        attributes={"language": "de"},
        time=T0,
    )
    assert segment_of(example, "attributes.language") == "de"
    assert segment_of(example, "inputs.tier") == "2"
    assert segment_of(example, "inputs.nested") is None  # not a label
    assert segment_of(example, "attributes.tier") is None
