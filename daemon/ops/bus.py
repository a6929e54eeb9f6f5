"""The ops page's Kafka side: reads the promotions, optimizations and dead-letter topics from
the beginning into an `OpsHistory`, and sends operators' commands to the commands topic.

No consumer group: every process (any role, any replica) reads every partition, so each
page shows the whole history, and joining costs no rebalance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from daemon.settings import Settings
from handlers.ops_history import OpsHistory
from schemas.events import CommandEvent
from schemas.parse import InvalidEvent, parse_event

log = logging.getLogger("gepa_stream.ops")


class OpsBus:
    def __init__(self, settings: Settings, history: OpsHistory, on_decision: Callable[[str], None]) -> None:
        self.settings = settings
        self.history = history
        self.on_decision = on_decision
        self.caught_up = False
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()

    def _options(self) -> dict[str, object]:
        return {
            "bootstrap_servers": self.settings.bootstrap_servers.split(","),
            **self.settings.aiokafka_options(),
        }

    async def run(self) -> None:
        """1. assign every partition of the three topics, 2. read from the beginning, forever;
        `caught_up` once a fetch comes back empty."""
        topics = self.settings.topics
        consumer = AIOKafkaConsumer(
            enable_auto_commit=False, client_id=f"{self.settings.app_id}-ops", **self._options()
        )
        await consumer.start()
        try:
            await consumer.topics()  # loads the metadata partitions_for_topic reads
            partitions = [
                TopicPartition(topic, p)
                for topic in (topics.promotions, topics.optimizations, topics.dlq)
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while True:
                try:
                    batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                except KafkaError as exc:  # the broker is away: keep what we have, try again
                    log.warning("ops history: fetch failed (%s); retrying", exc)
                    await asyncio.sleep(1.0)
                    continue
                if not batches:
                    self.caught_up = True
                for records in batches.values():
                    for record in records:
                        self._add(record.value)
        finally:
            await consumer.stop()
            if self._producer is not None:
                await self._producer.stop()

    def _add(self, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            event = parse_event(raw)
        except InvalidEvent:
            return  # not ours to judge: the topics' consumers dead-letter bad records
        try:
            changed = self.history.add(event)
        except Exception:  # a bug in the page's view must never stop the daemon
            log.exception("ops history: cannot fold event %s (%s); the page skips it", event.id, event.type)
            return
        if changed is not None:
            self.on_decision(changed)

    async def send_command(self, event: CommandEvent) -> None:
        """Produce a command keyed by prompt and wait for the broker's ack (same as `gepa-stream send`)."""
        async with self._producer_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    acks="all", client_id=f"{self.settings.app_id}-ops", **self._options()
                )
                await producer.start()
                self._producer = producer
        await self._producer.send_and_wait(self.settings.topics.commands, event.to_json(), key=event.key)
