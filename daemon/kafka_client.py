"""kafka-python tooling behind `gepa-stream send` and `gepa-stream tail`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from daemon.admin import KafkaUnavailable
from daemon.settings import Settings
from schemas.errors import GepaStreamError
from schemas.events import CloudEvent, CommandEvent, RatingEvent, TraceEvent
from schemas.parse import InvalidEvent, parse_event

_TOPIC_OF_TYPE = {TraceEvent.TYPE: "traces", RatingEvent.TYPE: "ratings", CommandEvent.TYPE: "commands"}


@dataclass(frozen=True)
class BadLine:
    number: int
    error: str


AUTO = "auto"


class UnknownTopic(GepaStreamError, ValueError):
    """A topic to read does not exist on the broker."""


@contextmanager
def kafka_failures(settings: Settings, what: str = "Kafka") -> Iterator[None]:
    """Turn kafka-python's errors in the block into `KafkaUnavailable` saying `what` and where."""
    try:
        yield
    except KafkaError as exc:
        raise KafkaUnavailable(f"{what} at {settings.bootstrap_servers}: {exc}") from exc


def home_topic(event: CloudEvent, settings: Settings) -> str | None:
    """The input topic an event type belongs on (None for output types)."""
    short = _TOPIC_OF_TYPE.get(event.type)
    return settings.topics.resolve(short) if short else None


def validate_file(
    path: Path, topic: str, settings: Settings
) -> tuple[list[tuple[str, CloudEvent]], list[BadLine]]:
    """Parse every non-blank line of a JSONL file into (topic, event); bad lines are reported
    by number (1-based). With topic `auto` each event goes to its home topic; otherwise an
    event whose type belongs on another input topic is a bad line.
    """
    events: list[tuple[str, CloudEvent]] = []
    bad: list[BadLine] = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = parse_event(line.strip(), max_bytes=settings.max_event_bytes)
            except InvalidEvent as exc:
                bad.append(BadLine(number, str(exc)))
                continue
            home = home_topic(event, settings)
            if topic == AUTO:
                if home is None:
                    bad.append(BadLine(number, f"{event.type} is not an input event type; name the topic"))
                    continue
                events.append((home, event))
            elif home is not None and home != topic:
                bad.append(BadLine(number, f"a {event.type} event belongs on {home}, not {topic}"))
            else:
                events.append((topic, event))
    return events, bad


def producer(settings: Settings, **options: object) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers.split(","),
        client_id=f"{settings.app_id}-tools",
        **settings.kafka_python_options(),
        **options,
    )


def send_events(events: list[tuple[str, CloudEvent]], settings: Settings) -> int:
    """Produce (topic, event) pairs keyed by prompt, in order; returns the number acknowledged."""
    with kafka_failures(settings):
        client = producer(settings, linger_ms=5, acks="all")
        try:
            futures = [client.send(topic, key=e.key, value=e.to_json()) for topic, e in events]
            client.flush()
            for future in futures:
                future.get(timeout=30)
            return len(futures)
        finally:
            client.close()


def follow(
    topic: str, settings: Settings, *, from_beginning: bool, idle_timeout_s: float | None
) -> Iterator[tuple[int, int, bytes | None, bytes]]:
    """Yield (partition, offset, key, value) of a topic without joining a group (no rebalance wait);
    stop after `idle_timeout_s` without records if given."""
    with kafka_failures(settings):
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            client_id=f"{settings.app_id}-tail",
            enable_auto_commit=False,
            **settings.kafka_python_options(),
        )
    try:
        with kafka_failures(settings):
            partitions = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
            ]
        if not partitions:
            raise UnknownTopic(f"topic {topic!r} does not exist")
        consumer.assign(partitions)
        if from_beginning:
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.seek_to_end(*partitions)
        last_record = time.monotonic()
        while idle_timeout_s is None or time.monotonic() - last_record < idle_timeout_s:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    last_record = time.monotonic()
                    yield record.partition, record.offset, record.key, record.value
    finally:
        consumer.close()
