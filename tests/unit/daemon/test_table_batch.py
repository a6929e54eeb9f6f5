"""`store_write`: what the stream and the bulk recovery write into a table's memory store."""

from __future__ import annotations

import asyncio

import faust
import pytest
from faust.types import TP

from daemon.faust_ext.table_batch import store_write


@pytest.fixture
def table() -> faust.Table:
    app = faust.App("table-batch-test", broker="kafka://127.0.0.1:1", store="memory://")
    return app.Table("facts", partitions=2, key_type=bytes, value_type=bytes)


def test_puts_and_deletes_reach_the_store(table: faust.Table) -> None:
    assert store_write(table, 0, b"a", b"1") is True
    assert store_write(table, 0, b"a", b"2") is True
    assert dict(table.items()) == {b"a": b"2"}
    assert store_write(table, 0, b"a", None) is True
    assert store_write(table, 0, b"a", None) is False  # nothing held: nothing to write
    assert dict(table.items()) == {}


def test_a_rebalance_drops_the_keys_of_partitions_taken_away(table: faust.Table) -> None:
    """Faust's memory store forgets revoked partitions' keys only by the partition it noted for
    each key; keys the stream wrote are noted too, so none outlives its partition here."""
    store_write(table, 0, b"kept", b"x")
    store_write(table, 1, b"moved", b"y")
    changelog = table.changelog_topic.get_topic_name()
    asyncio.run(table.data.on_recovery_completed({TP(changelog, 0)}, set()))
    assert dict(table.items()) == {b"kept": b"x"}
