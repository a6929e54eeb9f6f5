"""Bytes off the wire -> a typed event, or `InvalidEvent` saying which field is wrong and why."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from schemas.events import EVENT_CLASSES, CloudEvent, DeadLetterReason, Event

_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)
_UNION_MEMBER_NAMES = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


class InvalidEvent(ValueError):
    """A record that is not a valid event; `reason` is the dead-letter category."""

    def __init__(self, reason: DeadLetterReason, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.reason: DeadLetterReason = reason
        self.field = field
        self.detail = message


def parse_event(raw: bytes | str, *, max_bytes: int | None = None) -> CloudEvent[Any]:
    """Validate one CloudEvents JSON record.

    The common case is a single pydantic pass over the bytes; only a failure
    takes the slow path that classifies the problem for the dead-letter queue.
    """
    if max_bytes is not None and len(raw) > max_bytes:
        raise InvalidEvent("oversize", f"record of {len(raw)} bytes exceeds the limit of {max_bytes} bytes")
    try:
        return _EVENT_ADAPTER.validate_json(raw)  # type: ignore[no-any-return]
    except ValidationError:
        pass
    return _classify(raw)


def _classify(raw: bytes | str) -> CloudEvent[Any]:
    obj = _decode_json(raw)
    if not isinstance(obj, dict):
        raise InvalidEvent("bad_envelope", f"expected a JSON object, got {type(obj).__name__}")
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


def _decode_json(raw: bytes | str) -> Any:
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray, memoryview)) else raw
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise InvalidEvent("not_json", f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise InvalidEvent("not_json", "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int literals beyond Python's digit limit
        raise InvalidEvent("not_json", f"not valid JSON ({exc})") from None


def _invalid(exc: ValidationError) -> InvalidEvent:
    """The first error as `field: problem`, sorted into envelope vs data."""
    errors = exc.errors(include_url=False)
    error = next((e for e in errors if e["loc"] and e["loc"][0] != "data"), errors[0])
    loc = [str(part) for part in error["loc"] if not _is_union_tag(part)]
    field = ".".join(loc) if loc else None
    reason: DeadLetterReason = "invalid_data" if loc and loc[0] == "data" and len(loc) > 1 else "bad_envelope"
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
    if kind not in ("model_type", "dict_type", "value_error") and isinstance(value, (str, int, float)) and len(str(value)) <= 80:
        message = f"{message} (got {value!r})"
    return message

