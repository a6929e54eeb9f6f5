"""Jobs survive a SIGKILL of the daemon mid-GEPA (announced as `retrying`, `started` sent once);
manual approval, and rollback, by command."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from daemon.jobs.attempts import DAEMON_DIED
from schemas import CommandData, CommandEvent
from tests.daemon_harness import QUICK_JOIN_ENV, Daemon, assert_recovered, changelogs, produce, read_topic
from tests.e2e.loop_helpers import register_seed, sme_feed, wait_for_events, write_policy

pytestmark = pytest.mark.e2e


def _terminal(events) -> bool:
    return any(e.data.status in ("completed", "failed") for e in events)


def test_sigkill_during_gepa_resumes_and_announces_once(kafka_bootstrap: str, tmp_path: Path) -> None:
    name = "router_crash"
    policy = write_policy(
        tmp_path / "policy.yaml", name, task_model="offline/support-router?latency_ms=40", calls=120
    )
    daemon = Daemon(kafka_bootstrap, policy, tmp_path, env=QUICK_JOIN_ENV)
    register_seed(daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"], name)
    daemon.start()
    try:
        produce(kafka_bootstrap, sme_feed(daemon.topics, name))
        daemon.wait_until(
            lambda: any(j["stage"] == "optimize" for j in daemon.status().get("jobs", {}).values()),
            120,
            "GEPA to start",
        )
        gepa_dir = next((tmp_path / "state" / "jobs").iterdir()) / "gepa"
        daemon.wait_until(lambda: gepa_dir.exists() and any(gepa_dir.iterdir()), 60, "GEPA to checkpoint")
        daemon.kill()
        assert not (gepa_dir.parent / "result.json").exists(), "the kill must land before the job finished"
        before = changelogs(daemon)
        daemon.start()
        assert_recovered(daemon, before)
        optimizations = wait_for_events(daemon, daemon.topics.optimizations, _terminal)
        promotions = wait_for_events(daemon, daemon.topics.promotions, lambda evs: len(evs) >= 1, timeout=60)
    finally:
        daemon.stop()
    completed = [e for e in optimizations if e.data.status == "completed"]
    assert completed, [e.data for e in optimizations]
    request_id = completed[0].data.request_id
    mlflow.set_tracking_uri(daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"])
    carrying = [
        v
        for v in MlflowClient().search_prompt_versions(name)
        if v.tags.get("gepa_stream.request_id") == request_id
    ]
    assert len(carrying) == 1
    # at-least-once: an event may be re-sent after the crash, but every decision has one id
    ids_per_decision = Counter(
        (e.data.request_id, e.data.prompt, e.data.decision) for e in {e.id: e for e in promotions}.values()
    )
    assert set(ids_per_decision.values()) == {1}
    assert {e.id for e in completed} == {f"{request_id}:completed"}
    # the attempt that died with the daemon is announced as `retrying`; `started` is sent once
    mine = [e.data for e in optimizations if e.data.request_id == request_id]
    assert [d.status for d in mine].count("started") == 1, [d.status for d in mine]
    [retrying] = [d for d in mine if d.status == "retrying"]
    assert (retrying.attempt, retrying.max_attempts, retrying.error) == (1, 3, DAEMON_DIED), retrying


def test_manual_approval_then_rollback(kafka_bootstrap: str, tmp_path: Path) -> None:
    name = "router_manual"
    daemon = Daemon(
        kafka_bootstrap,
        write_policy(tmp_path / "policy.yaml", name, mode="manual"),
        tmp_path,
        env=QUICK_JOIN_ENV,
    )
    tracking = daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"]
    register_seed(tracking, name)
    daemon.start()
    try:
        produce(kafka_bootstrap, sme_feed(daemon.topics, name))
        [awaiting] = wait_for_events(daemon, daemon.topics.promotions, lambda evs: len(evs) >= 1)
        assert awaiting.data.decision == "awaiting_approval", awaiting.data.reason
        mlflow.set_tracking_uri(tracking)
        assert mlflow.genai.load_prompt(f"prompts:/{name}@production", cache_ttl_seconds=0).version == 1

        def command(action: str) -> tuple[str, bytes | None, bytes]:
            event = CommandEvent.build(CommandData(prompt=name, action=action, requested_by="ops"))
            return daemon.topics.commands, event.key, event.to_json()

        produce(kafka_bootstrap, [command("approve")])
        events = wait_for_events(daemon, daemon.topics.promotions, lambda evs: len(evs) >= 2, timeout=60)
        assert (events[-1].data.decision, events[-1].data.from_version, events[-1].data.to_version) == (
            "promoted",
            1,
            2,
        )
        assert mlflow.genai.load_prompt(f"prompts:/{name}@production", cache_ttl_seconds=0).version == 2
        produce(kafka_bootstrap, [command("rollback")])
        events = wait_for_events(daemon, daemon.topics.promotions, lambda evs: len(evs) >= 3, timeout=60)
        assert (events[-1].data.decision, events[-1].data.from_version, events[-1].data.to_version) == (
            "rolled_back",
            2,
            1,
        )
        assert mlflow.genai.load_prompt(f"prompts:/{name}@production", cache_ttl_seconds=0).version == 1
    finally:
        daemon.stop()
    assert read_topic(kafka_bootstrap, daemon.topics.dlq) == []
