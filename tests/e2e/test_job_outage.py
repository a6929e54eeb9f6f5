"""An MLflow outage longer than the MLflow client's retries: the job is not dropped, it waits
for MLflow (visible in /status, the log and a `retrying` event) and completes once it returns."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.daemon_harness import QUICK_JOIN_ENV, Daemon, produce, read_topic
from tests.e2e.loop_helpers import register_seed, sme_feed, wait_for_events, write_policy
from tests.mlflow_server import MlflowServer

pytestmark = pytest.mark.e2e

# MLflow's client gives up after ~6 s here (default: 7 retries with backoff, minutes)
SHORT_CLIENT_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}


def _job_state(daemon: Daemon) -> str:
    return next((job.get("state", "") for job in daemon.status().get("jobs", {}).values()), "")


def test_a_job_failed_by_an_mlflow_outage_completes_once_mlflow_returns(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = "router_outage"
    server = MlflowServer(tmp_path).start()
    policy = write_policy(
        tmp_path / "policy.yaml", name, task_model="offline/support-router?latency_ms=40", calls=120
    )
    daemon = Daemon(
        kafka_bootstrap,
        policy,
        tmp_path,
        env={"GEPA_STREAM_MLFLOW_TRACKING_URI": server.uri, **SHORT_CLIENT_RETRIES, **QUICK_JOIN_ENV},
    )
    try:
        daemon.start()
        server.wait_ready()
        register_seed(server.uri, name)
        produce(kafka_bootstrap, sme_feed(daemon.topics, name))
        daemon.wait_until(
            lambda: any(j.get("stage") == "optimize" for j in daemon.status().get("jobs", {}).values()),
            240,
            "GEPA to start",
        )
        server.stop()  # GEPA runs on the run's scratch store; the outage meets the job's next MLflow call
        seen: set[str] = set()
        daemon.wait_until(
            lambda: (
                seen.add(_job_state(daemon)) or any(s.startswith("waiting for MLflow since") for s in seen)
            ),
            240,
            "the job to wait for MLflow",
        )
        waiting = _job_state(daemon)
        server.start().wait_ready()  # on the same port and store
        optimizations = wait_for_events(
            daemon,
            daemon.topics.optimizations,
            lambda evs: any(e.data.status == "completed" for e in evs),
            timeout=300,
        )
        promotions = read_topic(kafka_bootstrap, daemon.topics.promotions)
        registered = read_topic(kafka_bootstrap, daemon.topics.prompts)
        mlflow.set_tracking_uri(server.uri)
        versions = MlflowClient().search_prompt_versions(name)
    finally:
        daemon.stop()
        server.stop()
    assert waiting.endswith("attempt 2 of 3"), waiting
    assert any(
        s.startswith("running, attempt 1 of 3; MLflow at") and "its client is retrying" in s for s in seen
    ), seen
    log = daemon.log.read_text()
    assert "its client is retrying" in log, "the log says while a job sits in MLflow's client retries"
    assert "answers again; resuming it (attempt 2 of 3)" in log

    data = [e.data for e in optimizations]
    assert [d.status for d in data if d.status in ("completed", "failed")] == ["completed"], data
    [retrying] = [d for d in data if d.status == "retrying"]
    assert retrying.attempt == 1 and f"MLflow at {server.uri} is unreachable" in (retrying.error or ""), (
        retrying
    )
    request_id = retrying.request_id

    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert [v.tags.get("gepa_stream.request_id") for v in versions if int(v.version) == 2] == [request_id]
    [announced] = [e.data for e in registered]
    assert (announced.version, announced.parent_version) == (2, 1)
    [promotion] = [e.data for e in promotions]
    assert (promotion.decision, promotion.from_version, promotion.to_version) == ("promoted", 1, 2), promotion
