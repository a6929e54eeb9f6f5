"""Property: `trace_event_json` writes exactly the validated model's bytes (`build_event_json` of a
`TraceData`), or raises the same `Unmappable` reason, whatever the values; its fast path is taken
for the values a span's mapping yields (the fixtures' spans: `test_otel_mapping.py` checks each
event's bytes against the pydantic event parsed from them)."""

from __future__ import annotations

import time
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.trace_json import trace_event_json
from handlers.trace_mapping import Unmappable, build_event_json, event_data
from schemas.events import TraceData, TraceEvent

NOW_MS = int(time.time() * 1000)


def values(leaves: Any) -> Any:
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
        ),
        max_leaves=12,
    )


json_values = values(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
"""What `orjson.loads` yields (the template variables and outputs of a span are JSON text)."""
any_values = values(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=4)
)
"""Anything, also what no JSON text holds (bytes, NaN, integers past 64 bits)."""
objects = st.dictionaries(st.text(max_size=8), any_values, max_size=4)
names = st.sampled_from(["support_router", "a.b-c_1", "", "-x", "x y", "x\n", "é", "a" * 255, "a" * 256])
times = st.sampled_from(
    [0, 946_684_800_000, 946_684_800_001, NOW_MS, NOW_MS + 86_400_000, 10**17]
) | st.integers(min_value=-(10**15), max_value=10**16)


def model_json(*args: Any, **fields: Any) -> bytes:
    id, ms, source, max_event_bytes = args
    return build_event_json(TraceEvent, id, event_data(TraceData, **fields), ms, source, max_event_bytes)[1]


def outcome(write: Any, *args: Any, **fields: Any) -> bytes | str:
    """The bytes, or the error: Unmappable with its reason (or whatever else the model raises)."""
    try:
        return bytes(write(*args, **fields))
    except Unmappable as reason:
        return f"Unmappable({reason})"
    except Exception as error:
        return type(error).__name__


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    id=st.sampled_from(["otel:ab:cd", "", "x" * 512, "x" * 513]),
    ms=times,
    source=st.sampled_from(["test/otel", ""]),
    max_event_bytes=st.sampled_from([300, 512 * 1024]),
    prompt=names,
    prompt_version=st.none() | st.integers(min_value=-1, max_value=2**64) | st.booleans(),
    trace_id=st.sampled_from(["ab:cd", "", "t" * 512, "t" * 513]),
    inputs=objects | any_values,
    outputs=st.text(max_size=20) | objects | any_values,
    model=st.none() | st.text(max_size=10) | st.integers(),
    latency_ms=st.floats() | st.integers(min_value=-5, max_value=5),
)
def test_the_same_bytes_or_the_same_reason_as_the_model(**fields: Any) -> None:
    args = (fields.pop("id"), fields.pop("ms"), fields.pop("source"), fields.pop("max_event_bytes"))
    assert outcome(trace_event_json, *args, **fields) == outcome(model_json, *args, **fields)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    ms=st.integers(min_value=946_684_860_000, max_value=NOW_MS),
    version=st.none() | st.integers(min_value=1, max_value=2**63 - 1),
    inputs=st.dictionaries(st.text(max_size=8), json_values, min_size=1, max_size=4),
    outputs=st.text(min_size=1, max_size=20),
    latency_ms=st.floats(min_value=0, allow_infinity=False),
)
def test_values_of_known_types_are_written_alike(
    ms: int, version: int | None, inputs: dict[str, Any], outputs: str, latency_ms: float
) -> None:
    """The values a mapped span carries (the fast path's domain: the model is not called) are
    written as the model writes them."""
    fields = dict(
        prompt="support_router",
        prompt_version=version,
        trace_id="ab:cd",
        inputs=inputs,
        outputs=outputs,
        model="m",
        latency_ms=latency_ms,
    )
    args = ("otel:ab:cd", ms, "test/otel", 512 * 1024)
    with mock.patch("handlers.trace_json.build_event_json", side_effect=AssertionError("not the fast path")):
        fast = trace_event_json(*args, **fields)  # type: ignore[arg-type]
    assert fast == model_json(*args, **fields)
