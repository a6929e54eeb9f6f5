"""The MLflow bridge's pure half: prompt refs, rating values, event ids, position bookkeeping."""

from __future__ import annotations

import json
from typing import Any

import pytest

from handlers.facts import RatingFact, TraceFact
from handlers.trace_mapping import (
    FINALIZE_GRACE_MS,
    FINALIZED_KEY,
    LINKED_PROMPTS_TAG,
    AssessmentRecord,
    BridgePosition,
    MappingOptions,
    PromptRef,
    TraceRecord,
    Unmappable,
    finished,
    parse_prompt_ref,
    prompt_refs,
    rating_of,
)
from handlers.window import PromptWindow
from schemas.config import WindowPolicy
from schemas.parse import parse_event

OPTIONS = MappingOptions(source="test/bridge")
T0 = 1_795_000_000_000


def assessment(
    aid: str,
    value: Any = "good",
    *,
    kind: str = "feedback",
    source: str = "HUMAN",
    ms: int = T0 + 500,
    **extra: Any,
) -> AssessmentRecord:
    return AssessmentRecord(
        assessment_id=aid,
        name=extra.pop("name", "expected_response" if kind == "expectation" else "quality"),
        kind=kind,  # type: ignore[typeddict-item]
        value=value,
        rationale=extra.pop("rationale", None),
        source_type=source,
        source_id=extra.pop("source_id", "alice"),
        updated_ms=ms,
        valid=extra.pop("valid", True),
        error=extra.pop("error", None),
    )


def record(
    trace_id: str = "tr-1",
    *,
    ms: int = T0,
    linked: list[dict[str, str]] | None = None,
    tags: dict[str, str] | None = None,
    assessments: list[AssessmentRecord] | None = None,
    spans: bool = True,
    **fields: Any,
) -> TraceRecord:
    all_tags = dict(tags or {})
    if linked is not None:
        all_tags[LINKED_PROMPTS_TAG] = json.dumps(linked)
    metadata = {FINALIZED_KEY: "true", **fields.pop("metadata", {})}
    rec = TraceRecord(
        trace_id=trace_id,
        timestamp_ms=ms,
        state=fields.pop("state", "OK"),
        tags=all_tags,
        metadata=metadata,
        assessments=assessments or [],
    )
    if spans:
        rec["inputs"] = fields.pop("inputs", {"ticket": "I want a refund"})
        rec["outputs"] = fields.pop("outputs", "billing")
    return rec


ROUTER = [{"name": "support_router", "version": "2"}]


# -- prompts and values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("support_router", PromptRef("support_router")),
        ("support_router/3", PromptRef("support_router", 3)),
        ("prompts:/support_router/3", PromptRef("support_router", 3)),
        ("support_router@production", PromptRef("support_router")),
    ],
)
def test_prompt_ref_spellings(text: str, ref: PromptRef) -> None:
    assert parse_prompt_ref(text) == ref


def test_linked_prompt_unless_a_tag_or_metadata_names_one() -> None:
    assert prompt_refs(record(linked=ROUTER), OPTIONS) == [PromptRef("support_router", 2)]
    tagged = record(linked=ROUTER, tags={"gepa.prompt": "other/5"})
    assert prompt_refs(tagged, OPTIONS) == [PromptRef("other", 5)]
    assert prompt_refs(
        record(metadata={"app.prompt": "other"}), MappingOptions(source="s", prompt_key="app.prompt")
    ) == [PromptRef("other")]


def test_no_prompt_and_unmanaged_prompt_are_unmappable() -> None:
    with pytest.raises(Unmappable, match="no_prompt"):
        prompt_refs(record(), OPTIONS)
    with pytest.raises(Unmappable, match="unmanaged_prompt"):
        prompt_refs(record(linked=ROUTER), MappingOptions(source="s", managed=frozenset({"other"})))


def test_several_linked_prompts_keep_the_managed_ones() -> None:
    linked = [*ROUTER, {"name": "summarizer", "version": "1"}]
    assert [r.name for r in prompt_refs(record(linked=linked), OPTIONS)] == ["support_router", "summarizer"]
    managed = MappingOptions(source="s", managed=frozenset({"summarizer"}))
    assert prompt_refs(record(linked=linked), managed) == [PromptRef("summarizer", 1)]


@pytest.mark.parametrize(
    ("value", "scale", "expected"),
    [
        ("Good", "auto", ("good", "five_point")),
        (True, "auto", ("up", "five_point")),
        ("no", "auto", ("down", "five_point")),
        (0.25, "auto", (0.25, "unit")),
        (4, "auto", (4.0, "five_point")),
        ("4", "auto", (4.0, "five_point")),
        (1, "five_point", (1.0, "five_point")),
    ],
)
def test_feedback_values_become_ratings(value: Any, scale: str, expected: tuple[Any, str]) -> None:
    assert rating_of(value, scale) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["meh", 7, -1, float("nan"), None, [1]])
def test_unknown_feedback_values_are_unmappable(value: Any) -> None:
    with pytest.raises(Unmappable, match="unknown_rating"):
        rating_of(value)


def test_a_trace_is_finished_once_mlflow_finalized_it_or_after_the_grace_period() -> None:
    assert finished(record(), T0)
    assert not finished(record(state="IN_PROGRESS"), T0 + FINALIZE_GRACE_MS + 1)
    unfinalized = record()
    unfinalized["metadata"] = {}
    assert not finished(unfinalized, T0 + 1000)
    assert finished(unfinalized, T0 + FINALIZE_GRACE_MS + 1)


# -- planning ----------------------------------------------------------------------------------


def test_a_new_trace_yields_its_trace_and_human_ratings_only() -> None:
    position = BridgePosition("1")
    rec = record(
        linked=ROUTER,
        assessments=[
            assessment("a-1", "poor", rationale="wrong queue"),
            assessment("a-2", 0.9, source="LLM_JUDGE"),
            assessment("a-3", "billing", kind="expectation"),
            assessment("a-4", "good", valid=False),
        ],
    )
    plan = position.plan(rec, OPTIONS)
    trace, rating = plan.events
    assert trace.type == "gepa.trace.v1" and rating.type == "gepa.rating.v1"
    assert trace.data.prompt == "support_router" and trace.data.prompt_version == 2
    assert trace.data.inputs == {"ticket": "I want a refund"} and trace.data.outputs == "billing"
    assert trace.data.expectations == {"expected_response": "billing"}
    assert trace.time.timestamp() * 1000 == T0
    assert (rating.data.rating, rating.data.comment, rating.data.rater) == ("poor", "wrong queue", "alice")
    assert rating.time.timestamp() * 1000 == T0 + 500
    assert plan.counts.traces_mapped == 1 and plan.counts.published == {
        "gepa.trace.v1": 1,
        "gepa.rating.v1": 1,
    }
    for event in plan.events:  # valid on the wire
        assert parse_event(event.to_json()) == event


def test_the_same_data_maps_to_identical_events() -> None:
    rec = record(linked=ROUTER, assessments=[assessment("a-1")])
    first, second = BridgePosition("1").plan(rec, OPTIONS), BridgePosition("1").plan(rec, OPTIONS)
    assert [e.to_json() for e in first.events] == [e.to_json() for e in second.events]


def test_a_committed_trace_is_not_planned_again() -> None:
    position = BridgePosition("1")
    rec = record(linked=ROUTER, assessments=[assessment("a-1")])
    plan = position.plan(rec, OPTIONS)
    position.commit("tr-1", plan.seen)
    again = position.plan(record(linked=ROUTER, assessments=[assessment("a-1")], spans=False), OPTIONS)
    assert again.events == [] and again.counts.traces_mapped == 0
    assert not position.needs_spans(record(linked=ROUTER, spans=False))


def test_a_late_assessment_on_a_seen_trace_yields_its_rating_and_resends_the_trace() -> None:
    position = BridgePosition("1")
    first = position.plan(record(linked=ROUTER), OPTIONS)
    position.commit("tr-1", first.seen)
    late = [assessment("a-9", 5, ms=T0 + 86_000)]
    assert position.needs_spans(record(linked=ROUTER, spans=False, assessments=late))
    plan = position.plan(record(linked=ROUTER, assessments=late), OPTIONS)
    trace, rating = plan.events
    assert (
        trace.to_json() == first.events[0].to_json()
    )  # the same event again: a no-op for a daemon that still holds it
    assert (rating.data.rating, rating.data.scale) == (5.0, "five_point")
    position.commit("tr-1", plan.seen)
    assert not position.needs_spans(record(linked=ROUTER, spans=False, assessments=late))


def test_an_edited_assessment_is_a_new_rating_event() -> None:
    position = BridgePosition("1")
    position.commit(
        "tr-1", position.plan(record(linked=ROUTER, assessments=[assessment("a-1", "poor")]), OPTIONS).seen
    )
    plan = position.plan(
        record(linked=ROUTER, assessments=[assessment("a-1", "good", ms=T0 + 9_000)]), OPTIONS
    )
    assert [e.type for e in plan.events] == ["gepa.trace.v1", "gepa.rating.v1"] and plan.events[
        1
    ].data.rating == "good"


def test_a_late_expectation_republishes_the_trace_under_a_new_id() -> None:
    position = BridgePosition("1")
    first = position.plan(record(linked=ROUTER), OPTIONS)
    position.commit("tr-1", first.seen)
    late = record(linked=ROUTER, assessments=[assessment("x-1", "billing", kind="expectation")], spans=False)
    assert position.needs_spans(late)
    plan = position.plan(
        record(linked=ROUTER, assessments=[assessment("x-1", "billing", kind="expectation")]), OPTIONS
    )
    (event,) = plan.events
    assert event.id != first.events[0].id and event.data.expectations == {"expected_response": "billing"}


def test_unmapped_traces_are_counted_once_with_their_reason() -> None:
    position = BridgePosition("1")
    cases = {
        "tr-a": record("tr-a"),
        "tr-b": record("tr-b", linked=ROUTER, inputs=None),
        "tr-c": record("tr-c", linked=ROUTER, outputs=None),
    }
    reasons = {}
    for trace_id, rec in cases.items():
        plan = position.plan(rec, OPTIONS)
        assert plan.events == []
        reasons.update(plan.counts.traces_unmapped)
        position.commit(trace_id, plan.seen)
    assert reasons == {"no_prompt": 1, "no_inputs": 1, "no_outputs": 1}
    assert position.plan(cases["tr-a"], OPTIONS).counts.traces_unmapped == {}


def test_an_unmappable_rating_is_counted_and_the_trace_still_published() -> None:
    plan = BridgePosition("1").plan(record(linked=ROUTER, assessments=[assessment("a-1", "meh")]), OPTIONS)
    assert [e.type for e in plan.events] == ["gepa.trace.v1"]
    assert plan.counts.assessments_unmapped == {"unknown_rating": 1}


@pytest.mark.parametrize(
    ("rec", "options", "reason"),
    [
        (
            record(linked=ROUTER, outputs="x" * 5000),
            MappingOptions(source="s", max_event_bytes=2048),
            "oversize",
        ),
        (record(tags={"gepa.prompt": "not a prompt name!"}), OPTIONS, "invalid_data"),
    ],
)
def test_oversize_and_invalid_traces_are_unmapped(
    rec: TraceRecord, options: MappingOptions, reason: str
) -> None:
    assert BridgePosition("1").plan(rec, options).counts.traces_unmapped == {reason: 1}


def test_a_prompt_linked_at_two_versions_maps_once_with_the_last() -> None:
    linked = [{"name": "support_router", "version": "1"}, {"name": "support_router", "version": "2"}]
    assert prompt_refs(record(linked=linked), OPTIONS) == [PromptRef("support_router", 2)]


def test_position_round_trips_resumes_and_prunes_past_the_horizon() -> None:
    position = BridgePosition("1")
    for i, ms in enumerate((T0, T0 + 10_000, T0 + 20_000)):
        position.commit(f"tr-{i}", position.plan(record(f"tr-{i}", ms=ms, linked=ROUTER), OPTIONS).seen)
    restored = BridgePosition.from_json(position.to_json())
    assert restored == position and restored.watermark_ms == T0 + 20_000
    assert restored.scan_start(since_ms=0, lookback_ms=15_000) == T0 + 5_000
    assert restored.scan_start(since_ms=T0 + 8_000, lookback_ms=15_000) == T0 + 8_000
    restored.prune(15_000)
    assert set(restored.traces) == {"tr-1", "tr-2"}


def test_republished_events_create_no_new_facts_downstream() -> None:
    """What the daemon's window does with a replay of the bridge's events: nothing."""
    rec = record(
        linked=ROUTER,
        assessments=[assessment("a-1", "poor"), assessment("x-1", "billing", kind="expectation")],
    )
    events = BridgePosition("1").plan(rec, OPTIONS).events
    window = PromptWindow("support_router", WindowPolicy())
    facts = [TraceFact.from_event(events[0]), RatingFact.from_event(events[1])]
    now = T0 / 1000 + 1
    assert all(window.add(fact, now) for fact in facts)
    replay = BridgePosition("1").plan(rec, OPTIONS).events
    assert not any(
        window.add(f, now) for f in (TraceFact.from_event(replay[0]), RatingFact.from_event(replay[1]))
    )
    assert window.figures().n_examples == 1


def test_a_late_rating_joins_even_after_the_daemon_dropped_the_waiting_trace() -> None:
    position = BridgePosition("1")
    first = position.plan(record(linked=ROUTER), OPTIONS)
    position.commit("tr-1", first.seen)
    window = PromptWindow("support_router", WindowPolicy())
    start = T0 / 1000
    window.add(TraceFact.from_event(first.events[0]), start)
    window.expire(start + 2 * 3600)  # past join_ttl (1h) without a rating: the trace is gone
    late = position.plan(
        record(linked=ROUTER, assessments=[assessment("a-1", "poor", ms=T0 + 3 * 3600_000)]), OPTIONS
    )
    for event in late.events:
        fact = TraceFact.from_event(event) if event.type == "gepa.trace.v1" else RatingFact.from_event(event)
        window.add(fact, start + 3 * 3600)
    assert window.figures().n_examples == 1
