"""The staged rollout end to end, daemon as a subprocess on the real broker with a sqlite MLflow,
and a deployer process (`tests/e2e/deployer.py`) that routes requests with `PromptRouter`,
serves each with the version it chose, and sends the trace and an SME rating drawn from that
version's hidden quality:

- `better`: the loop optimizes the weak seed; the gate's candidate becomes the canary, walks
  through every stage on the deployer's traffic and takes `production`; a SIGKILL of the daemon
  mid-stage comes back at the same stage with the same counts, and a redelivered burst counts
  nothing twice;
- `worse`: a canary announced outside a job (as `compare --promote` would) that rates worse is
  aborted at its first stage, `production` untouched and the template blocked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from daemon import prompt_versions
from handlers.promotion import Outcome, promotion_event
from schemas.events import CANARY_ALIAS
from tests.daemon_harness import Daemon, metric_value, produce, read_topic
from tests.e2e.loop_helpers import register_seed, sme_feed, wait_for_events, write_policies

pytestmark = pytest.mark.e2e

ROLLOUT = "{enabled: true, stages: [0.05, 0.25, 0.5], min_live_examples: 20, margin: 0.05}"
BETTER, WORSE = "router_canary", "router_canary_bad"
ROOT = Path(__file__).resolve().parents[2]


def deploy(daemon: Daemon, prompt: str, quality: str, start: int, requests: int) -> dict[str, int]:
    """One burst of the deployer process; requests served per version."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.e2e.deployer",
            daemon.bootstrap,
            daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"],
            prompt,
            "--quality",
            quality,
            "--start",
            str(start),
            "--requests",
            str(requests),
            "--topic-prefix",
            daemon.prefix,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    served: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return served


def rollout_of(daemon: Daemon, name: str) -> dict[str, Any]:
    return (daemon.status()["prompts"].get(name) or {}).get("rollout") or {}


def counted(daemon: Daemon, name: str) -> int:
    """Votes of both arms the rollout holds."""
    rollout = rollout_of(daemon, name)
    return int(rollout["canary"]["n"] + rollout["production"]["n"]) if rollout else 0


def deploy_until(
    daemon: Daemon, prompt: str, quality: str, start: int, burst: int, state: str, stage: int | None = None
) -> int:
    """Bursts of `burst` requests, each counted before the next, until the rollout is in `state`
    (at `stage`); the next request index."""
    for _ in range(8):
        rollout = rollout_of(daemon, prompt)
        if rollout.get("state") == state and stage in (None, rollout.get("stage")):
            return start
        deploy(daemon, prompt, quality, start, burst)
        start += burst
        daemon.wait_until(
            lambda end=start: (
                counted(daemon, prompt) >= end or rollout_of(daemon, prompt).get("state") != "canary"
            ),
            60,
            f"{prompt}'s burst counted",
        )
    daemon.wait_until(
        lambda: (
            rollout_of(daemon, prompt).get("state") == state
            and stage in (None, rollout_of(daemon, prompt).get("stage"))
        ),
        60,
        f"{prompt}'s rollout: {state} at stage {stage}",
    )
    return start


def decisions(daemon: Daemon, name: str) -> list[tuple[str, float | None]]:
    return [
        (e.data.decision, e.data.traffic_share)
        for e in read_topic(daemon.bootstrap, daemon.topics.promotions)
        if e.data.prompt == name
    ]


def canary_alias(name: str) -> int | None:
    try:
        return int(MlflowClient().get_prompt_version_by_alias(name, CANARY_ALIAS).version)
    except MlflowException:
        return None


def start_canary_outside_a_job(daemon: Daemon, name: str, template: str) -> None:
    """The registry change a passing gate makes, then its announcement."""
    version = prompt_versions.register_candidate(name, template, "outside", {}).version
    outcome = Outcome("canary_started", "A/B test", "start_canary", 1, version, traffic_share=0.05)
    prompt_versions.apply(name, outcome)
    event = promotion_event(
        name,
        "canary_started",
        "A/B test",
        source="test",
        from_version=1,
        to_version=version,
        traffic_share=0.05,
    )
    produce(daemon.bootstrap, [(daemon.topics.promotions, event.key, event.to_json())])


def test_a_better_canary_walks_every_stage_to_production_a_worse_one_is_aborted_at_the_first(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    policy = write_policies(
        tmp_path / "policy.yaml", {name: {"rollout": ROLLOUT} for name in (BETTER, WORSE)}
    )
    daemon = Daemon(kafka_bootstrap, policy, tmp_path)
    tracking = daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"]
    for name in (BETTER, WORSE):
        register_seed(tracking, name)
    prompt_versions.ensure_production(WORSE)
    daemon.start()
    try:
        # 1. `better`: the loop's candidate passes the gate and becomes the canary at 5 %
        produce(kafka_bootstrap, sme_feed(daemon.topics, BETTER))
        events = wait_for_events(
            daemon, daemon.topics.promotions, lambda evs: any(e.data.prompt == BETTER for e in evs)
        )
        started = next(e.data for e in events if e.data.prompt == BETTER)
        assert (started.decision, started.from_version, started.to_version, started.traffic_share) == (
            "canary_started",
            1,
            2,
            0.05,
        ), started.reason
        assert prompt_versions.production(BETTER).version == 1 and canary_alias(BETTER) == 2  # type: ignore[union-attr]
        daemon.wait_until(lambda: rollout_of(daemon, BETTER).get("state") == "canary", 60, "the rollout")

        # 2. `worse` meanwhile: a canary that rates worse is aborted at its first stage
        start_canary_outside_a_job(daemon, WORSE, "Route {{ticket}} to whatever comes to mind.")
        daemon.wait_until(lambda: rollout_of(daemon, WORSE).get("state") == "canary", 60, "the bad rollout")
        served = deploy(daemon, WORSE, "1=0.85,2=0.3", 0, 400)
        assert 8 <= served.get("2", 0) <= 40, served  # ~5 % of 400, the same users every run
        deploy_until(daemon, WORSE, "1=0.85,2=0.3", 400, 200, "canary_aborted")
        assert [d for d, _ in decisions(daemon, WORSE)] == ["canary_started", "canary_aborted"]
        aborted = rollout_of(daemon, WORSE)
        assert aborted["stage"] == 0 and aborted["upper"] < 0
        assert prompt_versions.production(WORSE).version == 1 and canary_alias(WORSE) is None  # type: ignore[union-attr]
        assert prompt_versions.registry(WORSE).blocked == {2: "rollout"}

        # 3. `better` walks the stages: 5 % -> 25 % ...
        start = deploy_until(daemon, BETTER, "1=0.55,2=0.9", 0, 400, "canary", stage=1)
        assert canary_alias(BETTER) == 2 and prompt_versions.registry(BETTER).share == 0.25

        # 4. ... a few votes into the stage, SIGKILL: the same stage and counts after restart
        deploy(daemon, BETTER, "1=0.55,2=0.9", start, 20)
        daemon.wait_until(lambda: counted(daemon, BETTER) == start + 20, 60, "the burst counted")
        before = rollout_of(daemon, BETTER)
        assert before["stage"] == 1 and before["state"] == "canary"
        daemon.kill()
        daemon.start()
        daemon.wait_until(
            lambda: rollout_of(daemon, BETTER).get("state") == "canary", 60, "the rollout restored"
        )
        after = rollout_of(daemon, BETTER)
        for key in ("stage", "traffic_share", "canary", "production", "lower", "upper"):
            assert after[key] == before[key], key
        deploy(daemon, BETTER, "1=0.55,2=0.9", start, 20)  # redelivered: counted once ...
        deploy(daemon, BETTER, "1=0.55,2=0.9", start + 20, 1)  # ... as this one, behind it, shows
        daemon.wait_until(lambda: counted(daemon, BETTER) >= start + 21, 60, "the redelivered burst read")
        assert counted(daemon, BETTER) == start + 21

        # 5. the rest of the stages, then production moves to the canary
        deploy_until(daemon, BETTER, "1=0.55,2=0.9", start + 21, 300, "promoted")
        assert decisions(daemon, BETTER) == [
            ("canary_started", 0.05),
            ("canary_advanced", 0.25),
            ("canary_advanced", 0.5),
            ("promoted", 1.0),
        ]
        assert prompt_versions.production(BETTER).version == 2 and canary_alias(BETTER) is None  # type: ignore[union-attr]
        done = rollout_of(daemon, BETTER)
        assert done["lower"] > -0.05 and done["canary"]["mean"] > done["production"]["mean"]
        assert (daemon.status()["prompts"][BETTER].get("guard") or {}) == {}  # no guard after a rollout
        metrics = daemon.get("/metrics")
        assert metric_value(metrics, "gepa_stream_rollout_state", prompt=BETTER, state="promoted") == 1
        assert metric_value(metrics, "gepa_stream_rollout_state", prompt=WORSE, state="canary_aborted") == 1
        assert metric_value(metrics, "gepa_stream_rollout_traffic_share", prompt=BETTER) == 1.0
        commands = [
            e.data
            for e in read_topic(kafka_bootstrap, daemon.topics.commands)
            if e.data.requested_by == "rollout"
        ]
        assert [(c.action, c.traffic_share) for c in commands if c.prompt == WORSE] == [
            ("canary_abort", 0.05)
        ]
        assert [(c.action, c.traffic_share) for c in commands if c.prompt == BETTER] == [
            ("canary_advance", 0.05),
            ("canary_advance", 0.25),
            ("canary_advance", 0.5),
        ]
    finally:
        daemon.stop()
