"""`handlers/_otlp_wire.c` reads OTLP protobuf as protobuf does: on spans recorded by the real
instrumentation libraries, on generated ones (every attribute value kind, repeated keys, events), and
on thousands of mutated payloads it either answers exactly as `read_spans`' protobuf path, or leaves
the payload to it (None); it never answers for a payload protobuf refuses."""

from __future__ import annotations

import random
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status, TracesData

import handlers.otlp as otlp
from handlers.otel_mapping import OPENLLMETRY_PREFIX, OtelOptions, payload_records
from handlers.otlp import BadPayload, Reads, read_spans
from tests.otel_app import LIBRARIES, deep_span_payload, record_calls, traces_data

READS = OtelOptions("test/otel", managed=frozenset({"support_router"})).reads
WIRE = otlp.WIRE


def protobuf_only() -> Any:
    """`read_spans` without the wire reader, as where it is not built."""
    return mock.patch.object(otlp, "WIRE", None)


def by_protobuf(payload: bytes, reads: Reads = READS) -> tuple[list[otlp.Span], int] | str:
    """`read_spans`' protobuf path: (spans, skipped), or the BadPayload reason."""
    with protobuf_only():
        try:
            return read_spans(payload, "otlp_proto", reads)
        except BadPayload as reason:
            return str(reason)


def same(value: Any) -> str:
    """A value's repr: tells -0.0 from 0.0, True from 1, and NaN equals NaN."""
    return repr(value)


def wanted(key: str, keys: tuple[str, ...], prefixes: tuple[str, ...]) -> bool:
    return key in keys or key.startswith(prefixes)


def assert_reads_alike(payload: bytes, reads: Reads = READS) -> bool:
    """The wire reader's answer is protobuf's on every attribute `reads` names (True), or it left
    the payload to protobuf (False)."""
    assert WIRE is not None
    answer = otlp.wire_spans(payload, reads)
    reference = by_protobuf(payload, reads)
    if answer is None:
        return False
    assert not isinstance(reference, str), (
        f"the wire reader answered for a payload protobuf refuses: {reference}"
    )
    spans, skipped = answer
    assert skipped == reference[1]
    assert len(spans) == len(reference[0])
    for mine, theirs in zip(spans, reference[0], strict=True):
        assert (mine.trace_id, mine.span_id, mine.name, mine.scope, mine.start_ns, mine.end_ns) == (
            theirs.trace_id,
            theirs.span_id,
            theirs.name,
            theirs.scope,
            theirs.start_ns,
            theirs.end_ns,
        )
        expected = {
            k: same(theirs.attributes[k])
            for k in theirs.attributes
            if wanted(k, reads.wire_keys, reads.prefixes)
        }
        assert {k: same(v) for k, v in mine.attributes.items()} == expected
        assert [(e.name, e.time_ns) for e in mine.events] == [(e.name, e.time_ns) for e in theirs.events]
        for event, reference_event in zip(mine.events, theirs.events, strict=True):
            assert {k: same(v) for k, v in event.attributes.items()} == {
                k: same(reference_event.attributes[k])
                for k in reference_event.attributes
                if k in reads.event_keys
            }
    return True


def test_the_wire_reader_is_built_and_reads_the_installed_schema() -> None:
    """`make install` builds it; `handlers.otlp` uses it only if its schema is the installed one."""
    import handlers._otlp_wire as _otlp_wire

    assert _otlp_wire.schema() == otlp._schema(TracesData.DESCRIPTOR, {})
    assert WIRE is _otlp_wire


@pytest.fixture(scope="module")
def recorded_payloads() -> list[bytes]:
    """Spans of three calls through each instrumentation library, one payload per library."""
    apps = record_calls(3, version=2)
    return [traces_data(apps[library].spans(), "otlp_proto") for library in LIBRARIES]


def test_spans_of_the_instrumentation_libraries_read_alike_and_map_to_the_same_events(
    recorded_payloads: list[bytes],
) -> None:
    options = OtelOptions("test/otel", managed=frozenset({"support_router"}))
    for payload in recorded_payloads:
        assert assert_reads_alike(payload), "a real payload was left to protobuf"
        native = payload_records([payload], "otlp_proto", options)
        with protobuf_only():
            reference = payload_records([payload], "otlp_proto", options)
        assert native == reference
        assert native[1].mapped == 3


# -- generated spans ---------------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        *READS.wire_keys[:12],
        "gen_ai.prompt.0.content",
        f"{OPENLLMETRY_PREFIX}workflow.name",
        "http.method",
        "",
        "é",
    ]
)
TEXT = st.text(max_size=20)


def any_values(depth: int = 3) -> st.SearchStrategy[AnyValue]:
    scalars = st.one_of(
        TEXT.map(lambda v: AnyValue(string_value=v)),
        st.booleans().map(lambda v: AnyValue(bool_value=v)),
        st.integers(-(2**63), 2**63 - 1).map(lambda v: AnyValue(int_value=v)),
        st.floats(allow_nan=True).map(lambda v: AnyValue(double_value=v)),
        st.binary(max_size=8).map(lambda v: AnyValue(bytes_value=v)),
        st.just(AnyValue()),
    )
    if depth == 0:
        return scalars
    inner = any_values(depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=3).map(lambda vs: AnyValue(array_value={"values": vs})),
        st.lists(st.tuples(KEYS, inner), max_size=3).map(
            lambda kvs: AnyValue(kvlist_value={"values": [KeyValue(key=k, value=v) for k, v in kvs]})
        ),
    )


def key_values() -> st.SearchStrategy[list[KeyValue]]:
    return st.lists(
        st.tuples(KEYS, any_values(), st.booleans()).map(
            lambda t: KeyValue(key=t[0], value=t[1]) if t[2] else KeyValue(key=t[0])
        ),
        max_size=8,
    )


spans = st.builds(
    lambda trace_id, span_id, name, times, attributes, events, link, status: Span(
        trace_id=trace_id,
        span_id=span_id,
        name=name,
        start_time_unix_nano=times[0],
        end_time_unix_nano=times[1],
        attributes=attributes,
        events=[
            Span.Event(name=event_name, time_unix_nano=t, attributes=event_attributes)
            for event_name, t, event_attributes in events
        ],
        links=[Span.Link(trace_id=link[0], trace_state=link[1], attributes=link[2], flags=link[3])],
        status=Status(message=status[0], code=status[1]),
    ),
    st.binary(max_size=17),
    st.binary(max_size=9),
    TEXT,
    st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    key_values(),
    st.lists(
        st.tuples(
            st.sampled_from(["gen_ai.evaluation.result", "other"]),
            st.integers(0, 2**64 - 1),
            st.lists(
                st.tuples(st.sampled_from(READS.event_keys), any_values(1)).map(
                    lambda t: KeyValue(key=t[0], value=t[1])
                ),
                max_size=4,
            ),
        ),
        max_size=2,
    ),
    st.tuples(st.binary(max_size=16), TEXT, key_values(), st.integers(0, 2**32 - 1)),
    st.tuples(TEXT, st.integers(0, 2)),
)
"""Spans with every field of the schema: attributes, events, a link and a status."""

traces = st.builds(
    lambda resource, scopes: TracesData(
        resource_spans=[ResourceSpans(resource=Resource(attributes=resource), scope_spans=scopes)]
    ).SerializeToString(),
    key_values(),
    st.lists(
        st.tuples(TEXT, key_values(), st.lists(spans, max_size=3)).map(
            lambda scoped: ScopeSpans(
                scope=InstrumentationScope(name=scoped[0], version="1.0", attributes=scoped[1]),
                spans=scoped[2],
            )
        ),
        max_size=3,
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces)
def test_generated_spans_read_alike(payload: bytes) -> None:
    assert assert_reads_alike(payload)
    assert assert_reads_alike(payload, Reads(markers=(), keys=READS.wire_keys, prefixes=READS.prefixes))


# -- what only protobuf may judge ----------------------------------------------------------------


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (number < 16, payload < 128 bytes)."""
    assert number < 16 and len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def one_span(span: bytes, scope: bytes = b"") -> bytes:
    return field(1, field(2, scope + field(2, span)))


LLM_SPAN = field(9, field(1, b"openinference.span.kind") + field(2, field(1, b"LLM")))


@pytest.mark.parametrize(
    ("case", "payload"),
    [
        ("invalid UTF-8 in an attribute nobody reads", one_span(LLM_SPAN + field(9, field(1, b"x\xff")))),
        ("a UTF-8 surrogate in a span name", one_span(LLM_SPAN + field(5, b"\xed\xa0\x80"))),
        ("an overlong encoding in a status message", one_span(LLM_SPAN + field(15, field(2, b"\xc0\x80")))),
        ("truncated", one_span(LLM_SPAN)[:-3]),
        ("a group wire type", one_span(LLM_SPAN) + b"\x0b\x0c"),
        ("a known field with another wire type", one_span(LLM_SPAN + b"\x28\x01")),
        ("a scope given twice (protobuf merges them)", one_span(LLM_SPAN, field(1, field(1, b"a")) * 2)),
        (
            "an AnyValue with two kinds",
            one_span(field(9, field(1, b"openinference.span.kind") + field(2, b"\x18\x01\x0a\x01x"))),
        ),
        ("nesting deeper than protobuf goes", deep_span_payload(150)),
        ("a varint of more than 64 bits", one_span(LLM_SPAN + b"\x38" + b"\xff" * 9 + b"\x7f")),
    ],
)
def test_what_the_wire_reader_leaves_to_protobuf(case: str, payload: bytes) -> None:
    assert not assert_reads_alike(payload), case


def test_more_keys_than_the_wire_reader_holds_are_left_to_protobuf(recorded_payloads: list[bytes]) -> None:
    """A policy naming hundreds of attributes of its own: protobuf reads, and every span still maps."""
    many = Reads(
        READS.markers, (*READS.wire_keys, *(f"own.{i}" for i in range(300))), READS.prefixes, READS.event_keys
    )
    assert not assert_reads_alike(recorded_payloads[0], many)
    spans, skipped = read_spans(recorded_payloads[0], "otlp_proto", many)
    assert (len(spans), skipped) == (3, 0)


def test_nesting_is_read_alike_up_to_the_wire_readers_depth_and_left_to_protobuf_past_it() -> None:
    """An array level is two messages (AnyValue, ArrayValue): 25 levels are within the wire reader's
    64 messages, 40 past them but within protobuf's 100."""
    reads = Reads(markers=(), keys=("deep",))
    assert assert_reads_alike(deep_span_payload(25), reads)
    assert not isinstance(by_protobuf(deep_span_payload(40), reads), str)
    assert not assert_reads_alike(deep_span_payload(40), reads)


def mutations(payload: bytes, rng: random.Random) -> bytes:
    """One random corruption of `payload`: a byte flipped, bytes cut, inserted or repeated."""
    data = bytearray(payload)
    at = rng.randrange(len(data))
    match rng.randrange(5):
        case 0:
            data[at] ^= 1 << rng.randrange(8)
        case 1:
            del data[at : at + rng.randrange(1, 8)]
        case 2:
            data[at:at] = rng.choice(
                [b"\xff", b"\xed\xa0\x80", b"\x80", b"\x0b", bytes([rng.randrange(256)])]
            )
        case 3:
            data[at] = rng.randrange(256)
        case _:
            end = min(len(data), at + rng.randrange(1, 40))
            data[at:at] = data[at:end]
    return bytes(data)


def test_thousands_of_mutated_payloads_are_read_alike_or_left_to_protobuf(
    recorded_payloads: list[bytes],
) -> None:
    rng = random.Random(22)
    answered = 0
    for i in range(6000):
        payload = recorded_payloads[i % len(recorded_payloads)]
        for _ in range(1 + i % 3):
            payload = mutations(payload, rng)
        answered += assert_reads_alike(payload)
    assert answered > 600, "mutations that keep a payload readable should mostly be read off the wire"
