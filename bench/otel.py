"""The OTel bridge's throughput, side by side with raw decoding of the same bytes, in one run.

    python bench/otel.py [--calls 200] [--copies 100] [--batch 50] [--repeat 2]

Spans come from the real OpenInference instrumentation of the `openai` client calling the fake
provider (`--calls` calls), copied with fresh span ids to `--calls` x `--copies` spans, written as
the Collector's Kafka exporter writes them: `TracesData` records of `--batch` spans, `otlp_proto`,
to a topic of the embedded broker. Then, best of `--repeat` rounds:

  raw   an aiokafka consumer fetches every record and decodes it (`TracesData.FromString`)
  bridge the bridge's consumer loop (`daemon/otel_bridge.py`): fetch, decode, map, produce the
        trace events to `gepa.traces`, wait for the acks, commit (its own consumer group; the
        group join is excluded: spans/s from the first batch handled to the last)

and the same two without Kafka (decoding and mapping the bytes in memory). Target: bridge >= 50 %
of raw.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas.third_parties import quiet_third_parties  # noqa: E402

quiet_third_parties()

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from kafka import KafkaAdminClient, KafkaProducer  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData  # noqa: E402

from daemon.admin import ensure_topics  # noqa: E402
from daemon.broker import EmbeddedBroker  # noqa: E402
from daemon.otel_bridge import BridgeOptions, OtelBridge, translate  # noqa: E402
from daemon.settings import Settings, load_settings  # noqa: E402
from handlers.otel_mapping import OtelOptions  # noqa: E402
from optimization.offline.provider import FakeProvider  # noqa: E402
from tests.otel_app import OtelApp, traces_data  # noqa: E402

PROMPT = "support_router"


def records(calls: int, copies: int, batch: int) -> list[bytes]:
    """`calls` x `copies` real LLM spans (fresh span ids per copy) in `TracesData` records of `batch` spans."""
    with FakeProvider() as provider:
        app = OtelApp("openinference", provider)
        with app.instrumented():
            app.serve(calls)
    template = TracesData.FromString(traces_data(app.spans(), "otlp_proto"))
    spans = list(template.resource_spans[0].scope_spans[0].spans)
    rng = random.Random(7)
    out = []
    copy = TracesData()
    copy.CopyFrom(template)
    target = copy.resource_spans[0].scope_spans[0].spans
    pending = []
    for _ in range(copies):
        for span in spans:
            pending.append(span)
            if len(pending) == batch:
                del target[:]
                for original in pending:
                    added = target.add()
                    added.CopyFrom(original)
                    added.span_id = rng.randbytes(8)
                out.append(copy.SerializeToString())
                pending = []
    return out


def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 3, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_request_size=4_000_000)
    for payload in payloads:
        producer.send(topic, payload)
    producer.flush()
    producer.close()


async def raw(bootstrap: str, topic: str, n_records: int) -> float:
    """Spans/s of an aiokafka consumer fetching and decoding every record."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    seen = spans = 0
    start = None
    while seen < n_records:
        for batch in (await consumer.getmany(timeout_ms=500, max_records=1000)).values():
            start = start or time.perf_counter()
            for record in batch:
                message = TracesData.FromString(record.value or b"")
                spans += sum(len(s.spans) for r in message.resource_spans for s in r.scope_spans)
            seen += len(batch)
    elapsed = time.perf_counter() - (start or time.perf_counter())
    await consumer.stop()
    return spans / elapsed


async def bridge(settings: Settings, topic: str, n_records: int) -> float:
    """Spans/s of the bridge's loop (fetch, decode, map, produce, acks, commit), group join excluded."""
    the_bridge = OtelBridge(
        settings, OtelOptions("bench", managed=frozenset({PROMPT})), BridgeOptions(topic, "otlp_proto")
    )
    stop = asyncio.Event()
    handled = {"records": 0, "first": 0.0, "last": 0.0}
    handle = the_bridge._handle_batch

    async def timed(consumer: Any, tp: Any, payloads: list[bytes], last_offset: int) -> None:
        handled["first"] = handled["first"] or time.perf_counter()
        await handle(consumer, tp, payloads, last_offset)
        handled["records"] += len(payloads)
        handled["last"] = time.perf_counter()
        if handled["records"] >= n_records:
            stop.set()

    the_bridge._handle_batch = timed  # type: ignore[method-assign]
    await the_bridge.run(stop)
    return the_bridge.counts.mapped / (handled["last"] - handled["first"])


def in_memory(payloads: list[bytes]) -> tuple[float, float]:
    """Spans/s decoding the bytes alone, and decoding and mapping them, without Kafka."""
    n = sum(
        len(s.spans) for p in payloads for r in TracesData.FromString(p).resource_spans for s in r.scope_spans
    )
    start = time.perf_counter()
    for payload in payloads:
        TracesData.FromString(payload)
    decode = n / (time.perf_counter() - start)
    options = OtelOptions("bench", managed=frozenset({PROMPT}))
    start = time.perf_counter()
    events, _ = translate(payloads, "otlp_proto", options)
    for event in events:
        event.to_json()
    return decode, n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--copies", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    payloads = records(args.calls, args.copies, args.batch)
    n_spans = args.calls * args.copies
    print(f"{n_spans:,} spans in {len(payloads):,} TracesData records of {args.batch} spans", flush=True)
    with EmbeddedBroker() as broker:
        topic = f"otlp_spans-{uuid.uuid4().hex[:6]}"
        produce(broker.bootstrap_servers, topic, payloads)
        raws, bridges = [], []
        for _ in range(args.repeat):
            raws.append(asyncio.run(raw(broker.bootstrap_servers, topic, len(payloads))))
            settings = load_settings(
                bootstrap_servers=broker.bootstrap_servers,
                topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
                app_id=f"bench-{uuid.uuid4().hex[:6]}",
                config=Path("absent.yaml"),
            )
            ensure_topics(settings)
            bridges.append(asyncio.run(bridge(settings, topic, len(payloads))))
    decode, mapped = max(in_memory(payloads) for _ in range(args.repeat))
    best_raw, best_bridge = max(raws), max(bridges)
    print(f"Kafka path, raw fetch + decode:          {best_raw:>10,.0f} spans/s")
    print(f"Kafka path, the bridge (+ map, produce): {best_bridge:>10,.0f} spans/s")
    print(f"in memory, decode only:                  {decode:>10,.0f} spans/s")
    print(f"in memory, decode + map + event JSON:    {mapped:>10,.0f} spans/s")
    ratio = best_bridge / best_raw
    print(f"bridge / raw decode: {ratio:.2f} (target >= 0.50): {'met' if ratio >= 0.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
