"""`ensure_topics` on a real broker: creates the contract's topics once, co-partitioned, and refuses a
layout that breaks co-partitioning (the CLI exits 2 saying which topics)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from typer.testing import CliRunner

from daemon.admin import TopicLayoutError, ensure_topics
from daemon.cli import app
from daemon.settings import load_settings


@pytest.fixture
def prefix(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    prefix = f"adm{uuid.uuid4().hex[:6]}."
    monkeypatch.setenv("GEPA_STREAM_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("GEPA_STREAM_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("GEPA_STREAM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("GEPA_STREAM_PARTITIONS", "3")
    return prefix


def test_missing_topics_are_created_once_with_the_configured_partitions(
    kafka_bootstrap: str, prefix: str
) -> None:
    settings = load_settings()
    created = ensure_topics(settings)
    assert sorted(created) == sorted(settings.topics.all())
    assert ensure_topics(settings) == []
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        assert {len(consumer.partitions_for_topic(t) or ()) for t in created} == {3}
    finally:
        consumer.close()


def test_a_topic_with_another_partition_count_is_a_layout_error(
    kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(f"{prefix}traces", 2, 1)])
    finally:
        admin.close()
    with pytest.raises(TopicLayoutError, match=f"{prefix}traces has 2"):
        ensure_topics(load_settings())
    config = tmp_path / "gepa-stream.yaml"
    config.write_text("prompts: [{name: a}]")
    result = CliRunner().invoke(app, ["run", "--role", "ingest", "--config", str(config)])
    assert result.exit_code == 2
    assert "error: topics must be co-partitioned with 3 partitions" in result.output
    assert "Traceback" not in result.output
