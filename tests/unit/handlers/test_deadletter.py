"""Dead-letter records: classification, truncation, encoding."""

from __future__ import annotations

import base64

import pytest

from handlers.deadletter import dead_letter
from schemas import InvalidEvent, parse_event


@pytest.mark.parametrize(
    ("raw", "reason", "stage"),
    [
        (b"\x00\xff garbage", "not_json", "parse"),
        (b'{"specversion": "1.0"}', "bad_envelope", "validate"),
        (b'{"type": "gepa.nope.v1"}', "unknown_type", "validate"),
    ],
)
def test_classified_record(raw: bytes, reason: str, stage: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw)
    record = dead_letter(
        raw,
        topic="gepa.traces",
        partition=2,
        offset=41,
        key=b"p",
        reason=caught.value.reason,
        error=str(caught.value),
    )
    assert record.data.reason == reason
    assert record.data.stage == stage
    assert (record.data.source_topic, record.data.partition, record.data.offset, record.data.key) == (
        "gepa.traces",
        2,
        41,
        "p",
    )
    assert record.id == "dlq:gepa.traces:2:41"  # a redelivered bad record yields the same dead letter id
    assert parse_event(record.to_json()) == record


def test_binary_payloads_are_base64_and_long_ones_truncated() -> None:
    raw = b"\xff" * 100
    record = dead_letter(
        raw, topic="t", partition=0, offset=0, key=None, reason="not_json", error="x", max_payload=10
    )
    assert record.data.payload_encoding == "base64"
    assert base64.b64decode(record.data.payload) == raw[:10]
    assert record.data.payload_truncated
