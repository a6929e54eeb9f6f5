"""The gate's segment rule (optimization/comparison.py): a harmed segment turns a promotion into
a rejection naming it, the correction counts the segments tested, small and unlabeled segments
are not tested, and without a harmed segment the decision is the mean's."""

from __future__ import annotations

import numpy as np
import pytest

from optimization.comparison import compare_paired, segment_harm


def _world(harm: float) -> tuple[list[float], list[float], list[str]]:
    """Four segments of 100: the baseline right on 70 of each; the candidate fixes all failures
    outside `de`, and in `de` breaks `harm` x 100 of its successes."""
    baseline, candidate, labels = [], [], []
    for segment in ("de", "en", "fr", "es"):
        for i in range(100):
            right = i < 70
            baseline.append(float(right))
            if segment == "de":
                candidate.append(float(right and i >= round(harm * 100)))
            else:
                candidate.append(1.0)
            labels.append(segment)
    return baseline, candidate, labels


def test_a_harmed_segment_rejects_a_better_mean_and_is_named() -> None:
    baseline, candidate, labels = _world(0.25)
    plain = compare_paired(baseline, candidate)
    assert plain.decision == "promoted" and plain.segments == ()
    judged = compare_paired(baseline, candidate, segments=labels)
    assert judged.decision == "rejected"
    assert "worse beyond doubt on segment(s) de 0.700 -> 0.450 (n=100" in judged.reason
    [de] = [s for s in judged.segments if s.harmed]
    assert (de.segment, de.n, de.mean_difference) == ("de", 100, pytest.approx(-0.25)) and de.upper < 0
    assert {s.segment for s in judged.segments} == {"de", "en", "fr", "es"}


def test_without_harm_the_decision_is_the_means() -> None:
    baseline, candidate, labels = _world(0.0)
    judged = compare_paired(baseline, candidate, segments=labels)
    assert judged.decision == "promoted" and not any(s.harmed for s in judged.segments)


def test_the_bound_is_corrected_for_the_segments_tested() -> None:
    rng = np.random.default_rng(7)
    diff = rng.normal(-0.1, 0.3, 40)
    zero = np.zeros(40)
    one = segment_harm(zero, diff, ["a"] * 40, confidence=0.95, min_examples=10, max_segments=20)
    many = segment_harm(
        np.zeros(400),
        np.tile(diff, 10),
        [f"s{i // 40}" for i in range(400)],
        confidence=0.95,
        min_examples=10,
        max_segments=20,
    )
    assert one[0].upper < many[0].upper  # ten segments tested: each bound is wider


def test_small_unlabeled_and_surplus_segments_are_not_tested() -> None:
    labels = ["big"] * 30 + ["mid"] * 20 + ["small"] * 5 + [None] * 10 + ["other"] * 20
    n = len(labels)
    tested = segment_harm(np.zeros(n), np.zeros(n), labels, confidence=0.95, min_examples=10, max_segments=2)
    assert [(s.segment, s.n) for s in tested] == [("big", 30), ("mid", 20)]  # ties by name: mid < other


def test_labels_must_pair_with_the_scores() -> None:
    with pytest.raises(ValueError, match="segment labels"):
        compare_paired([1.0, 0.0], [1.0, 1.0], segments=["a"])
