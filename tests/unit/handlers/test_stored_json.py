"""Stored keys and records are exactly as large as their content (orjson's are 4 KB buffers)."""

from __future__ import annotations

import tracemalloc

import orjson

from handlers.facts import RatingFact, TraceFact, encode_record, record_key
from handlers.stored_json import stored_json
from handlers.watches import vote_key


def traced_bytes_each(make: object, n: int = 500) -> float:
    """Bytes traced per object while n results of `make(i)` are alive."""
    tracemalloc.start()
    try:
        kept = [make(i) for i in range(n)]  # type: ignore[operator]
        total = sum(stat.size for stat in tracemalloc.take_snapshot().statistics("filename"))
    finally:
        tracemalloc.stop()
    assert len(kept) == n
    return total / n


def test_stored_json_is_the_same_json() -> None:
    value = {"prompt": "router", "votes": [1, 2.5, None], "text": "é\u2028"}
    assert stored_json(value) == orjson.dumps(value)
    assert orjson.loads(stored_json(value)) == value


def test_a_stored_key_holds_its_length_not_a_buffer() -> None:
    per_key = traced_bytes_each(lambda i: record_key("router", f"tr-{i}"))
    assert per_key < 200  # ~60 B of JSON; orjson.dumps keeps ~4,100 B
    assert traced_bytes_each(lambda i: vote_key("router", f"tr-{i}", "sme")) < 200


def test_a_stored_record_holds_its_length_not_a_buffer() -> None:
    trace = TraceFact("router", "tr-1", 1.0, {"ticket": "refund please"}, "billing")
    vote = RatingFact("router", "tr-1", "sme", 2.0, "ev-1", 0.75)
    record = encode_record(trace, [vote])
    assert traced_bytes_each(lambda i: encode_record(trace, [vote])) < len(record) + 200
