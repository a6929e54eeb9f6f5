"""Freezing a window for an optimization request: chunks that fit in Kafka records."""

from __future__ import annotations

import hashlib

from schemas import event_ids
from schemas.events import Example, SnapshotChunkData, SnapshotChunkEvent

CHUNK_BYTES = 256 * 1024


def snapshot_chunks(
    request_id: str, prompt: str, examples: list[Example], max_bytes: int = CHUNK_BYTES
) -> list[SnapshotChunkEvent]:
    """Split examples into chunk events of at most ~`max_bytes` of examples each (an example
    larger than that travels alone; events are capped upstream by `max_event_bytes`)."""
    groups: list[list[Example]] = [[]]
    size = 0
    for example in examples:
        encoded = example.model_dump_json().encode()
        if groups[-1] and size + len(encoded) > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(example)
        size += len(encoded)
    return [
        SnapshotChunkEvent.build(
            SnapshotChunkData(
                request_id=request_id, prompt=prompt, chunk=i, n_chunks=len(groups), examples=group
            ),
            id=event_ids.snapshot_chunk(request_id, i),
        )
        for i, group in enumerate(groups)
    ]


def snapshot_sha256(examples: list[Example]) -> str:
    """The digest of a frozen window, for the reader to verify what it reassembled."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(example.model_dump_json().encode())
    return digest.hexdigest()
