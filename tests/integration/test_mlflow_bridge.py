"""The MLflow bridge on a real broker and a real sqlite MLflow: publish, resume without repeats,
re-run without new ids, unmapped traces reported, late assessments followed, outages retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from daemon.admin import ensure_topics
from daemon.broker import free_port
from daemon.mlflow_bridge import BridgeConfig, MlflowBridge, MlflowUnavailable
from daemon.settings import Settings, load_settings
from handlers.trace_mapping import MappingOptions
from tests.daemon_harness import metric_value, read_topic
from tests.mlflow_app import ProductionApp

pytestmark = pytest.mark.integration


def _settings(kafka_bootstrap: str, tmp_path: Path, app: ProductionApp, state: str = "state") -> Settings:
    settings = load_settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"b{uuid.uuid4().hex[:8]}.",
        mlflow_tracking_uri=app.tracking_uri,
        state_dir=tmp_path / state,
        config=tmp_path / "absent.yaml",
    )
    ensure_topics(settings)
    return settings


def _bridge(settings: Settings, app: ProductionApp, **config: object) -> MlflowBridge:
    return MlflowBridge(settings, BridgeConfig(app.experiment_id, MappingOptions(source="test"), **config))  # type: ignore[arg-type]


def _ids(settings: Settings) -> tuple[list[str], list[str]]:
    topics = settings.topics
    return [e.id for e in read_topic(settings.bootstrap_servers, topics.traces, idle_s=1.0)], [
        e.id for e in read_topic(settings.bootstrap_servers, topics.ratings, idle_s=1.0)
    ]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_publish_resume_rerun_and_unmapped(kafka_bootstrap: str, tmp_path: Path) -> None:
    app = ProductionApp(tmp_path)
    first = app.serve(20)
    app.serve_unlinked()
    app.review(first[:6])
    settings = _settings(kafka_bootstrap, tmp_path, app)
    unmapped_before = _sample("gepa_stream_bridge_unmapped_total", kind="trace", reason="no_prompt")

    counts = _bridge(settings, app).run_once()
    assert (counts.traces_mapped, dict(counts.traces_unmapped)) == (20, {"no_prompt": 1})
    assert counts.published == {"gepa.trace.v1": 20, "gepa.rating.v1": 6}
    assert (
        _sample("gepa_stream_bridge_unmapped_total", kind="trace", reason="no_prompt") == unmapped_before + 1
    )

    second = app.serve(10)
    app.review(second[:4])
    restarted = _bridge(settings, app)  # a new process: the position comes from the state dir
    counts = restarted.run_once()
    assert (counts.traces_mapped, dict(counts.traces_unmapped)) == (10, {})
    assert counts.published == {"gepa.trace.v1": 10, "gepa.rating.v1": 4}
    assert restarted.run_once().published == {}

    traces, ratings = _ids(settings)
    assert (len(traces), len(set(traces)), len(ratings), len(set(ratings))) == (30, 30, 10, 10)
    rerun = _bridge(settings, app, since_ms=0).run_once()  # the same range again, from scratch
    assert rerun.published == {"gepa.trace.v1": 30, "gepa.rating.v1": 10}
    traces_after, ratings_after = _ids(settings)
    assert set(traces_after) == set(traces) and set(ratings_after) == set(ratings)


def test_follow_picks_up_an_assessment_added_later_to_an_old_trace(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    app = ProductionApp(tmp_path)
    old = app.serve(5)
    settings = _settings(kafka_bootstrap, tmp_path, app)
    bridge = _bridge(settings, app)
    stop = threading.Event()
    worker = threading.Thread(target=bridge.follow, args=(0.2, stop), daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while bridge.counts.published["gepa.trace.v1"] < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        new = app.serve(2)
        app.review(old[:1])

        def done() -> bool:
            seen = bridge.position.traces
            return (
                all(t in seen for t in new)
                and seen[old[0]].expectations != ""
                and bridge.counts.published["gepa.rating.v1"] == 1
            )

        while not done() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        worker.join(10)
    assert done()
    traces = read_topic(settings.bootstrap_servers, settings.topics.traces, idle_s=1.0)
    assert (
        len({e.id for e in traces}) == 5 + 2 + 1
    )  # + the old trace with its new expectation (a re-send keeps its id)
    assert [e.data.expectations for e in traces if e.data.trace_id == old[0]][-1] == {
        "expected_response": app.truth[old[0]]
    }
    (rating,) = read_topic(settings.bootstrap_servers, settings.topics.ratings, idle_s=1.0)
    assert (rating.data.trace_id, rating.data.rater) == (old[0], "sme-ana")


def test_unreachable_mlflow_is_retried_then_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    settings = load_settings(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}", state_dir=tmp_path)
    started = time.monotonic()
    with pytest.raises(MlflowUnavailable, match="MLflow unreachable for 1.5s"):
        MlflowBridge(settings, BridgeConfig("1", MappingOptions(source="test"), retry_for_s=1.5))
    assert 1.0 < time.monotonic() - started < 10


def test_follow_command_serves_metrics_and_stops_on_sigterm(kafka_bootstrap: str, tmp_path: Path) -> None:
    app = ProductionApp(tmp_path)
    old = app.serve(3)
    app.serve_unlinked()
    settings = _settings(kafka_bootstrap, tmp_path, app)
    port = free_port()
    env = {
        **os.environ,
        "GEPA_STREAM_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "GEPA_STREAM_TOPIC_PREFIX": settings.topic_prefix,
        "GEPA_STREAM_MLFLOW_TRACKING_URI": app.tracking_uri,
        "GEPA_STREAM_STATE_DIR": str(settings.state_dir),
        "GEPA_STREAM_CONFIG": str(tmp_path / "absent.yaml"),
    }
    command = [
        sys.executable,
        "-m",
        "daemon",
        "bridge",
        "mlflow",
        "--experiment",
        app.experiment_id,
        "--follow",
        "--interval",
        "0.2s",
    ]
    bridge = subprocess.Popen(
        [*command, "--metrics-port", str(port)], env=env, stderr=subprocess.PIPE, text=True
    )

    def metric(name: str, **labels: str) -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                return metric_value(response.read().decode(), name, **labels)
        except OSError:
            return -1.0

    def wait_for(name: str, value: float, **labels: str) -> None:
        deadline = time.monotonic() + 30
        while metric(name, **labels) != value:
            assert bridge.poll() is None and time.monotonic() < deadline, (
                f"{name}{labels} never reached {value}"
            )
            time.sleep(0.2)

    try:
        wait_for("gepa_stream_bridge_published_total", 3, type="gepa.trace.v1")
        assert metric("gepa_stream_bridge_unmapped_total", kind="trace", reason="no_prompt") == 1
        assert metric("gepa_stream_bridge_traces_total", outcome="mapped") == 3
        app.review(old[:1])
        wait_for("gepa_stream_bridge_published_total", 1, type="gepa.rating.v1")
    finally:
        bridge.send_signal(signal.SIGTERM)
        _, stderr = bridge.communicate(timeout=30)
    assert bridge.returncode == 0, stderr
    assert "stopped; in all: 4 new trace(s): 3 mapped, 1 unmapped (no_prompt 1)" in stderr
