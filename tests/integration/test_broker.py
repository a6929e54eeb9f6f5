"""The embedded broker and the event contract on a real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from faust.types import TP
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from daemon.broker import free_port, wait_for_port
from daemon.faust_ext.recovery import log_ends, replay
from schemas import RatingData, RatingEvent, TraceData, TraceEvent, parse_event


def test_1000_events_round_trip_through_the_broker(kafka_bootstrap: str) -> None:
    topic = f"roundtrip-{os.getpid()}-{time.monotonic_ns()}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    admin.close()
    sent = []
    for i in range(1000):
        prompt = f"prompt_{i % 3}"
        if i % 2:
            event = RatingEvent.build(
                RatingData(prompt=prompt, trace_id=f"t{i}", rating=1 + i % 5, rater="sme")
            )
        else:
            event = TraceEvent.build(
                TraceData(prompt=prompt, trace_id=f"t{i}", inputs={"q": i}, outputs=str(i))
            )
        sent.append(event)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    for event in sent:
        producer.send(topic, key=event.key, value=event.to_json())
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in range(3)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    received = {}
    deadline = time.monotonic() + 60
    while len(received) < len(sent) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                event = parse_event(record.value)
                assert record.key == event.key
                received[event.id] = event
    consumer.close()
    assert received == {e.id: e for e in sent}


def test_broker_command_leaves_no_orphan_when_killed() -> None:
    port = free_port()
    cli = subprocess.Popen(
        [sys.executable, "-m", "daemon", "broker", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
        admin.create_topics([NewTopic("alive", 1, 1)])
        assert "alive" in admin.list_topics()
        admin.close()
    finally:
        cli.send_signal(signal.SIGKILL)
        cli.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            time.sleep(0.1)
        except OSError:
            return
    raise AssertionError("the broker outlived its SIGKILLed parent")


def test_log_ends_finds_the_end_after_a_batched_write(kafka_bootstrap: str) -> None:
    """Tansu 0.6 reports a partition's end as its last batch's base offset + 1; `log_ends`
    (what table recovery uses) reads the real end on any broker, and leaves empty ones at 0."""
    topic = f"ends-{os.getpid()}-{time.monotonic_ns()}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=1000)
    producer.send(topic, value=b"alone", partition=0)
    producer.flush()
    for i in range(5):  # one batch of five records after a batch of one
        producer.send(topic, value=b"%d" % i, partition=0)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    reported = {
        TP(tp.topic, tp.partition): end
        for tp, end in consumer.end_offsets([TopicPartition(topic, 0), TopicPartition(topic, 1)]).items()
    }
    consumer.close()
    assert reported[TP(topic, 0)] in (2, 6)  # 2 on Tansu 0.6, 6 on Kafka
    ends = asyncio.run(log_ends({"bootstrap_servers": [kafka_bootstrap]}, reported))
    assert ends == {TP(topic, 0): 6, TP(topic, 1): 0}


def test_replay_reads_each_span_in_order_to_its_end(kafka_bootstrap: str) -> None:
    """`replay` (the bulk table recovery) hands over every record of each span, in offset order,
    tombstones included, stops at the span's end, and reads nothing of an empty span."""
    topic = f"replay-{os.getpid()}-{time.monotonic_ns()}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50, batch_size=64 * 1024)
    for i in range(3000):
        producer.send(topic, key=b"k%d" % (i % 700), value=None if i % 10 == 9 else b"v%d" % i, partition=0)
    for i in range(40):
        producer.send(topic, key=b"p1-%d" % i, value=b"x", partition=1)
    producer.flush()
    producer.close()
    seen: dict[TP, list[tuple[int, bytes | None, bytes | None]]] = {}

    def apply(tp: TP, records: Sequence[Any]) -> None:
        seen.setdefault(tp, []).extend((r.offset, r.key, r.value) for r in records)

    p0, p1, p2 = (TP(topic, p) for p in range(3))
    asyncio.run(
        replay({"bootstrap_servers": [kafka_bootstrap]}, {p0: (0, 3000), p1: (10, 30), p2: (0, 0)}, apply)
    )
    assert [offset for offset, _, _ in seen[p0]] == list(range(3000))
    assert seen[p0][9] == (9, b"k9", None) and seen[p0][10] == (10, b"k10", b"v10")
    assert [offset for offset, _, _ in seen[p1]][:20] == list(range(10, 30))  # a fetch may read past the end
    assert p2 not in seen
