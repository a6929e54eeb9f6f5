"""Join of traces and ratings, window bounds and expiry, dedupe."""

from __future__ import annotations

from handlers.facts import RatingFact, TraceFact, decode_record, record_key
from handlers.window import PromptWindow
from schemas.config import WindowPolicy
from tests.unit.handlers.helpers import NOW, rating, trace


def window(**policy) -> PromptWindow:
    return PromptWindow("p", WindowPolicy(**policy))


def add_trace(w: PromptWindow, *args, now: float = NOW, **kw) -> bool:
    return w.add(TraceFact.from_event(trace(*args, **kw)), now)


def add_rating(w: PromptWindow, *args, now: float = NOW, **kw) -> bool:
    return w.add(RatingFact.from_event(rating(*args, **kw)), now)


def test_a_trace_without_labels_waits_for_its_rating() -> None:
    w = window()
    add_trace(w, "t1")
    assert w.size == 0
    assert w.buffer_sizes() == (1, 0)
    add_rating(w, "t1", "excellent")
    assert w.size == 1
    assert w.buffer_sizes() == (0, 0)
    assert w.figures().rolling_score == 1.0


def test_a_rating_may_arrive_before_its_trace() -> None:
    w = window()
    add_rating(w, "t1", "poor", comment="wrong team", correction="billing")
    assert w.size == 0 and w.buffer_sizes() == (0, 1)
    add_trace(w, "t1", outputs="shipping")
    [example] = w.examples()
    assert example.rating == 0.0
    assert example.comments == ["wrong team"]
    assert example.expectations["expected_response"] == "billing"
    assert example.outputs == "shipping"


def test_traces_with_expectations_or_scores_are_examples_by_themselves() -> None:
    w = window()
    add_trace(w, "t1", expectations={"expected_response": "x"})
    add_trace(w, "t2", scores={"exact_match": 0.5, "other": 1.0})
    assert w.size == 2
    assert w.figures().rolling_score == 0.75  # only t2 has a score


def test_duplicates_change_nothing() -> None:
    w = window()
    assert add_trace(w, "t1")
    assert not add_trace(w, "t1")  # a redelivered trace
    assert add_rating(w, "t1", "good", t=5)
    assert not add_rating(w, "t1", "good", t=6)  # the same verdict re-sent with a new event id
    before = w.figures()
    assert not add_rating(w, "t1", "poor", t=1)  # an older verdict of the same rater
    assert w.figures() == before
    assert w.size == 1


def test_one_vote_per_rater_the_latest_wins() -> None:
    w = window()
    add_trace(w, "t1")
    add_rating(w, "t1", "poor", t=1)
    add_rating(w, "t1", "excellent", t=2)
    add_rating(w, "t1", "fair", t=3, rater="other")
    assert w.figures().rolling_score == (1.0 + 0.5) / 2
    assert w.examples()[0].rating == 0.75


def test_anonymous_ratings_each_count() -> None:
    w = window()
    add_trace(w, "t1")
    add_rating(w, "t1", "poor", rater=None)
    add_rating(w, "t1", "excellent", rater=None)
    assert w.examples()[0].rating == 0.5


def test_max_examples_keeps_the_latest_and_deletes_the_rest() -> None:
    w = window(max_examples=3)
    for i in range(5):
        add_trace(w, f"t{i}", t=i, scores={"s": float(i)})
    assert [e.trace_id for e in w.examples()] == ["t2", "t3", "t4"]
    assert len(w.pending_deletes) == 2
    # an example older than everything in a full window never enters
    add_trace(w, "old", t=-10, scores={"s": 1.0})
    assert [e.trace_id for e in w.examples()] == ["t2", "t3", "t4"]
    assert len(w.pending_deletes) == 3
    assert w.figures().rolling_score == 3.0


def test_max_age_expires_examples() -> None:
    w = window(max_age="1h")
    add_trace(w, "old", t=0, scores={"s": 0.0})
    add_trace(w, "new", t=3000, scores={"s": 1.0})
    w.expire(NOW + 3601)
    assert [e.trace_id for e in w.examples()] == ["new"]
    assert w.figures().rolling_score == 1.0
    assert len(w.pending_deletes) == 1


def test_join_buffer_ttl() -> None:
    w = window(join_ttl="10m")
    add_trace(w, "lonely", now=NOW)
    add_rating(w, "orphan", now=NOW + 60)
    w.expire(NOW + 601)
    assert w.buffer_sizes() == (0, 1)
    w.expire(NOW + 661)
    assert w.buffer_sizes() == (0, 0)
    assert len(w.pending_deletes) == 2
    # a joined example is not expired by the join TTL
    add_trace(w, "t1", now=NOW + 700)
    add_rating(w, "t1", now=NOW + 701)
    w.expire(NOW + 5000)
    assert w.size == 1


def test_new_examples_count_after_the_watermark() -> None:
    w = window()
    for i in range(4):
        add_trace(w, f"t{i}", t=i, scores={"s": 1.0})
    w.watermark = w.newest_labeled_at()
    assert w.figures().n_new == 0
    add_trace(w, "t9", t=9, scores={"s": 1.0})
    add_rating(w, "t0", "good", t=10)  # a late rating makes t0 new again
    assert w.figures().n_new == 2


def test_window_size_does_not_change_per_event_cost_shape() -> None:
    """The rolling sum stays exact through many evictions (no float drift to zero)."""
    w = window(max_examples=50)
    for i in range(5000):
        add_trace(w, f"t{i}", t=i, scores={"s": (i % 4) / 4})
    assert w.size == 50
    assert abs(w.figures().rolling_score - sum((i % 4) / 4 for i in range(4950, 5000)) / 50) < 1e-9


def test_records_round_trip_through_their_encoding() -> None:
    w = window()
    add_trace(w, "t1", expectations={"expected_response": "x"}, prompt_version=2)
    add_rating(w, "t1", 4, comment="ok")
    add_rating(w, "t1", "poor", rater="other")
    key, raw = w.record("t1")
    trace, votes = decode_record(raw)
    assert trace == w.traces["t1"]
    assert sorted(votes, key=lambda v: v.rater) == sorted(w.ratings["t1"].values(), key=lambda v: v.rater)
    assert key == w.record("t1")[0]
    assert w.record("absent") is None


def test_one_record_and_one_delete_per_trace() -> None:
    """A trace and its votes share one key: an evicted example costs one tombstone."""
    w = window(max_examples=1)
    add_trace(w, "t1", t=1)
    add_rating(w, "t1", t=1)
    add_rating(w, "t1", t=1, rater="other")
    add_trace(w, "t2", t=2, scores={"s": 1.0})
    assert w.pending_deletes == [record_key("p", "t1")]
