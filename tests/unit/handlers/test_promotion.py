"""Every promotion event is built by `handlers.promotion.promotion_event`: the tree is read for any
other construction of one, and the builder carries every field it is given."""

from __future__ import annotations

from handlers.promotion import promotion_event
from tests.unit.handlers.helpers import ROOT, calls_outside


def test_no_promotion_event_is_built_outside_the_builder() -> None:
    assert calls_outside(ROOT / "handlers" / "promotion.py", ("PromotionEvent.build", "PromotionData")) == []


def test_the_builder_carries_the_decision_its_comparison_and_its_id() -> None:
    event = promotion_event(
        "router",
        "promoted",
        "better",
        source="gepa-stream/test",
        event_id="r1:promotion:router",
        from_version=1,
        to_version=2,
        baseline_score=0.5,
        candidate_score=0.75,
        improvement=0.25,
        ci_low=0.1,
        ci_high=0.4,
        n_eval=30,
        request_id="r1",
    )
    assert (event.id, event.source, event.subject, event.key) == (
        "r1:promotion:router",
        "gepa-stream/test",
        "router",
        b"router",
    )
    data = event.data
    assert (data.decision, data.alias, data.from_version, data.to_version, data.reason) == (
        "promoted",
        "production",
        1,
        2,
        "better",
    )
    assert (data.baseline_score, data.candidate_score, data.improvement, data.ci_low, data.ci_high) == (
        0.5,
        0.75,
        0.25,
        0.1,
        0.4,
    )
    assert (data.n_eval, data.request_id) == (30, "r1")
    assert (
        promotion_event("router", "rejected", "x", source="s").id
        != promotion_event("router", "rejected", "x", source="s").id
    )  # without one, each event is its own
