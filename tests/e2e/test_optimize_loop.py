"""End to end, daemon as a subprocess on the real broker with a sqlite MLflow and offline
models: traces and SME ratings -> requested -> started -> completed -> registered -> promoted."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.daemon_harness import QUICK_JOIN_ENV, Daemon, produce, read_topic
from tests.e2e.loop_helpers import (
    register_seed,
    sme_feed,
    validate_against_schemas,
    wait_for_events,
    write_policy,
)

pytestmark = pytest.mark.e2e


def _run_loop(
    kafka_bootstrap: str, tmp_path: Path, name: str, env: dict[str, str] | None = None, **policy
) -> tuple[Daemon, list, list, list]:
    daemon = Daemon(
        kafka_bootstrap,
        write_policy(tmp_path / "policy.yaml", name, **policy),
        tmp_path,
        env={**QUICK_JOIN_ENV, **(env or {})},
    )
    tracking = daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"]
    register_seed(tracking, name)
    daemon.start()
    produce(kafka_bootstrap, sme_feed(daemon.topics, name))
    optimizations = wait_for_events(
        daemon,
        daemon.topics.optimizations,
        lambda evs: any(e.data.status in ("completed", "failed") for e in evs),
    )
    promotions = wait_for_events(daemon, daemon.topics.promotions, lambda evs: len(evs) >= 1, timeout=60)
    registered = read_topic(kafka_bootstrap, daemon.topics.prompts)
    return daemon, optimizations, registered, promotions


def test_mlflow_backend_optimizes_registers_and_promotes(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The whole loop on the MLflow backend, under an inherited MLFLOW_EXPERIMENT_ID (users often
    export one; the daemon's jobs log to their own experiment)."""
    daemon, optimizations, registered, promotions = _run_loop(
        kafka_bootstrap, tmp_path, "router_e2e", env={"MLFLOW_EXPERIMENT_ID": "424242"}
    )
    try:
        statuses = [e.data.status for e in optimizations]
        assert statuses == ["requested", "started", "completed"], [e.data for e in optimizations]
        completed = optimizations[-1].data
        [reg] = registered
        assert (reg.data.prompt, reg.data.version, reg.data.parent_version) == ("router_e2e", 2, 1)
        assert reg.data.request_id == completed.request_id == optimizations[0].data.request_id
        [promotion] = promotions
        assert promotion.data.decision == "promoted", promotion.data.reason
        assert (promotion.data.from_version, promotion.data.to_version) == (1, 2)
        assert promotion.data.candidate_score > promotion.data.baseline_score
        assert promotion.data.ci_low > 0
        mlflow.set_tracking_uri(daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"])
        live = mlflow.genai.load_prompt("prompts:/router_e2e@production", cache_ttl_seconds=0)
        assert live.version == 2
        tags = MlflowClient().get_prompt_version("router_e2e", "2").tags
        assert tags["gepa_stream.request_id"] == completed.request_id
        assert float(tags["initial_score"]) == completed.baseline_score == reg.data.baseline_score
        assert float(tags["final_score"]) == completed.candidate_score == reg.data.candidate_score
        assert int(tags["gepa_stream.n_val"]) == completed.n_val == promotion.data.n_eval
        validate_against_schemas([*optimizations, *registered, *promotions])
        status = daemon.status()
        assert status["prompts"]["router_e2e"]["trigger"]["in_flight"] is None
        assert status["prompts"]["router_e2e"]["trigger"]["baseline_score"] == promotion.data.candidate_score
    finally:
        daemon.stop()


def test_dspy_backend_optimizes_registers_per_predictor_and_promotes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = "router_dspy"
    daemon = Daemon(
        kafka_bootstrap,
        write_policy(
            tmp_path / "policy.yaml", name, backend="dspy", program="examples.router_program:make_program"
        ),
        tmp_path,
        env={**QUICK_JOIN_ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        daemon.start()
        produce(kafka_bootstrap, sme_feed(daemon.topics, name))
        optimizations = wait_for_events(
            daemon,
            daemon.topics.optimizations,
            lambda evs: any(e.data.status in ("completed", "failed") for e in evs),
        )
        assert [e.data.status for e in optimizations] == ["requested", "started", "completed"], [
            e.data for e in optimizations
        ]
        completed = optimizations[-1].data
        predictor_prompt = f"{name}_route"
        [reg] = read_topic(kafka_bootstrap, daemon.topics.prompts)
        assert (reg.data.prompt, reg.data.optimizer, reg.data.parent_version, reg.data.version) == (
            predictor_prompt,
            "dspy_gepa",
            1,
            2,
        )
        [promotion] = wait_for_events(daemon, daemon.topics.promotions, lambda evs: len(evs) >= 1, timeout=60)
        assert promotion.data.decision == "promoted", promotion.data.reason
        mlflow.set_tracking_uri(daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"])
        live = mlflow.genai.load_prompt(f"prompts:/{predictor_prompt}@production", cache_ttl_seconds=0)
        assert live.version == 2 and "billing" in live.template
        tags = MlflowClient().get_prompt_version(predictor_prompt, "2").tags
        assert float(tags["final_score"]) == completed.candidate_score
        runs = mlflow.search_runs(
            search_all_experiments=True,
            filter_string=f"tags.`gepa_stream.request_id` = '{completed.request_id}'",
        )
        assert len(runs) == 1, "the optimized program is logged to MLflow"
        validate_against_schemas([*optimizations, reg, promotion])
    finally:
        daemon.stop()


def test_a_candidate_that_does_not_improve_leaves_the_alias_where_it_was(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Null test: the reflection model returns the instruction unchanged."""
    daemon, optimizations, registered, promotions = _run_loop(
        kafka_bootstrap, tmp_path, "router_null", reflector="offline/unchanged-reflector"
    )
    daemon.stop()
    assert [e.data.status for e in optimizations][-1] == "completed", [e.data for e in optimizations]
    [promotion] = promotions
    assert promotion.data.decision in ("rejected", "inconclusive"), promotion.data.reason
    mlflow.set_tracking_uri(daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"])
    assert mlflow.genai.load_prompt("prompts:/router_null@production", cache_ttl_seconds=0).version == 1
