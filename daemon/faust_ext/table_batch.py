"""The table writes of one batch of consumed records: each touched key once, one produce per partition.

Faust writes a changelog record for every `table[key] = value`, through its producer buffer and
its sensors (~130 µs per write on the embedded broker, most of the ingest cost). Ingest stages a
batch's writes here instead: a key touched several times in the batch (a trace and its rating,
an example that enters a window and is evicted again) is written once with its last value, a
key put and deleted within the batch is not written at all, and each changelog partition's
records travel as record batches of the Faust producer's aiokafka client. `flush` returns once
the broker has acknowledged them, so a batch's offsets are acknowledged (and committed) only
after its table writes are durable — the ordering Faust's own commit gives.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from faust.stores import memory as memory_store
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import AppT, CollectionT, TableT

#: Bytes of one record batch: far above a typical fact record, below Kafka's default 1 MB
#: message limit (a larger single record still travels alone).
BATCH_BYTES = 512 * 1024


@dataclass(slots=True)
class _Write:
    partition: int
    value: bytes | None  # None: delete the key (a tombstone)


class TableBatch:
    """Staged writes to the app's tables, keyed by table and key (the last write wins)."""

    def __init__(self, app: AppT) -> None:
        self.app = app
        self._tables: dict[str, TableT[bytes, bytes]] = {}
        self._writes: dict[str, dict[bytes, _Write]] = {}

    def put(self, table: TableT[bytes, bytes], partition: int, key: bytes, value: bytes) -> None:
        """Stage `table[key] = value`, on the changelog partition of the record that caused it."""
        self._stage(table, key, _Write(partition, value))

    def delete(self, table: TableT[bytes, bytes], partition: int, key: bytes) -> None:
        """Stage `del table[key]` (nothing is written if the table does not hold the key)."""
        self._stage(table, key, _Write(partition, None))

    def _stage(self, table: TableT[bytes, bytes], key: bytes, write: _Write) -> None:
        self._tables.setdefault(table.name, table)
        self._writes.setdefault(table.name, {})[key] = write

    def __len__(self) -> int:
        return sum(map(len, self._writes.values()))

    async def flush(self) -> None:
        """1. apply the staged writes to the tables' stores, 2. send each changelog partition's
        records as record batches, 3. wait for the broker's acknowledgements."""
        changelogs: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
        for name, writes in self._writes.items():
            table = self._tables[name]
            topic = table.changelog_topic.get_topic_name()
            for key, write in writes.items():
                if store_write(table, write.partition, key, write.value):
                    changelogs.setdefault((topic, write.partition), []).append((key, write.value))
        self._writes.clear()
        if not changelogs:
            return
        producer = _aiokafka_producer(self.app)
        acks: list[asyncio.Future[object]] = []
        for (topic, partition), records in changelogs.items():
            batch = producer.create_batch()
            for key, value in records:
                if batch.append(timestamp=None, key=key, value=value) is None:  # full: send, start another
                    acks.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(timestamp=None, key=key, value=value)
            acks.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*acks)


def store_write(table: CollectionT, partition: int, key: bytes, value: bytes | None) -> bool:
    """Put (or with None delete) a key in the table's in-memory store, noting the key's changelog
    partition; False when deleting a key the store does not hold (nothing to write).

    Faust's memory store drops the keys of partitions a rebalance took away by that note, which
    it takes only while recovering: written here, by the stream and by `daemon/faust_ext/recovery.py`'s
    replay alike, every key a worker holds is one of its partitions' after each rebalance."""
    store = getattr(table, "data", None)
    if not isinstance(store, memory_store.Store):
        raise TypeError(f"table batches need Faust's memory store, not {type(store).__name__}")
    if value is None:
        store._key_partition.pop(key, None)
        return store.data.pop(key, None) is not None
    store.data[key] = value
    store._key_partition[key] = partition
    return True


def _aiokafka_producer(app: AppT) -> AIOKafkaProducer:
    """The aiokafka client under the app's Faust producer (started with the app)."""
    producer = app.producer
    if not isinstance(producer, faust_aiokafka.Producer):
        raise TypeError(f"table batches need Faust's aiokafka transport, not {type(producer).__name__}")
    return producer._ensure_producer()
