"""Dead-letter records: what went wrong with a record, and where it came from."""

from __future__ import annotations

import base64

from schemas import event_ids
from schemas.events import DeadLetterData, DeadLetterEvent, DeadLetterReason, DeadLetterStage, PayloadEncoding

MAX_PAYLOAD_BYTES = 16 * 1024

_STAGES: dict[DeadLetterReason, DeadLetterStage] = {
    "null_value": "parse",
    "not_json": "parse",
    "too_deep": "parse",
    "unrepresentable": "parse",
    "oversize": "parse",
    "bad_envelope": "validate",
    "bad_time": "validate",
    "unknown_type": "validate",
    "invalid_data": "validate",
    "unknown_prompt": "route",
    "wrong_topic": "route",
    "handler_error": "handle",
}


def dead_letter(
    raw: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    reason: DeadLetterReason,
    error: str,
    source: str = "gepa-stream",
    max_payload: int = MAX_PAYLOAD_BYTES,
) -> DeadLetterEvent:
    """A DLQ event for one rejected record; the payload is truncated and base64'd if not UTF-8
    (a tombstone's is empty)."""
    raw = raw if raw is not None else b""
    head = raw[:max_payload]
    encoding: PayloadEncoding
    try:
        payload, encoding = head.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(head).decode("ascii"), "base64"
    return DeadLetterEvent.build(
        DeadLetterData(
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=key.decode("utf-8", "replace") if key is not None else None,
            payload=payload,
            payload_encoding=encoding,
            payload_truncated=len(raw) > max_payload,
            reason=reason,
            error=error,
            stage=_STAGES[reason],
        ),
        subject=topic,
        id=event_ids.dead_letter(topic, partition, offset),
        source=source,
    )
