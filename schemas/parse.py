"""Bytes off the wire -> a typed event, or `InvalidEvent` saying which field is wrong and why.

The parser accepts only what every later stage can carry: the windows store facts with
orjson, snapshots hash and ship examples as JSON, dead letters quote the payload. So a
record must be strict UTF-8 JSON (no lone surrogates, no NaN/Infinity, numbers within a
double), nested at most `MAX_DEPTH` containers deep, with a plausible RFC 3339 `time`.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeAlias

import orjson
from pydantic import TypeAdapter, ValidationError

from schemas.errors import GepaStreamError
from schemas.events import EVENT_CLASSES, CloudEvent, DeadLetterReason, Event, SnapshotChunkEvent

MAX_DEPTH = 64
"""Objects and arrays nested in one event, the event object itself counting as 1 (so
`data.inputs` is at depth 3): far above real traces, far below what orjson can write (254).
A snapshot chunk holds the same inputs 2 levels deeper (`data.examples.N.inputs`), so it is
allowed 2 more."""

_INT_MIN, _UINT_MAX = -(2**63), 2**64 - 1
_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)
_UNION_MEMBER_NAMES = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


class InvalidEvent(GepaStreamError, ValueError):
    """A record that is not a valid event; `reason` is the dead-letter category."""

    def __init__(self, reason: DeadLetterReason, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.reason: DeadLetterReason = reason
        self.field = field
        self.detail = message


def parse_event(raw: bytes | str | None, *, max_bytes: int | None = None) -> CloudEvent[Any]:
    """Validate one CloudEvents JSON record (`None` is a Kafka tombstone: no event).

    1. size, 2. strict JSON (orjson), 3. nesting depth, 4. the pydantic models. Only a
    failure takes the slow path that classifies the problem for the dead-letter queue.
    """
    if raw is None:
        raise InvalidEvent(
            "null_value", "the record has no value (a tombstone); events are never deleted by key"
        )
    if max_bytes is not None and len(raw) > max_bytes:
        raise InvalidEvent("oversize", f"record of {len(raw)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        obj = _classify_json(raw, exc)
    _check_depth(raw, obj)
    if not isinstance(obj, dict):
        raise InvalidEvent("bad_envelope", f"expected a JSON object, got {type(obj).__name__}")
    try:
        return _EVENT_ADAPTER.validate_python(obj)
    except ValidationError:
        pass
    return _classify_event(obj)


# -- 2, 3: JSON the pipeline can carry --------------------------------------------------------


def _classify_json(raw: bytes | str, strict_error: Exception) -> Any:
    """Why strict JSON parsing failed: not UTF-8, not JSON, too deep, or JSON that cannot be
    carried (a lone surrogate, a number out of range); never returns normally."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray, memoryview)) else raw
        lax = json.loads(text, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise InvalidEvent("not_json", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise InvalidEvent("too_deep", f"JSON nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, int literals beyond Python's digit limit
        raise InvalidEvent("not_json", f"not valid JSON ({exc})") from None
    problem = _walk(lax, _depth_limit(lax))
    if problem is not None:
        raise problem
    raise InvalidEvent("not_json", f"not valid JSON ({strict_error})")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _check_depth(raw: bytes | str, obj: Any) -> None:
    """Walk only records that have more containers than `MAX_DEPTH` (a cheap upper bound)."""
    limit = _depth_limit(obj)
    brackets = raw.count("{") + raw.count("[") if isinstance(raw, str) else raw.count(b"{") + raw.count(b"[")
    if brackets > limit and _deeper_than(obj, limit):
        problem = _walk(obj, limit)  # names the path
        if problem is not None:
            raise problem


def _deeper_than(obj: Any, limit: int) -> bool:
    """Level by level over containers only: the quick check for the common wide, shallow event."""
    level, depth = [obj], 1
    while level:
        if depth > limit:
            return True
        children: list[Any] = []
        for node in level:
            children.extend(
                c for c in (node.values() if isinstance(node, dict) else node) if isinstance(c, (dict, list))
            )
        level, depth = children, depth + 1
    return False


def _depth_limit(obj: Any) -> int:
    return (
        MAX_DEPTH + 2 if isinstance(obj, dict) and obj.get("type") == SnapshotChunkEvent.TYPE else MAX_DEPTH
    )


_Path: TypeAlias = "tuple[_Path, str | int] | None"


def _walk(obj: Any, limit: int) -> InvalidEvent | None:
    """The first value too deep or not representable (lone surrogate, number out of range).
    Paths are linked `(parent, key)` pairs, spelled out only for the problem found."""
    stack: list[tuple[Any, int, _Path]] = [(obj, 1, None)]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > limit:
                return InvalidEvent("too_deep", f"JSON nested more than {limit} levels deep", _spell(path))
            for key, child in value.items() if isinstance(value, dict) else enumerate(value):
                if isinstance(key, str) and not _encodable(key):
                    return InvalidEvent(
                        "unrepresentable",
                        "the key holds a lone surrogate (not UTF-8 encodable)",
                        _spell((path, key)),
                    )
                stack.append((child, depth + 1, (path, key)))
        elif isinstance(value, str) and not _encodable(value):
            return InvalidEvent(
                "unrepresentable", "holds a lone surrogate (not UTF-8 encodable)", _spell(path)
            )
        elif isinstance(value, float) and not math.isfinite(value):
            return InvalidEvent("unrepresentable", "a number beyond the range of a double", _spell(path))
        elif isinstance(value, int) and not _INT_MIN <= value <= _UINT_MAX:
            return InvalidEvent("unrepresentable", "an integer beyond 64 bits", _spell(path))
    return None


def _spell(path: _Path) -> str | None:
    """`a.b.0.c` (keys made printable), shortened in the middle past 200 characters."""
    parts: list[str] = []
    while path is not None:
        path, key = path
        parts.append(key.encode("utf-8", "backslashreplace").decode() if isinstance(key, str) else str(key))
    joined = ".".join(reversed(parts))
    return (joined if len(joined) <= 200 else f"{joined[:96]}...{joined[-96:]}") or None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- 4: the event models ----------------------------------------------------------------------


def _classify_event(obj: dict[str, Any]) -> CloudEvent[Any]:
    event_type = obj.get("type")
    cls = EVENT_CLASSES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        if "type" not in obj:
            raise InvalidEvent("bad_envelope", "is required", "type")
        known = ", ".join(EVENT_CLASSES)
        raise InvalidEvent("unknown_type", f"unknown event type {event_type!r} (known: {known})", "type")
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> InvalidEvent:
    """The first error as `field: problem`, sorted into envelope, time and data."""
    errors = exc.errors(include_url=False)
    error = next((e for e in errors if e["loc"] and e["loc"][0] != "data"), errors[0])
    loc = [str(part) for part in error["loc"] if not _is_union_tag(part)]
    field = ".".join(loc) if loc else None
    reason: DeadLetterReason = "invalid_data" if loc and loc[0] == "data" and len(loc) > 1 else "bad_envelope"
    if loc == ["time"] and error["type"] != "missing":
        reason = "bad_time"
    return InvalidEvent(reason, _message(error), field)


def _is_union_tag(part: Any) -> bool:
    """Pydantic names union members in error locations (`str`, `dict[str,any]`); users never do."""
    return isinstance(part, str) and (part in _UNION_MEMBER_NAMES or "[" in part)


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a field of this event type"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    value = error.get("input")
    if (
        kind not in ("model_type", "dict_type", "value_error")
        and isinstance(value, (str, int, float))
        and len(str(value)) <= 80
    ):
        message = f"{message} (got {value!r})"
    return message
