"""OTLP trace payloads -> plain span records (pure: bytes in, values out).

Both wire forms of OTLP: protobuf (`TracesData`, which the Collector's Kafka exporter writes per
batch, and `ExportTraceServiceRequest` of OTLP/HTTP share its layout) and OTLP JSON, whose trace and
span ids are hex strings (protobuf's JSON mapping expects base64, so they are converted first).
A payload that cannot be decoded raises `BadPayload` naming the reason, which callers count.
Spans are read through `_READ`, the same messages with span (and span event) attributes declared
`map<string, AnyValue>`: a map entry's wire form is a `KeyValue`'s, so the bytes parse alike (the last
of a repeated key wins), and an attribute is then found by key in C instead of by a Python loop.
Protobuf payloads are first read by `_otlp_wire` (C, when built), which builds only the attributes the
caller `Reads`, and leaves any payload it does not read exactly as protobuf would to this path.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from schemas.errors import GepaStreamError

Encoding = Literal["otlp_proto", "otlp_json"]
ENCODINGS: tuple[Encoding, ...] = ("otlp_proto", "otlp_json")
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _read_schema() -> Any:
    """`TracesData` with `Span.attributes` and `Span.Event.attributes` as maps, in a pool of its own."""
    files = {}
    for module in (common_pb2, resource_pb2, trace_pb2):
        files[module] = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(files[module])
    trace = files[trace_pb2]
    span = next(m for m in trace.message_type if m.name == "Span")
    event = next(m for m in span.nested_type if m.name == "Event")
    for message, scope, number in ((span, "Span", 9), (event, "Span.Event", 3)):
        entry = message.nested_type.add(name="AttributesEntry")
        entry.options.map_entry = True
        key = entry.field.add(name="key", number=1)
        key.label, key.type = key.LABEL_OPTIONAL, key.TYPE_STRING
        value = entry.field.add(name="value", number=2, type_name=".opentelemetry.proto.common.v1.AnyValue")
        value.label, value.type = value.LABEL_OPTIONAL, value.TYPE_MESSAGE
        next(
            f for f in message.field if f.number == number
        ).type_name = f".{trace.package}.{scope}.AttributesEntry"
    pool = descriptor_pool.DescriptorPool()
    for proto in files.values():
        pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{trace.package}.TracesData"))


_READ = _read_schema()
log = logging.getLogger(__name__)


_F = descriptor.FieldDescriptor
_KINDS = {
    _F.TYPE_STRING: "string",
    _F.TYPE_BYTES: "bytes",
    _F.TYPE_MESSAGE: "message",
    _F.TYPE_GROUP: "group",
    **dict.fromkeys((_F.TYPE_FIXED64, _F.TYPE_SFIXED64, _F.TYPE_DOUBLE), "fixed64"),
    **dict.fromkeys((_F.TYPE_FIXED32, _F.TYPE_SFIXED32, _F.TYPE_FLOAT), "fixed32"),
}


def _schema(message: Any, into: dict[str, dict[int, tuple[str, str, int]]]) -> dict[str, Any]:
    """{message: {field number: (wire kind, message type, repeated)}} of `message` and those it holds,
    as `_otlp_wire.schema()` gives its own."""
    fields = into[message.full_name] = {}
    for f in message.fields:
        kind = _KINDS.get(f.type, "varint")
        fields[f.number] = (kind, f.message_type.full_name if f.message_type else "", int(f.is_repeated))
        if f.message_type and f.message_type.full_name not in into:
            _schema(f.message_type, into)
    return into


def _wire_reader() -> Any:
    """`_otlp_wire` if it was built and reads the installed opentelemetry-proto's schema (a field it
    did not know would go unchecked), else None: protobuf then reads every payload."""
    try:
        import handlers._otlp_wire as _otlp_wire
    except ImportError:
        log.info("handlers._otlp_wire is not built: OTLP protobuf payloads are read by protobuf alone")
        return None
    if sys.byteorder != "little" or _otlp_wire.schema() != _schema(TracesData.DESCRIPTOR, {}):
        log.warning("handlers._otlp_wire reads another OTLP schema than the installed one: not used")
        return None
    return _otlp_wire


WIRE = _wire_reader()


class BadPayload(GepaStreamError, ValueError):
    """An OTLP payload that cannot be decoded; the message is the counted reason."""


@dataclass(slots=True)
class SpanEvent:
    """One event recorded on a span (e.g. a GenAI evaluation result)."""

    name: str
    time_ns: int
    attributes: Mapping[str, Any]


class SpanAttributes(Mapping[str, Any]):
    """A span's attributes (a `_READ` map of AnyValue), each converted to a Python value only when
    read: the mapping reads a handful of the dozens an instrumented LLM span carries."""

    __slots__ = ("_map",)

    def __init__(self, attributes: Any) -> None:
        self._map = attributes

    def __getitem__(self, key: str) -> Any:
        value = self._map.get(key)
        if value is None:
            raise KeyError(key)
        return any_value(value)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of `key`, or `default` (no KeyError raised and caught, unlike Mapping.get)."""
        value = self._map.get(key)
        if value is None:
            return default
        return value.string_value or any_value(value)  # most are non-empty strings: no oneof lookup

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)


@dataclass(frozen=True)
class Reads:
    """What a caller reads of spans: a span with none of the `markers` attribute keys is only
    counted; of the others, the attributes named in `keys` or starting with a `prefixes` entry, and
    the span events' `event_keys` (`_otlp_wire` builds only those; protobuf's path has them all).
    `keys` None: every attribute, which only protobuf's path gives."""

    markers: tuple[str, ...]
    keys: tuple[str, ...] | None = None
    prefixes: tuple[str, ...] = ()
    event_keys: tuple[str, ...] = ()

    @cached_property
    def wire_keys(self) -> tuple[str, ...]:
        """The markers first, then the other keys (as `_otlp_wire.scan` takes them)."""
        return self.markers + tuple(k for k in dict.fromkeys(self.keys or ()) if k not in self.markers)


EVERYTHING = Reads(markers=())
"""Every span, with every attribute."""


@dataclass(slots=True)
class Span:
    """One decoded span: hex ids, the instrumentation scope, times, its attributes."""

    trace_id: str
    span_id: str
    name: str
    scope: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]
    events: list[SpanEvent] = field(default_factory=list)


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as a Python value (arrays -> lists, key-value lists -> dicts)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value
    return None


def attributes(pairs: Any) -> dict[str, Any]:
    """Repeated KeyValue -> dict (the last value of a repeated key wins)."""
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in pairs:
        out[kv.key] = any_value(kv.value)
    return out


def _hex_ids_to_base64(node: Any) -> None:
    """OTLP JSON's hex trace/span ids -> the base64 protobuf's JSON mapping reads, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise BadPayload("bad_otlp_json") from None
            else:
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)


def parse_traces(payload: bytes, encoding: Encoding, reading: bool = False) -> Any:
    """A `TracesData` (or OTLP/HTTP export request) from its protobuf or OTLP JSON bytes; `reading`:
    as a `_READ` message, whose span attributes are maps."""
    message = _READ() if reading and encoding == "otlp_proto" else TracesData()
    if encoding == "otlp_proto":
        try:
            message.ParseFromString(payload)
        except (DecodeError, RecursionError, ValueError):
            raise BadPayload("not_protobuf") from None
        return message
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadPayload("not_json") from None
    if not isinstance(raw, dict):
        raise BadPayload("bad_otlp_json")
    try:
        _hex_ids_to_base64(raw)
        json_format.ParseDict(raw, message, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, TypeError, ValueError):
        raise BadPayload("bad_otlp_json") from None
    return _READ.FromString(message.SerializeToString()) if reading else message


def wire_spans(payload: bytes, reads: Reads) -> tuple[list[Span], int] | None:
    """`_otlp_wire`'s reading of a protobuf payload, as `read_spans` returns it, its spans holding
    only the attributes `reads` names; None where protobuf reads: the reader is not built, every
    attribute is asked for, or it left the payload to protobuf."""
    if WIRE is None or reads.keys is None:
        return None
    return WIRE.scan(
        payload, Span, SpanEvent, reads.wire_keys, len(reads.markers), reads.prefixes, reads.event_keys
    )


def read_spans(payload: bytes, encoding: Encoding, reads: Reads) -> tuple[list[Span], int]:
    """The spans of an OTLP payload, flattened, and how many were skipped unread: a span with none of
    the `reads.markers` among its attribute keys (an HTTP or database span, say) is only counted.
    A protobuf payload goes to `wire_spans` first; what it leaves protobuf reads, and its verdict on a
    bad payload stands."""
    if encoding == "otlp_proto" and (read := wire_spans(payload, reads)) is not None:
        return read
    markers = reads.markers
    spans = []
    skipped = 0
    for resource_spans in parse_traces(payload, encoding, reading=True).resource_spans:
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                pairs = span.attributes
                if markers and not any(map(pairs.__contains__, markers)):
                    skipped += 1
                    continue
                spans.append(
                    Span(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        name=span.name,
                        scope=scope,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=SpanAttributes(pairs),
                        events=[
                            SpanEvent(e.name, e.time_unix_nano, SpanAttributes(e.attributes))
                            for e in span.events
                        ]
                        if len(span.events)
                        else [],
                    )
                )
    return spans, skipped
