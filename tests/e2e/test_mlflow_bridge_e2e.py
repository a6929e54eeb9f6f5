"""End to end from MLflow: a production app logs 80 traces with `@mlflow.trace` (linked to its
registry prompt), an SME reviews half of them, `gepa-stream bridge mlflow` publishes them, and
the daemon (subprocess, real broker, offline models) counts each example once — across a bridge
restart and a second run over the same range — then optimizes and promotes."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from daemon.cli import app as cli
from tests.daemon_harness import QUICK_JOIN_ENV, Daemon, metric_value, read_topic
from tests.e2e.loop_helpers import wait_for_events, write_policy
from tests.mlflow_app import PROMPT, ProductionApp

pytestmark = pytest.mark.e2e


def _setup(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int = 40
) -> tuple[Daemon, ProductionApp]:
    """The daemon (not started) and the app on one sqlite MLflow, its trigger at `n` labeled traces;
    the bridge CLI's env points at both."""
    policy = write_policy(tmp_path / "policy.yaml", PROMPT, n=n)
    daemon = Daemon(kafka_bootstrap, policy, tmp_path, env=QUICK_JOIN_ENV)
    app = ProductionApp(tmp_path)
    assert app.tracking_uri == daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"]
    for name in ("BOOTSTRAP_SERVERS", "TOPIC_PREFIX", "MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(f"GEPA_STREAM_{name}", daemon.env[f"GEPA_STREAM_{name}"])
    monkeypatch.setenv("GEPA_STREAM_STATE_DIR", str(tmp_path / "bridge-state"))
    monkeypatch.setenv("GEPA_STREAM_CONFIG", str(policy))
    return daemon, app


def _bridge(app: ProductionApp, *args: str) -> str:
    """One `gepa-stream bridge mlflow` run (a fresh process's worth of state: only the state dir)."""
    result = CliRunner().invoke(cli, ["bridge", "mlflow", "--experiment", app.experiment_id, *args])
    assert result.exit_code == 0, result.output
    return result.output


def _examples(daemon: Daemon) -> int | None:
    return daemon.status()["prompts"].get(PROMPT, {}).get("n_examples")


def _events(daemon: Daemon, event_type: str, topic: str) -> float:
    return metric_value(
        daemon.get("/metrics") or "", "gepa_stream_events_total", type=event_type, topic=topic
    )


def test_bridge_restart_and_rerun_count_every_example_once(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, app = _setup(kafka_bootstrap, tmp_path, monkeypatch)
    daemon.launch(role="ingest")  # starts while the app serves and its SME reviews
    try:
        first = app.serve(40)
        app.serve_unlinked()
        app.review(first[::2])
        daemon.wait_ready()
        out = _bridge(app)
        assert (
            "41 new trace(s): 40 mapped, 1 unmapped (no_prompt 1); published: gepa.rating.v1 20, gepa.trace.v1 40"
            in out
        )
        daemon.wait_until(lambda: _examples(daemon) == 20, 60, "20 examples")

        second = app.serve(40)
        app.review(second[::2])
        out = _bridge(app)  # restarted: resumes from the saved position, repeats nothing
        assert "40 new trace(s): 40 mapped, 0 unmapped; published: gepa.rating.v1 20, gepa.trace.v1 40" in out
        daemon.wait_until(lambda: _examples(daemon) == 40, 60, "40 examples")

        out = _bridge(app, "--since", "2000-01-01T00:00:00")  # the same range again, from scratch
        assert "published: gepa.rating.v1 40, gepa.trace.v1 80" in out
        topics = daemon.topics
        daemon.wait_until(
            lambda: (
                (
                    _events(daemon, "gepa.trace.v1", topics.traces),
                    _events(daemon, "gepa.rating.v1", topics.ratings),
                )
                == (160, 80)
            ),
            60,
            "the daemon to consume the second run",
        )
        status = daemon.status()["prompts"][PROMPT]
        assert (status["n_examples"], status["waiting_ratings"]) == (40, 0)
        requested = [
            e for e in read_topic(kafka_bootstrap, topics.optimizations) if e.data.status == "requested"
        ]
        assert [(e.data.prompt, e.data.trigger.rule, e.data.snapshot.n_examples) for e in requested] == [
            (PROMPT, "min_examples", 40)
        ]
        assert read_topic(kafka_bootstrap, topics.dlq, idle_s=0.5) == []
    finally:
        daemon.stop()


def test_bridged_production_data_is_optimized_and_promoted(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 60 reviewed traces: MLflow's trace ids are random, and so is the held-out share of a split by
    # their hash; with 40, fewer than min_eval_examples (10) were held out in ~7 % of runs
    daemon, app = _setup(kafka_bootstrap, tmp_path, monkeypatch, n=60)
    daemon.launch()  # starts while the app serves and its SME reviews
    try:
        app.review(app.serve(120)[::2])
        daemon.wait_ready()
        _bridge(app)
        optimizations = wait_for_events(
            daemon,
            daemon.topics.optimizations,
            lambda evs: any(e.data.status in ("completed", "failed") for e in evs),
            timeout=240,
        )
        assert optimizations[-1].data.status == "completed", optimizations[-1].data.error
        promotions = wait_for_events(
            daemon,
            daemon.topics.promotions,
            lambda evs: any(e.data.prompt == PROMPT and e.data.decision == "promoted" for e in evs),
            timeout=60,
        )
        (promoted,) = [e for e in promotions if e.data.decision == "promoted"]
        assert (promoted.data.from_version, promoted.data.to_version) == (1, 2)
        assert promoted.data.candidate_score > promoted.data.baseline_score
        mlflow.set_tracking_uri(app.tracking_uri)
        assert mlflow.genai.load_prompt(f"prompts:/{PROMPT}@production", cache_ttl_seconds=0).version == 2
    finally:
        daemon.stop()
