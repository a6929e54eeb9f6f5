"""Hostile input through the running daemon on the real broker (issue 10, failures 2-4): every
hostile record is exactly one dead letter, the daemon never stops, and nothing hostile reaches
a window — so the valid events around it are all counted and the trigger still fires."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from schemas import DeadLetterEvent, OptimizationEvent, Topics, parse_event
from tests.daemon_harness import Daemon, produce, read_records, read_topic
from tests.integration.hostile_feed import (
    CONFIG,
    PROMPTS,
    HostileFeed,
    labeled_trace,
    valid_feed,
    with_inputs_text,
    with_time,
)

pytestmark = pytest.mark.integration

TRIGGER_CONFIG = """
prompts:
  - name: router_a
    input_keys: [ticket]
    triggers: {min_examples: 100, min_new_examples: 20, cooldown: 1h}
"""


def _daemon(kafka_bootstrap: str, tmp_path: Path, config: str) -> Daemon:
    path = tmp_path / "gepa-stream.yaml"
    path.write_text(config)
    return Daemon(kafka_bootstrap, path, tmp_path)


def _tombstones(topics: Topics, names: tuple[str, ...]) -> list[tuple[str, bytes | None, bytes | None]]:
    return [(getattr(topics, name), b"router_a", None) for name in names]


def _dead_letters(daemon: Daemon, expected: int) -> dict[str, DeadLetterEvent]:
    """The dead letters by id, once at least `expected` distinct ids are there."""
    found: dict[str, DeadLetterEvent] = {}

    def enough() -> bool:
        found.update((e.id, e) for e in read_topic(daemon.bootstrap, daemon.topics.dlq, idle_s=0.5))
        return len(found) >= expected

    daemon.wait_until(enough, 120, f"{expected} dead letters")
    return found


def _committed(bootstrap: str, group: str, topics: list[str]) -> dict[TopicPartition, int]:
    """The offsets a consumer group has committed (read without joining it)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {
            tp: consumer.committed(tp) or 0
            for topic in topics
            for tp in (TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or []))
        }
    finally:
        consumer.close()


def test_hostile_traces_and_tombstones_then_100_valid_events_all_count(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """`--role ingest`: a lone-surrogate trace, a 500-deep trace, an integer time and a tombstone
    on each consumed topic, then 100 valid traces of the same prompt: the window holds all 100,
    the trigger fires on 100 examples, and each hostile record is one dead letter."""
    daemon = _daemon(kafka_bootstrap, tmp_path, TRIGGER_CONFIG).start(role="ingest")
    topics = daemon.topics
    try:
        surrogate = with_inputs_text(labeled_trace("router_a", "surrogate"), '"\\ud800"')
        deep = with_inputs_text(labeled_trace("router_a", "deep"), "[" * 500 + "]" * 500)
        integer_time = with_time(labeled_trace("router_a", "integer-time"), 12345)
        hostile = [
            (topics.traces, b"router_a", surrogate),
            (topics.traces, b"router_a", deep),
            (topics.traces, b"router_a", integer_time),
        ]
        hostile += _tombstones(topics, ("traces", "ratings", "commands", "optimizations", "promotions"))
        landed = produce(kafka_bootstrap, hostile)
        valid = [labeled_trace("router_a", f"valid-{i}") for i in range(100)]
        produce(kafka_bootstrap, [(topics.traces, e.key, e.to_json()) for e in valid])

        daemon.wait_until(
            lambda: daemon.status()["prompts"].get("router_a", {}).get("n_examples") == 100,
            120,
            "100 examples in the window",
        )
        dead = _dead_letters(daemon, len(hostile))
        assert set(dead) == {f"dlq:{m.topic}:{m.partition}:{m.offset}" for m in landed}
        by_source = {(e.data.source_topic, e.data.reason) for e in dead.values()}
        assert by_source == {
            (topics.traces, "unrepresentable"),
            (topics.traces, "too_deep"),
            (topics.traces, "bad_time"),
            *(
                (getattr(topics, t), "null_value")
                for t in ("traces", "ratings", "commands", "optimizations", "promotions")
            ),
        }
        requested: list[OptimizationEvent] = []

        def fired() -> bool:
            records = read_records(kafka_bootstrap, topics.optimizations, idle_s=0.5)
            events = [
                parse_event(r.value) for r in records if r.value is not None
            ]  # our tombstone is there too
            requested[:] = [e for e in events if e.data.status == "requested"]
            return bool(requested)

        daemon.wait_until(fired, 60, "the requested event")
        assert {e.data.snapshot.n_examples for e in requested} == {100}
        assert {e.data.trigger.rule for e in requested} == {"min_examples"}
        assert daemon.process is not None and daemon.process.poll() is None
        assert "Traceback" not in daemon.log.read_text()
        tail = subprocess.run(
            [
                sys.executable,
                "-m",
                "daemon",
                "tail",
                "traces",
                "--from-beginning",
                "--idle-timeout",
                "1",
                "--raw",
            ],
            env=daemon.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert tail.returncode == 0, tail.stderr
        assert (
            tail.stdout.splitlines().count("null") == 1
        )  # `tail` shows the tombstone instead of crashing on it
    finally:
        daemon.stop()


def test_5000_hostile_records_among_600_valid_events(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The acceptance test: 5,000 generated hostile records of 16 kinds on every consumed topic,
    interleaved with 600 valid events (500 examples), through `--role all`: the process never
    stops or restarts, every hostile record is exactly one dead-letter id, every valid event
    is in its window. The job runner reads gepa.optimizations and gepa.commands too: it reads
    past every bad record there, and every dead letter comes from the ingest agent (one
    consumer dead-letters them, so a bad record never becomes two)."""
    daemon = _daemon(kafka_bootstrap, tmp_path, CONFIG).start(role="all")
    topics = daemon.topics
    try:
        hostile = HostileFeed(topics).records(5000)
        tombstoned = {topic for kind, (topic, _, _) in hostile if kind == "tombstone"}
        assert tombstoned == {
            topics.traces,
            topics.ratings,
            topics.commands,
            topics.optimizations,
            topics.promotions,
        }
        valid, expected = valid_feed(topics, n_labeled=400, n_joined=100)
        stream: list[tuple[bool, tuple[str, bytes | None, bytes | None]]] = [(True, r) for _, r in hostile]
        step = len(stream) // len(valid)
        for i, record in enumerate(valid):
            stream.insert(i * (step + 1), (False, record))
        landed = produce(kafka_bootstrap, [record for _, record in stream])
        hostile_landed = [m for (is_hostile, _), m in zip(stream, landed) if is_hostile]
        hostile_ids = {f"dlq:{m.topic}:{m.partition}:{m.offset}" for m in hostile_landed}
        assert len(hostile_ids) == 5000

        def settled() -> bool:
            prompts = daemon.status()["prompts"]
            return all(prompts.get(p, {}).get("n_examples") == n for p, n in expected.items())

        daemon.wait_until(settled, 180, "every valid event in its window")
        dead = _dead_letters(daemon, 5000)
        assert set(dead) == hostile_ids
        reasons = Counter(e.data.reason for e in dead.values())
        assert "handler_error" not in reasons, reasons
        assert set(reasons) >= {
            "null_value",
            "not_json",
            "too_deep",
            "unrepresentable",
            "oversize",
            "bad_time",
            "unknown_type",
            "wrong_topic",
            "unknown_prompt",
        }
        assert {e.source for e in dead.values()} == {f"gepa-stream/app-{daemon.prefix.rstrip('.')}/ingest"}
        runner_topics = [topics.optimizations, topics.commands]
        ends: dict[TopicPartition, int] = {}
        for m in landed:
            if m.topic in runner_topics:
                tp = TopicPartition(m.topic, m.partition)
                ends[tp] = max(ends.get(tp, 0), m.offset + 1)
        group = f"app-{daemon.prefix.rstrip('.')}-optimizer"
        daemon.wait_until(
            lambda: all(
                _committed(kafka_bootstrap, group, runner_topics).get(tp, 0) >= end
                for tp, end in ends.items()
            ),
            60,
            "the job runner to read past every record of its topics",
        )
        status = daemon.status()["prompts"]
        for prompt in PROMPTS:
            assert status[prompt]["n_examples"] == expected[prompt]
            assert status[prompt]["waiting_traces"] == status[prompt]["waiting_ratings"] == 0
        assert daemon.process is not None and daemon.process.poll() is None
        log = daemon.log.read_text()
        assert "Traceback" not in log and "crashed" not in log.lower(), log[-3000:]
        assert json.loads(json.dumps(daemon.get("/healthz"))) == {"status": "ok"}
    finally:
        daemon.stop()
