"""The staged rollout end to end, daemon as a subprocess on the real broker with a sqlite MLflow,
and a deployer process per prompt (`tests/e2e/deployer.py --bursts`) that routes each burst of
requests with `PromptRouter`, serves each with the version it chose, and sends the trace and an
SME rating drawn from that version's hidden quality:

- `better`: the loop optimizes the weak seed; the gate's candidate becomes the canary, walks
  through every stage on the deployer's traffic and takes `production`; a SIGKILL of the daemon
  mid-stage comes back at the same stage with the same counts, and a redelivered burst counts
  nothing twice;
- `worse`: a canary announced outside a job (as `compare --promote` would) that rates worse is
  aborted at its first stage, `production` untouched and the template blocked.
"""

from __future__ import annotations

import json
import select
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
from tests.daemon_harness import QUICK_JOIN_ENV, Daemon, metric_value, produce, read_topic
from tests.e2e.loop_helpers import register_seed, sme_feed, wait_for_events, write_policies

pytestmark = pytest.mark.e2e

ROLLOUT = "{enabled: true, stages: [0.05, 0.25, 0.5], min_live_examples: 20, margin: 0.05}"
BETTER, WORSE = "router_canary", "router_canary_bad"
BETTER_QUALITY, WORSE_QUALITY = "1=0.55,2=0.9", "1=0.85,2=0.3"  # P(excellent) of each version
ROOT = Path(__file__).resolve().parents[2]


class Deployers:
    """The deployer processes of a test: one per prompt and quality (`--bursts`), started at its
    first burst, serving each later burst from the same process (a router made per burst)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.processes: dict[tuple[str, str], subprocess.Popen[str]] = {}

    def prepare(self, prompt: str, quality: str) -> None:
        """Start the deployer now (its imports overlap what the test waits for)."""
        self._process(prompt, quality)

    def _process(self, prompt: str, quality: str) -> subprocess.Popen[str]:
        if (prompt, quality) not in self.processes:
            daemon = self.daemon
            with (daemon.workdir / f"deployer-{prompt}.log").open("a") as log:
                self.processes[(prompt, quality)] = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.e2e.deployer",
                        daemon.bootstrap,
                        daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"],
                        prompt,
                        "--quality",
                        quality,
                        "--bursts",
                        "--topic-prefix",
                        daemon.prefix,
                    ],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )
        return self.processes[(prompt, quality)]

    def deploy(self, prompt: str, quality: str, start: int, requests: int) -> dict[str, int]:
        """One burst; requests served per version."""
        process = self._process(prompt, quality)
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(f"{start} {requests}\n")
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], 120)
        line = process.stdout.readline() if ready else ""
        if not line:
            log = (self.daemon.workdir / f"deployer-{prompt}.log").read_text()[-3000:]
            raise AssertionError(f"the deployer of {prompt} answered nothing (exit {process.poll()}):\n{log}")
        served: dict[str, int] = json.loads(line)
        return served

    def close(self) -> None:
        for process in self.processes.values():
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def rollout_of(daemon: Daemon, name: str) -> dict[str, Any]:
    return (daemon.status()["prompts"].get(name) or {}).get("rollout") or {}


def counted(daemon: Daemon, name: str) -> int:
    """Votes of both arms the rollout holds."""
    return votes(rollout_of(daemon, name))


def votes(rollout: dict[str, Any]) -> int:
    return int(rollout["canary"]["n"] + rollout["production"]["n"]) if rollout else 0


def burst_settled(daemon: Daemon, name: str, end: int) -> bool:
    """Every vote up to request `end` counted (or the rollout over), and no verdict of the rule
    still on its way through the optimizer role (`pending`): the stage it shows is where the next
    burst will be routed."""
    rollout = rollout_of(daemon, name)
    return (votes(rollout) >= end or rollout.get("state") != "canary") and rollout.get("pending") is None


def deploy_until(
    deployers: Deployers,
    prompt: str,
    quality: str,
    start: int,
    burst: int,
    state: str,
    stage: int | None = None,
) -> int:
    """Bursts of `burst` requests, each counted (and the verdict it brought applied) before the
    next, until the rollout is in `state` (at `stage`); the next request index."""
    daemon = deployers.daemon
    for _ in range(8):
        rollout = rollout_of(daemon, prompt)
        if rollout.get("state") == state and stage in (None, rollout.get("stage")):
            return start
        deployers.deploy(prompt, quality, start, burst)
        start += burst
        daemon.wait_until(
            lambda end=start: burst_settled(daemon, prompt, end), 60, f"{prompt}'s burst counted"
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
    daemon = Daemon(kafka_bootstrap, policy, tmp_path, env=QUICK_JOIN_ENV)
    tracking = daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"]
    for name in (BETTER, WORSE):
        register_seed(tracking, name)
    prompt_versions.ensure_production(WORSE)
    deployers = Deployers(daemon)
    try:
        daemon.launch()
        deployers.prepare(WORSE, WORSE_QUALITY)
        deployers.prepare(BETTER, BETTER_QUALITY)
        daemon.wait_ready()
        # 1. `better`: its feed fires the loop, whose GEPA job runs while step 2 does
        produce(kafka_bootstrap, sme_feed(daemon.topics, BETTER))

        # 2. `worse` meanwhile: a canary that rates worse is aborted at its first stage
        start_canary_outside_a_job(daemon, WORSE, "Route {{ticket}} to whatever comes to mind.")
        daemon.wait_until(lambda: rollout_of(daemon, WORSE).get("state") == "canary", 60, "the bad rollout")
        served = deployers.deploy(WORSE, WORSE_QUALITY, 0, 400)
        assert 8 <= served.get("2", 0) <= 40, served  # ~5 % of 400, the same users every run
        deploy_until(deployers, WORSE, WORSE_QUALITY, 400, 200, "canary_aborted")
        assert [d for d, _ in decisions(daemon, WORSE)] == ["canary_started", "canary_aborted"]
        aborted = rollout_of(daemon, WORSE)
        assert aborted["stage"] == 0 and aborted["upper"] < 0
        assert prompt_versions.production(WORSE).version == 1 and canary_alias(WORSE) is None  # type: ignore[union-attr]
        assert prompt_versions.registry(WORSE).blocked == {2: "rollout"}

        # 1b. `better`: the loop's candidate passes the gate and becomes the canary at 5 %
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

        # 3. `better` walks the stages: 5 % -> 25 % ...
        start = deploy_until(deployers, BETTER, BETTER_QUALITY, 0, 400, "canary", stage=1)
        assert canary_alias(BETTER) == 2 and prompt_versions.registry(BETTER).share == 0.25

        # 4. ... a few votes into the stage, SIGKILL: the same stage and counts after restart
        deployers.deploy(BETTER, BETTER_QUALITY, start, 20)
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
        deployers.deploy(BETTER, BETTER_QUALITY, start, 20)  # redelivered: counted once ...
        deployers.deploy(BETTER, BETTER_QUALITY, start + 20, 1)  # ... as this one, behind it, shows
        daemon.wait_until(lambda: counted(daemon, BETTER) >= start + 21, 60, "the redelivered burst read")
        assert counted(daemon, BETTER) == start + 21

        # 5. the rest of the stages, then production moves to the canary
        deploy_until(deployers, BETTER, BETTER_QUALITY, start + 21, 300, "promoted")
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
        deployers.close()
        daemon.stop()
