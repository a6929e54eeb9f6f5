"""Snapshots split into chunks that fit in Kafka records, and verify on reassembly."""

from __future__ import annotations

from handlers.snapshot import snapshot_chunks, snapshot_sha256
from schemas import Example, parse_event
from tests.unit.handlers.helpers import T0


def test_chunks_stay_under_the_limit_and_reassemble() -> None:
    examples = [Example(trace_id=f"t{i}", inputs={"q": "x" * 500}, outputs="y", time=T0) for i in range(200)]
    chunks = snapshot_chunks("req", "p", examples, max_bytes=20_000)
    assert len(chunks) > 1
    assert all(len(c.to_json()) < 25_000 for c in chunks)
    assert [c.data.chunk for c in chunks] == list(range(len(chunks)))
    assert {c.data.n_chunks for c in chunks} == {len(chunks)}
    again = [e for c in chunks for e in parse_event(c.to_json()).data.examples]
    assert again == examples
    assert snapshot_sha256(again) == snapshot_sha256(examples)


def test_an_empty_snapshot_is_one_empty_chunk() -> None:
    chunks = snapshot_chunks("req", "p", [])
    assert len(chunks) == 1 and chunks[0].data.examples == []
