"""Topic administration with aiokafka's admin client (the Kafka library the workers run on, so an
ingest worker loads no second one): create the contract's topics if missing, check their layout."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from daemon.settings import Settings
from schemas.errors import GepaStreamError


class KafkaUnavailable(GepaStreamError, RuntimeError):
    """The broker did not answer, or refused a request; the message names the bootstrap servers."""


class TopicLayoutError(GepaStreamError, RuntimeError):
    """An existing topic has a partition count that breaks co-partitioning."""


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create every contract topic that is missing; return the names created.

    All topics get `settings.partitions` partitions: with the prompt name as key,
    every event of one prompt lands on the same partition number of each topic.
    """
    try:
        return asyncio.run(_ensure_topics(settings, timeout_s))
    except (KafkaError, TimeoutError) as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc!r}") from exc


async def _ensure_topics(settings: Settings, timeout_s: float) -> list[str]:
    """1. list the topics, 2. create the missing ones, 3. check the partition counts of the others."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers.split(","),
        client_id=f"{settings.app_id}-admin",
        request_timeout_ms=int(timeout_s * 1000),
        **settings.aiokafka_options(),
    )
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        wanted = settings.topics.all()
        missing = [t for t in wanted if t not in existing]
        if missing:
            response = await admin.create_topics(
                [NewTopic(t, settings.partitions, settings.replication_factor) for t in missing],
                timeout_ms=int(timeout_s * 1000),
            )
            for topic, code, *_ in response.topic_errors:
                if code and code != TopicAlreadyExistsError.errno:  # another worker may have created it
                    raise for_code(code)(f"creating topic {topic}")
        present = [t for t in wanted if t in existing]
        if present:
            _check_partitions(await admin.describe_topics(present), settings.partitions)
        return missing
    finally:
        await admin.close()


def _check_partitions(topics: list[dict[str, Any]], expected: int) -> None:
    wrong = {}
    for meta in topics:
        count = len(meta.get("partitions") or [])
        if count and count != expected:
            wrong[meta["topic"]] = count
    if wrong:
        found = ", ".join(f"{t} has {n}" for t, n in sorted(wrong.items()))
        raise TopicLayoutError(
            f"topics must be co-partitioned with {expected} partitions (GEPA_STREAM_PARTITIONS): {found}"
        )
