"""Topic administration with kafka-python: create the contract's topics if missing."""

from __future__ import annotations

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from daemon.kafka_client import kafka_failures
from daemon.settings import Settings
from schemas.errors import GepaStreamError


class TopicLayoutError(GepaStreamError, RuntimeError):
    """An existing topic has a partition count that breaks co-partitioning."""


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every contract topic that is missing; return the names created.

    All topics get `settings.partitions` partitions: with the prompt name as key,
    every event of one prompt lands on the same partition number of each topic.
    """
    with kafka_failures(settings, "cannot reach Kafka"):
        admin = KafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            client_id=f"{settings.app_id}-admin",
            request_timeout_ms=int(timeout_s * 1000),
            **settings.kafka_python_options(),
        )
        try:
            existing = set(admin.list_topics())
            wanted = settings.topics.all()
            missing = [t for t in wanted if t not in existing]
            if missing:
                try:
                    admin.create_topics(
                        [NewTopic(t, settings.partitions, settings.replication_factor) for t in missing],
                        timeout_ms=int(timeout_s * 1000),
                    )
                except TopicAlreadyExistsError:
                    pass  # another worker created it between list and create
            present = [t for t in wanted if t in existing]
            if present:
                _check_partitions(admin, present, settings.partitions)
            return missing
        finally:
            admin.close()


def _check_partitions(admin: KafkaAdminClient, topics: list[str], expected: int) -> None:
    wrong = {}
    for meta in admin.describe_topics(topics):
        count = len(meta.get("partitions") or [])
        if count and count != expected:
            wrong[meta.get("name") or meta.get("topic")] = count
    if wrong:
        found = ", ".join(f"{t} has {n}" for t, n in sorted(wrong.items()))
        raise TopicLayoutError(
            f"topics must be co-partitioned with {expected} partitions (GEPA_STREAM_PARTITIONS): {found}"
        )
