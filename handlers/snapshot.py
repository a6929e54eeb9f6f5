"""Freezing a window for an optimization request: chunks that fit in Kafka records."""

from __future__ import annotations

import hashlib

from schemas.events import Example, SnapshotChunkData, SnapshotChunkEvent

CHUNK_BYTES = 256 * 1024


def snapshot_chunks(
    request_id: str, prompt: str, examples: list[Example], max_bytes: int = CHUNK_BYTES
) -> tuple[list[SnapshotChunkEvent], str]:
    """Split examples into chunk events of at most ~`max_bytes` of examples each (an example
    larger than that travels alone; events are capped upstream by `max_event_bytes`), and
    return them with the sha256 of the whole snapshot."""
    groups: list[list[Example]] = [[]]
    size = 0
    for example in examples:
        encoded = example.model_dump_json().encode()
        if groups[-1] and size + len(encoded) > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(example)
        size += len(encoded)
    chunks = [
        SnapshotChunkEvent.build(
            SnapshotChunkData(request_id=request_id, prompt=prompt, chunk=i, n_chunks=len(groups), examples=group),
            id=f"{request_id}:snapshot:{i}",
        )
        for i, group in enumerate(groups)
    ]
    return chunks, snapshot_sha256(examples)


def snapshot_sha256(examples: list[Example]) -> str:
    """The digest `snapshot_chunks` computes, for a reader to verify what it reassembled."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(example.model_dump_json().encode())
    return digest.hexdigest()
