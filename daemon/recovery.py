"""Table recovery that replays every changelog partition to its real end.

Faust restores a table by reading its changelog up to the end offset the broker reports
(ListOffsets "latest"). Tansu 0.6, the embedded broker, answers with the base offset of the
partition's last record batch + 1 instead of the log end, so a recovery stopped short when
the last changelog write was a batch of several records (a clean restart lost window
examples). Fetch responses carry the true high watermark, on Tansu as on Kafka, so before
recovering, one fetch at the reported end - 1 per changelog partition reads the real end.
On Kafka both answers agree; the cost is one small fetch per partition per recovery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list
from faust.types import TP, ConsumerT

log = logging.getLogger("gepa_stream.recovery")

FETCH_TIMEOUT_S = 10.0


async def log_ends(
    client_options: Mapping[str, Any], reported: Mapping[TP, int], timeout_s: float = FETCH_TIMEOUT_S
) -> dict[TP, int]:
    """The real end offset of each non-empty partition, given the ends the broker reported:
    the high watermark of a fetch at `reported - 1` (or its last record + 1, if larger).
    A partition whose fetch returns nothing within `timeout_s` keeps its reported end."""
    ends = {tp: end for tp, end in reported.items()}
    wanted = {TopicPartition(tp.topic, tp.partition): tp for tp, end in reported.items() if end > 0}
    if not wanted:
        return ends
    consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset="latest", **client_options)
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        for atp, tp in wanted.items():
            consumer.seek(atp, reported[tp] - 1)
        pending = set(wanted)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            batches = await consumer.getmany(*pending, timeout_ms=200)
            for atp, records in batches.items():
                if records:
                    tp = wanted[atp]
                    ends[tp] = max(reported[tp], records[-1].offset + 1, consumer.highwater(atp) or 0)
                    pending.discard(atp)
        if pending:
            log.warning(
                "no answer when fetching the end of %s; recovery uses the reported ends",
                sorted(map(str, pending)),
            )
    finally:
        await consumer.stop()
    return ends


class ExactEndRecovery(Recovery):
    """Faust's recovery, with each changelog highwater corrected to the partition's real end."""

    async def _build_highwaters(
        self, consumer: ConsumerT, tps: set[TP], destination: Any, title: str
    ) -> None:
        await super()._build_highwaters(consumer, tps, destination, title)
        if self.app.in_transaction:  # exactly-once reads stop at the last stable offset: keep Faust's
            return
        reported = {tp: highwater + 1 for tp, highwater in destination.items() if highwater >= 0}
        options = {
            "bootstrap_servers": server_list(self.app.conf.broker, 9092),
            **credentials_to_aiokafka_auth(self.app.conf.broker_credentials),
        }
        try:
            ends = await log_ends(options, reported)
        except KafkaError as exc:
            log.warning(
                "cannot read the changelog ends (%r); recovery uses the reported ends, which the embedded broker reports short",
                exc,
            )
            return
        for tp, end in ends.items():
            if end != reported[tp]:
                log.info(
                    "%s changelog %s/%d: the broker reported end %d, the log ends at %d",
                    title,
                    tp.topic,
                    tp.partition,
                    reported[tp],
                    end,
                )
                destination[tp] = end - 1  # Faust's highwater is the last offset


class ExactEndTableManager(TableManager):
    """Faust's table manager with `ExactEndRecovery` (the app's `TableManager` setting)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = ExactEndRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
