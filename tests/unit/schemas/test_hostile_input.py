"""Hostile records are classified by the parser, before any state is touched, and whatever the
parser accepts can be carried by every later stage (fact records, snapshot digest and chunks)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.deadletter import dead_letter
from handlers.facts import TraceFact, encode_record
from handlers.snapshot import snapshot_chunks, snapshot_sha256
from schemas import Example, InvalidEvent, TraceEvent, parse_event
from schemas.parse import MAX_DEPTH
from tests.samples import sample_events

TRACE = json.loads(sample_events()[0].to_json())


def _trace(**changes: Any) -> dict[str, Any]:
    obj = json.loads(json.dumps(TRACE))
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = obj
        for part in parents:
            node = node[part]
        node[last] = value
    return obj


def _nested(depth: int) -> Any:
    """`depth` containers, alternating objects and arrays."""
    value: Any = "leaf"
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def _reason(raw: bytes | str | None, **kwargs: Any) -> str:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw, **kwargs)
    str(caught.value).encode("utf-8")  # the message itself can go into a dead letter
    return caught.value.reason


def test_a_tombstone_is_a_null_value_and_its_dead_letter_has_an_empty_payload() -> None:
    assert _reason(None) == "null_value"
    record = dead_letter(
        None, topic="t", partition=1, offset=7, key=b"p", reason="null_value", error="no value"
    )
    assert record.id == "dlq:t:1:7" and record.data.payload == "" and record.data.stage == "parse"
    assert parse_event(record.to_json()) == record


@pytest.mark.parametrize(
    "changes",
    [
        {"data__inputs__ticket": "\ud800"},
        {"data__inputs__ticket": ["ok", {"deep": "x\udfffy"}]},
        {"data__outputs": "\udc00"},
        {"data__expectations": {"expected_response": "\ud83d"}},
        {"data__feedback": "lone \ud800 surrogate"},
        {"data__inputs": {"key\ud800": "value"}},
        {"extension": "\ud800"},
    ],
)
def test_lone_surrogates_anywhere_are_unrepresentable(changes: dict[str, Any]) -> None:
    raw = json.dumps(_trace(**changes)).encode()  # ensure_ascii: a valid-JSON \\udxxx escape
    assert b"\\ud" in raw
    assert _reason(raw) == "unrepresentable"
    assert _reason(raw.decode()) == "unrepresentable"
    assert _reason(json.dumps(_trace(**changes), ensure_ascii=False)) == "unrepresentable"  # a str holding it


def test_surrogate_pairs_and_escaped_backslashes_are_fine() -> None:
    event = parse_event(json.dumps(_trace(data__inputs__ticket="\U0001f600 and \\ud800 literally")).encode())
    assert event.data.inputs["ticket"] == "\U0001f600 and \\ud800 literally"


def test_nesting_is_limited_to_max_depth() -> None:
    # the event is depth 1, data 2, data.inputs 3, so a value inside inputs may hold MAX_DEPTH - 3 containers
    at_limit = json.dumps(_trace(data__inputs__ticket=_nested(MAX_DEPTH - 3))).encode()
    assert parse_event(at_limit).data.inputs["ticket"] == _nested(MAX_DEPTH - 3)
    for depth in (MAX_DEPTH - 2, 255, 500, 999):
        raw = (
            json.dumps(_trace(data__inputs__ticket=_nested(depth)), indent=None).encode()
            if depth < 900
            else None
        )
        if raw is None:  # json.dumps itself cannot nest 999 deep: build the text
            raw = (
                json.dumps(_trace(data__inputs__ticket="@"))
                .encode()
                .replace(b'"@"', b"[" * depth + b"]" * depth)
            )
        assert _reason(raw) == "too_deep", depth
    assert _reason(b"[" * 100_000) == "too_deep"
    assert _reason(b'{"a":' * 50_000 + b"1" + b"}" * 50_000) == "too_deep"


def test_many_containers_that_are_not_deep_are_fine() -> None:
    wide = [{"role": "user", "content": [{"type": "text", "text": str(i)}]} for i in range(200)]
    assert (
        parse_event(json.dumps(_trace(data__inputs__messages=wide)).encode()).data.inputs["messages"] == wide
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (json.dumps(TRACE).encode().replace(b"ticket", b"tick\xffet", 1), "not_json"),
        (
            json.dumps(TRACE).encode().replace(b"ticket", b"tick\xed\xa0\x80et", 1),
            "not_json",
        ),  # CESU-8 surrogate
        (b"\xfe\xff\x00{", "not_json"),
        (json.dumps(TRACE).encode()[:-7], "not_json"),
        (json.dumps(_trace(data__inputs__n=float("nan"))).encode(), "not_json"),
        (json.dumps(_trace(data__inputs__n=float("inf"))).encode(), "not_json"),
        (json.dumps(TRACE).encode().replace(b'"ticket"', b'"n": 1e400, "ticket"', 1), "unrepresentable"),
        (json.dumps(_trace(data__inputs__n=10**400)).encode(), "unrepresentable"),
        (json.dumps(_trace(data__prompt_version=2**64)).encode(), "invalid_data"),
        (json.dumps(_trace(data__latency_ms=-1)).encode(), "invalid_data"),
        (b"null", "bad_envelope"),
        (b'"a string"', "bad_envelope"),
    ],
)
def test_bytes_and_numbers_the_pipeline_cannot_carry(raw: bytes, reason: str) -> None:
    assert _reason(raw) == reason


def _at(time: Any) -> Any:
    """A timedelta stands for that long from now, resolved when the test runs: collection-time
    values would give each xdist worker other test ids."""
    return (datetime.now(UTC) + time).isoformat() if isinstance(time, timedelta) else time


@pytest.mark.parametrize(
    "time",
    [
        12345,
        1764158400.5,
        "1764158400",
        True,
        None,
        [],
        "yesterday",
        "2026-11-26",
        "2026-11-26 12:00:00Z",
        "2026-11-26T12:00:00",
        "1999-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z",
        timedelta(days=1, minutes=5),
        "9999-12-31T23:59:59Z",
    ],
)
def test_time_must_be_a_plausible_rfc3339_string(time: Any) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(json.dumps(_trace(time=_at(time))).encode())
    assert caught.value.reason == "bad_time" and caught.value.field == "time"


@pytest.mark.parametrize(
    "time",
    ["2000-01-01T00:00:00Z", "2026-11-26T12:00:00.123+01:00", "2026-11-26t12:00:00z", timedelta(hours=23)],
)
def test_rfc3339_times_within_the_bounds_are_accepted(time: str | timedelta) -> None:
    assert parse_event(json.dumps(_trace(time=_at(time))).encode()).time.tzinfo is not None


def test_a_missing_time_is_a_bad_envelope() -> None:
    obj = _trace()
    del obj["time"]
    assert _reason(json.dumps(obj).encode()) == "bad_envelope"


def test_oversize_comes_before_parsing() -> None:
    assert _reason(b"\xff" * 2000, max_bytes=1000) == "oversize"
    assert _reason("x" * 2000, max_bytes=1000) == "oversize"


# -- property: accepted means carriable --------------------------------------------------------

_any_char = st.characters(codec=None, categories=None)  # lone surrogates included
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(_any_char, max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(_any_char, max_size=4), children, max_size=3)
    ),
    max_leaves=12,
)


@st.composite
def hostile_traces(draw: st.DrawFn) -> bytes:
    obj = _trace(data__inputs={"ticket": draw(_json), draw(st.text(_any_char, max_size=3)): draw(_json)})
    if draw(st.booleans()):
        obj["data"]["outputs"] = draw(st.text(_any_char, max_size=8))
    if draw(st.booleans()):
        obj["data"]["expectations"] = {"expected_response": draw(_json)}
    depth = draw(st.integers(min_value=0, max_value=MAX_DEPTH + 5))
    obj["data"]["inputs"]["nested"] = _nested(depth)
    return json.dumps(obj, allow_nan=True).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_traces())
def test_whatever_is_accepted_can_be_stored_hashed_and_shipped(raw: bytes) -> None:
    try:
        event = parse_event(raw)
    except InvalidEvent as exc:
        assert exc.reason in ("unrepresentable", "too_deep", "not_json"), exc
        return
    assert isinstance(event, TraceEvent)
    fact = TraceFact.from_event(event)
    encode_record(fact, [])
    example = Example(
        trace_id=fact.trace_id,
        inputs=fact.inputs,
        outputs=fact.outputs,
        expectations=fact.expectations,
        time=event.time,
    )
    snapshot_sha256([example])
    for chunk in snapshot_chunks("r", event.data.prompt, [example]):
        assert parse_event(chunk.to_json()) == chunk
