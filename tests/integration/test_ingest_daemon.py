"""The ingest daemon as a subprocess on the real broker: windows, triggers, dead letters,
/status and /metrics — and the same outcome after a clean restart and after a SIGKILL
mid-stream, with every table restored from its whole changelog."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.daemon_harness import (
    QUICK_JOIN_ENV,
    Daemon,
    assert_recovered,
    changelogs,
    metric_value,
    produce,
    read_topic,
    reports_short_ends,
)
from tests.integration.ingest_feed import CONFIG, Feed, build_feed

pytestmark = pytest.mark.integration


def _daemon(kafka_bootstrap: str, tmp_path: Path) -> Daemon:
    config = tmp_path / "gepa-stream.yaml"
    config.write_text(CONFIG)
    return Daemon(kafka_bootstrap, config, tmp_path, env=QUICK_JOIN_ENV)


def _settled(daemon: Daemon, feed: Feed) -> bool:
    prompts = daemon.status()["prompts"]
    return all(prompts.get(p, {}).get("n_examples") == n for p, n in feed.labeled.items())


def _check_outcome(daemon: Daemon, feed: Feed) -> None:
    daemon.wait_until(lambda: _settled(daemon, feed), 180, "the windows to hold every labeled example")
    status = daemon.status()["prompts"]
    for prompt, n in feed.labeled.items():
        assert status[prompt]["n_examples"] == n, prompt
        assert status[prompt]["waiting_ratings"] == 0, prompt
    # at-least-once: a redelivered bad record yields the same dead-letter id, so count ids
    dead = {e.id: e for e in read_topic(daemon.bootstrap, daemon.topics.dlq)}
    assert Counter(e.data.reason for e in dead.values()) == feed.dead_letters
    assert len(dead) == 200
    requested = [
        e for e in read_topic(daemon.bootstrap, daemon.topics.optimizations) if e.data.status == "requested"
    ]
    by_prompt: dict[str, set[str]] = {}
    for event in requested:
        by_prompt.setdefault(event.data.prompt, set()).add(event.data.request_id)
    assert set(by_prompt) == feed.should_fire
    assert all(len(ids) == 1 for ids in by_prompt.values()), by_prompt
    for event in requested:
        assert event.data.trigger.rule == "min_examples"
        assert event.data.snapshot.n_examples == event.data.trigger.values["n_examples"]
        assert status[event.data.prompt]["trigger"]["in_flight"] == event.data.request_id


def test_ingest_windows_triggers_and_dead_letters_survive_a_clean_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    daemon = _daemon(kafka_bootstrap, tmp_path).start()
    try:
        feed = build_feed(daemon.topics)
        produce(kafka_bootstrap, feed.records)
        _check_outcome(daemon, feed)
        metrics = daemon.get("/metrics")
        for reason, n in feed.dead_letters.items():
            assert metric_value(metrics, "gepa_stream_dead_letters_total", reason=reason) == n
        for (event_type, topic), n in feed.valid.items():
            assert metric_value(metrics, "gepa_stream_events_total", type=event_type, topic=topic) == n
        assert metric_value(metrics, "gepa_stream_duplicate_events_total", type="gepa.trace.v1") > 0
        for prompt in feed.should_fire:
            assert (
                metric_value(metrics, "gepa_stream_triggers_total", prompt=prompt, rule="min_examples") == 1
            )
        for prompt, n in feed.labeled.items():
            assert metric_value(metrics, "gepa_stream_window_examples", prompt=prompt) == n
        assert "gepa_stream_processing_seconds_bucket" in metrics
        assert daemon.get("/healthz") == {"status": "ok"}
        daemon.stop()
        before = changelogs(daemon)
        if reports_short_ends(kafka_bootstrap):  # the restart must meet the broker's short end offset
            assert any(log.reported_short for log in before.values()), {
                t: (c.reported_ends, c.log_ends) for t, c in before.items()
            }
        daemon.start()
        assert_recovered(daemon, before)
        _check_outcome(daemon, feed)
    finally:
        daemon.stop()


def test_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    daemon = _daemon(kafka_bootstrap, tmp_path).start()
    feed = build_feed(daemon.topics, seed=11)
    half = len(feed.records) // 2
    try:
        produce(kafka_bootstrap, feed.records[:half])
        daemon.wait_until(
            lambda: sum(p["n_examples"] for p in daemon.status()["prompts"].values()) > 300,
            120,
            "ingest to get going",
        )
        daemon.kill()
        before = changelogs(daemon)
        produce(kafka_bootstrap, feed.records[half:])
        daemon.start()
        assert_recovered(daemon, before)
        _check_outcome(daemon, feed)
    finally:
        daemon.stop()
