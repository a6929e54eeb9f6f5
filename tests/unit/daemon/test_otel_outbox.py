"""The OTel bridge's outbox: events go to their prompt's partition (murmur2 of the key, as every
Kafka client), in order, in record batches sent as they fill; `flush` sends the rest, closed (so
they do not linger), and returns once every batch is acknowledged."""

from __future__ import annotations

import asyncio

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch

from daemon.otel_bridge import _Outbox
from handlers.otel_mapping import Mapped
from handlers.trace_mapping import build_event_json, event_data
from schemas.events import TraceData, TraceEvent

PARTITIONS = [0, 1, 2, 3, 4, 5]


class FakeProducer:
    """Small batches (a few events each); records what was sent, acknowledges on demand."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, BatchBuilder, asyncio.Future[None]]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(2048, 0)

    async def send_batch(self, builder: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, builder, future))
        return future


def records(n: int) -> list[Mapped]:
    prompts = ["support_router", "refunds", "triage"]
    events = [
        build_event_json(
            TraceEvent,
            f"otel:{i:032x}:{i:016x}",
            event_data(
                TraceData,
                prompt=prompts[i % 3],
                trace_id=f"{i:032x}:{i:016x}",
                inputs={"ticket": f"ticket {i}"},
                outputs="billing",
            ),
            1_795_000_000_000 + i,
            "test/otel",
            512 * 1024,
        )
        for i in range(n)
    ]
    return [Mapped(event.type, event.key or b"", value) for event, value in events]


def test_events_go_to_their_prompts_partition_in_order_and_flush_waits_for_every_ack() -> None:
    producer = FakeProducer()
    mapped = records(60)

    async def scenario() -> None:
        outbox = _Outbox(producer, {TraceEvent.TYPE: "gepa.traces"}, {"gepa.traces": PARTITIONS}, _unused)  # type: ignore[arg-type]
        await outbox.add(mapped[:30])
        filled = len(producer.sent)
        assert filled > 0  # full batches went out before the flush
        await outbox.add(mapped[30:])
        flush = asyncio.ensure_future(outbox.flush())
        await asyncio.sleep(0.01)
        assert not flush.done()  # waiting for the broker
        for *_, future in producer.sent:
            future.set_result(None)
        await flush

    asyncio.run(scenario())
    assert all(builder.closed() for _, _, builder, _ in producer.sent)
    by_partition: dict[int, list[bytes]] = {}
    for topic, partition, builder, _ in producer.sent:
        assert topic == "gepa.traces"
        batch = DefaultRecordBatch(builder._build())
        by_partition.setdefault(partition, []).extend(record.value for record in batch)
    expected: dict[int, list[bytes]] = {}
    for _, key, value in mapped:
        expected.setdefault(DefaultPartitioner()(key, PARTITIONS, PARTITIONS), []).append(value)
    assert by_partition == expected
    assert len(producer.sent) > len(expected)  # several batches per partition: split as they filled


async def _unused(topic: str) -> list[int]:
    raise AssertionError("partitions already known")
