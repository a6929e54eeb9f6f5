"""Property: `parse_event` returns an event or raises `InvalidEvent` — never anything else."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import InvalidEvent, parse_event
from tests.samples import sample_events

SAMPLES = [json.loads(e.to_json()) for e in sample_events()]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def _parses_or_rejects(raw: bytes) -> None:
    try:
        parse_event(raw)
    except InvalidEvent as exc:
        assert exc.reason
        assert str(exc)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    _parses_or_rejects(raw)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _paths(value, (*prefix, index))


@st.composite
def mutated_events(draw):
    event = json.loads(json.dumps(draw(st.sampled_from(SAMPLES))))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from([p for p in _paths(event) if p]))
        parent = event
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(json_values)
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_values)
    return json.dumps(event, allow_nan=True).encode()


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_events())
def test_mutated_valid_events(raw: bytes) -> None:
    _parses_or_rejects(raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([e.to_json() for e in sample_events()]), st.data())
def test_truncated_and_spliced_bytes(raw: bytes, data) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    junk = data.draw(st.binary(max_size=8))
    _parses_or_rejects(raw[:cut] + junk + raw[cut:])


def test_deep_nesting_is_rejected_not_crashing() -> None:
    _parses_or_rejects(b"[" * 100_000)
    _parses_or_rejects(b'{"a":' * 50_000)
