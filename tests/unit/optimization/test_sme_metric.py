"""The SME-rating metric and the feedback-item conversion."""

import pytest

from optimization.human_feedback import feedback_records
from optimization.sme_metric import RatedExample, SMERatingMetric, rated_examples

QUERY = {"query": "What's your return policy?"}
EXCELLENT = "You can return items within 30 days of delivery for a full refund."
POOR = "Please contact our support team for more details."


def metric() -> SMERatingMetric:
    return SMERatingMetric(
        [RatedExample(QUERY, EXCELLENT, 1.0), RatedExample(QUERY, POOR, 0.0, "Too generic.")]
    )


def test_output_close_to_excellent_ranks_above_output_close_to_poor() -> None:
    near_excellent, _ = metric().score(QUERY, "You can return items within 30 days for a full refund.")
    near_poor, _ = metric().score(QUERY, "Please contact our support team.")
    assert near_excellent > 0.75 > 0.25 > near_poor


def test_unrated_input_scores_the_prior() -> None:
    assert metric().score({"query": "other"}, "anything")[0] == 0.5


def test_feedback_carries_comments_and_the_best_rated_answer() -> None:
    _, feedback = metric().score(QUERY, POOR)
    assert "Too generic." in feedback and EXCELLENT in feedback


def test_as_scorer_returns_feedback() -> None:
    result = metric().as_scorer().run(inputs=QUERY, outputs=EXCELLENT)
    assert result.value > 0.99


def test_feedback_items_normalize_ratings_and_use_corrections() -> None:
    items = [
        {"inputs": QUERY, "outputs": POOR, "sme_rating": 1, "scale": "five_point"},
        {"inputs": QUERY, "sme_rating": "Good", "correction": EXCELLENT},
        {"inputs": {"query": "Hi"}, "sme_rating": 0.5, "scale": "unit"},
    ]
    rated = rated_examples(items, predict_fn=lambda inputs: "Hello")
    assert [(r.output, r.rating) for r in rated] == [
        (POOR, 0.0),
        (EXCELLENT, 1.0),
        ("Hello", 0.75),
        ("Hello", 0.5),
    ]
    records = feedback_records(items)
    assert records[0]["expectations"] == {"expected_response": EXCELLENT} and len(records) == 2


@pytest.mark.parametrize(
    ("items", "match"),
    [
        ([], "feedback"),
        ([{"inputs": QUERY}], r"feedback\[0\]"),
        ([{"inputs": QUERY, "sme_rating": "great", "outputs": "x"}], r"feedback\[0\].sme_rating"),
        ([{"inputs": QUERY, "sme_rating": 7, "outputs": "x"}], r"feedback\[0\].sme_rating"),
        ([{"inputs": QUERY, "sme_rating": "good"}], "predict_fn"),
    ],
)
def test_bad_feedback_items_are_named(items, match) -> None:
    with pytest.raises(ValueError, match=match):
        rated_examples(items)
