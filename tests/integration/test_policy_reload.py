"""The policy file reloaded without a restart, an ingest worker as its own process on the real
broker: a new pattern manages prompts that were dead letters before, a smaller window trims at
once, an invalid file is refused (counted, shown on /status and the ops page) while the previous
one stays in effect, and with polling off a SIGHUP reloads."""

from __future__ import annotations

import signal
from pathlib import Path

from schemas import RatingData, RatingEvent, TraceData, TraceEvent
from tests.daemon_harness import Daemon, metric_value, produce, read_topic

LISTED = "prompts:\n  - {name: listed_a, input_keys: [q], window: {max_examples: 10}, triggers: {min_examples: 9}}\n"
RELOADED = (
    "prompts:\n  - {name: listed_a, input_keys: [q], window: {max_examples: 4}, triggers: {min_examples: 3}}\n"
    "patterns:\n  - {match: 'tenant_*', input_keys: [q], triggers: {min_examples: 3, min_new_examples: 1, cooldown: 0s}}\n"
)


def rated(daemon: Daemon, prompt: str, ids: range) -> list[tuple[str, bytes | None, bytes]]:
    records = []
    for i in ids:
        trace = TraceEvent.build(
            TraceData(prompt=prompt, trace_id=f"{prompt}-{i}", inputs={"q": str(i)}, outputs="a")
        )
        rating = RatingEvent.build(
            RatingData(prompt=prompt, trace_id=f"{prompt}-{i}", rating="good", rater="sme")
        )
        records += [
            (daemon.topics.traces, trace.key, trace.to_json()),
            (daemon.topics.ratings, rating.key, rating.to_json()),
        ]
    return records


def examples(daemon: Daemon, prompt: str) -> int | None:
    return (daemon.status()["prompts"].get(prompt) or {}).get("n_examples")


def test_a_new_file_takes_effect_without_a_restart_and_a_bad_one_is_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text(LISTED)
    daemon = Daemon(kafka_bootstrap, config, tmp_path, env={"GEPA_STREAM_POLICY_POLL_S": "0.5"})
    daemon.start("ingest")
    try:
        produce(kafka_bootstrap, rated(daemon, "listed_a", range(6)) + rated(daemon, "tenant_x", range(1)))
        daemon.wait_until(lambda: examples(daemon, "listed_a") == 6, 60, "6 examples of listed_a")
        letters = read_topic(kafka_bootstrap, daemon.topics.dlq)
        assert {e.data.reason for e in letters} == {"unknown_prompt"} and len(letters) == 2
        pid = daemon.process.pid  # type: ignore[union-attr]
        rebuilds = daemon.status()["recovered"]["rebuilds"]

        # 1. a valid new file: the window trims at once, the pattern manages new names
        config.write_text(RELOADED)
        daemon.wait_until(lambda: daemon.status()["policy"]["reloads"] == 1, 30, "the reload")
        assert daemon.status()["policy"]["patterns"] == 1
        assert examples(daemon, "listed_a") == 4
        produce(kafka_bootstrap, rated(daemon, "tenant_y", range(3)))
        daemon.wait_until(lambda: examples(daemon, "tenant_y") == 3, 60, "tenant_y's window")
        requested = [
            e.data.prompt
            for e in read_topic(kafka_bootstrap, daemon.topics.optimizations)
            if e.data.status == "requested"
        ]
        assert "tenant_y" in requested  # a newly matched prompt triggers like a listed one
        assert len(read_topic(kafka_bootstrap, daemon.topics.dlq)) == 2  # no new dead letter
        assert daemon.status()["recovered"]["rebuilds"] == rebuilds  # no rebalance

        # 2. an invalid file: refused, shown and counted; the previous one stays in effect
        config.write_text(RELOADED.replace("max_examples: 4", "max_examples: lots"))
        daemon.wait_until(lambda: daemon.status()["policy"]["error"] is not None, 30, "the refusal")
        error = daemon.status()["policy"]["error"]
        assert "prompts[0] (listed_a).window.max_examples" in error, error
        assert (daemon.get("/ui/api/state") or {})["policy"]["error"] == error
        metrics = daemon.get("/metrics")
        assert metric_value(metrics, "gepa_stream_policy_reloads_total", outcome="refused") == 1
        assert metric_value(metrics, "gepa_stream_policy_error") == 1
        produce(kafka_bootstrap, rated(daemon, "tenant_z", range(2)))
        daemon.wait_until(lambda: examples(daemon, "tenant_z") == 2, 60, "tenant_z under the previous file")
        assert "policy file refused, the previous one stays in effect" in daemon.log.read_text()

        # 3. the file fixed: applied, the error cleared
        config.write_text(RELOADED.replace("tenant_*", "tenant_?"))
        daemon.wait_until(lambda: daemon.status()["policy"]["reloads"] == 2, 30, "the fixed file")
        assert daemon.status()["policy"]["error"] is None
        assert metric_value(daemon.get("/metrics"), "gepa_stream_policy_error") == 0
        assert daemon.process is not None and daemon.process.pid == pid  # never restarted
        assert daemon.status()["recovered"]["rebuilds"] == rebuilds
    finally:
        daemon.stop()


def test_with_polling_off_a_sighup_reloads(kafka_bootstrap: str, tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text(LISTED)
    daemon = Daemon(kafka_bootstrap, config, tmp_path, env={"GEPA_STREAM_POLICY_POLL_S": "0"})
    daemon.start("ingest")
    try:
        config.write_text(RELOADED)
        produce(kafka_bootstrap, rated(daemon, "listed_a", range(1)))
        daemon.wait_until(lambda: examples(daemon, "listed_a") == 1, 60, "an event handled after the edit")
        assert daemon.status()["policy"]["reloads"] == 0  # not polled
        daemon.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        daemon.wait_until(lambda: daemon.status()["policy"]["reloads"] == 1, 30, "the reload on SIGHUP")
        assert daemon.process is not None and daemon.process.poll() is None
    finally:
        daemon.stop()
