"""Read a request's frozen window back from the snapshots topic, checked against its digest."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from handlers.snapshot import snapshot_sha256
from schemas.errors import GepaStreamError
from schemas.events import Example, OptimizationEvent, SnapshotChunkEvent
from schemas.parse import InvalidEvent, parse_event

READ_TIMEOUT_S = 30


class SnapshotError(GepaStreamError, RuntimeError):
    """The frozen window cannot be read back intact."""


async def read_snapshot(request: OptimizationEvent, client_options: dict[str, Any]) -> list[Example]:
    """The examples of the snapshot `request` points at, in chunk order; SnapshotError if a chunk
    is missing, belongs to another request, or the whole does not match the digest."""
    ref = request.data.snapshot
    if ref is None:
        raise SnapshotError("the request carries no snapshot")
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options)
    await consumer.start()
    try:
        tp = TopicPartition(ref.topic, ref.partition)
        consumer.assign([tp])
        chunks: dict[int, SnapshotChunkEvent] = {}
        for offset in ref.offsets:
            consumer.seek(tp, offset)
            record = await asyncio.wait_for(consumer.getone(tp), READ_TIMEOUT_S)
            event = parse_event(record.value)
            if not isinstance(event, SnapshotChunkEvent) or event.data.request_id != request.data.request_id:
                raise SnapshotError(
                    f"{ref.topic}/{ref.partition}@{offset} is not a chunk of {request.data.request_id}"
                )
            chunks[event.data.chunk] = event
    except (TimeoutError, KafkaError, InvalidEvent) as exc:
        raise SnapshotError(f"cannot read the snapshot: {exc!r}") from None
    finally:
        await consumer.stop()
    examples = [e for i in sorted(chunks) for e in chunks[i].data.examples]
    if len(examples) != ref.n_examples or snapshot_sha256(examples) != ref.sha256:
        raise SnapshotError("the snapshot read back does not match its digest")
    return examples
