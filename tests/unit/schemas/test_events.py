"""Round trips and error messages of the event contract."""

from __future__ import annotations

import json

import pytest

from schemas import EVENT_CLASSES, InvalidEvent, RatingData, Topics, TraceData, TraceEvent, parse_event
from schemas.ratings import normalize_rating
from tests.samples import sample_events


def test_every_type_has_a_sample() -> None:
    assert {e.type for e in sample_events()} == set(EVENT_CLASSES)


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.type)
def test_round_trip(event) -> None:
    parsed = parse_event(event.to_json())
    assert type(parsed) is type(event)
    assert parsed == event


def test_round_trip_keeps_cloudevents_extensions() -> None:
    event = TraceEvent.build(
        TraceData(prompt="p", trace_id="t", inputs={"a": 1}, outputs="x"), traceparent="00-abc"
    )
    assert parse_event(event.to_json()).traceparent == "00-abc"


def test_key_is_the_prompt_name() -> None:
    event = sample_events()[0]
    assert event.key == b"support_router"


@pytest.mark.parametrize(
    ("rating", "scale", "expected"),
    [
        ("excellent", "five_point", 1.0),
        ("good", "five_point", 0.75),
        ("fair", "five_point", 0.5),
        ("poor", "five_point", 0.0),
        ("up", "five_point", 1.0),
        ("down", "unit", 0.0),
        ("Excellent", "five_point", 1.0),
        (1, "five_point", 0.0),
        (3, "five_point", 0.5),
        (5, "five_point", 1.0),
        (4.5, "five_point", 0.875),
        (0.0, "unit", 0.0),
        (0.3, "unit", 0.3),
        (1, "unit", 1.0),
    ],
)
def test_rating_normalisation(rating, scale, expected) -> None:
    assert normalize_rating(rating, scale) == pytest.approx(expected)
    assert RatingData(prompt="p", trace_id="t", rating=rating, scale=scale).score == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rating", "scale"), [(0, "five_point"), (6, "five_point"), (1.01, "unit"), (-0.1, "unit")]
)
def test_rating_outside_its_scale_is_invalid(rating, scale) -> None:
    with pytest.raises(ValueError, match="outside the"):
        normalize_rating(rating, scale)


def _mutated(event, path: list[str], value) -> bytes:
    obj = json.loads(event.to_json())
    node = obj
    for part in path[:-1]:
        node = node[part]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(obj).encode()


_DELETE = object()
_RATING = sample_events()[2]
_TRACE = sample_events()[0]


@pytest.mark.parametrize(
    ("raw", "reason", "fragment"),
    [
        (b"\xff\xfe", "not_json", "not UTF-8"),
        (b"{oops", "not_json", "not valid JSON"),
        (b"[1, 2]", "bad_envelope", "expected a JSON object, got list"),
        (_mutated(_TRACE, ["specversion"], _DELETE), "bad_envelope", "specversion: is required"),
        (_mutated(_TRACE, ["specversion"], "0.3"), "bad_envelope", "specversion"),
        (_mutated(_TRACE, ["time"], "yesterday"), "bad_time", "time: must be an RFC 3339 timestamp"),
        (_mutated(_TRACE, ["subject"], "other"), "bad_envelope", "subject must equal data.prompt"),
        (_mutated(_TRACE, ["type"], "gepa.trace.v9"), "unknown_type", "unknown event type 'gepa.trace.v9'"),
        (_mutated(_TRACE, ["type"], _DELETE), "bad_envelope", "type: is required"),
        (_mutated(_TRACE, ["data", "trace_id"], _DELETE), "invalid_data", "data.trace_id: is required"),
        (_mutated(_TRACE, ["data", "inputs"], {}), "invalid_data", "data.inputs"),
        (_mutated(_TRACE, ["data", "outputs"], 3), "invalid_data", "data.outputs"),
        (_mutated(_TRACE, ["data", "tracer_id"], "x"), "invalid_data", "data.tracer_id: is not a field"),
        (
            _mutated(_RATING, ["data", "rating"], 9),
            "invalid_data",
            "data.rating: rating 9 is outside the five_point",
        ),
        (_mutated(_RATING, ["data", "rating"], "meh"), "invalid_data", "unknown rating label 'meh'"),
        (_mutated(_RATING, ["data", "rating"], True), "invalid_data", "data.rating"),
    ],
)
def test_invalid_events_name_the_field_and_problem(raw: bytes, reason: str, fragment: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    assert caught.value.reason == reason
    assert fragment in str(caught.value)
    assert "pydantic" not in str(caught.value) and "errors.pydantic.dev" not in str(caught.value)


def test_oversize_is_rejected_before_parsing() -> None:
    raw = _TRACE.to_json()
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw, max_bytes=len(raw) - 1)
    assert caught.value.reason == "oversize"
    assert parse_event(raw, max_bytes=len(raw)) == _TRACE


def test_topic_names_follow_the_prefix() -> None:
    assert Topics().traces == "gepa.traces"
    topics = Topics("acme.prod.")
    assert topics.dlq == "acme.prod.dlq"
    assert topics.resolve("ratings") == "acme.prod.ratings"
    assert topics.resolve("acme.prod.ratings") == "acme.prod.ratings"
    with pytest.raises(ValueError, match="unknown topic"):
        topics.resolve("nope")
