"""The daemon through a real-provider path: the fake OpenAI-compatible provider on loopback,
real model strings (`openai/...` litellm strings, `openai:/...` MLflow URIs), both backends.

One daemon runs five prompts' jobs at once. Faults target model names only one scenario
uses (the never-answering task model `math`, the reflection model `unchanged-reflector`
that stays down), or hit whichever healthy job calls first (two 429s on `support-router`).
Token figures are checked against what the provider itself counted, per model, summed over
the jobs that used it; dollars against the policy's prices.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from optimization.offline.provider import FakeProvider
from tests.daemon_harness import QUICK_JOIN_ENV, Daemon, job_processes, metric_value, produce, read_topic
from tests.e2e.loop_helpers import register_seed, sme_feed, validate_against_schemas

pytestmark = pytest.mark.e2e

N_EXAMPLES = 40
PRICE = {"input_per_million": 100.0, "output_per_million": 200.0}
PRICED = ("support-router", "reflector", "judge")
MLFLOW = {"backend": "mlflow", "task_model": "openai/support-router", "reflection_model": "openai:/reflector"}
DSPY = {
    "backend": "dspy",
    "program": "examples.router_program:make_program",
    "task_model": "openai/support-router",
    "reflection_model": "openai/reflector",
}
COMMON = {
    "input_keys": ["ticket"],
    "window": {"max_examples": 500},
    "triggers": {"min_examples": N_EXAMPLES, "min_new_examples": 1000, "cooldown": "1h"},
    "promotion": {"mode": "auto", "min_eval_examples": 10, "holdout_fraction": 0.35},
    "model_calls": {"max_retries": 4, "max_backoff": "1s", "prices": {f"openai/{m}": PRICE for m in PRICED}},
    "budget": {"max_metric_calls": 40, "max_wall_time": "5m", "num_threads": 4},
}
PROMPTS: dict[str, dict[str, Any]] = {
    "fp_mlflow": MLFLOW,
    "fp_dspy": DSPY,
    "fp_cost": {
        **MLFLOW,
        "judge_model": "openai:/judge",
        "scorers": ["exact_match", "correctness"],
        "budget": {**COMMON["budget"], "max_cost_usd": 0.5},
    },
    "fp_down": {**DSPY, "reflection_model": "openai/unchanged-reflector"},
    "fp_hang": {
        **MLFLOW,
        "task_model": "openai/math",
        "model_calls": {"timeout": "2s", "max_retries": 1, "max_backoff": "1s"},
        "budget": {**COMMON["budget"], "max_wall_time": "4m"},
    },
}
ROLE_MODELS = {  # which model each prompt's roles call at the provider (the judge only where configured)
    name: {
        "task": policy["task_model"].split("/")[-1],
        "reflection": policy["reflection_model"].split("/")[-1],
        "judge": "judge",
    }
    for name, policy in PROMPTS.items()
}


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(scope="module")
def daemon(
    kafka_bootstrap: str, provider: FakeProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    workdir = tmp_path_factory.mktemp("provider-faults")
    (workdir / "policy.yaml").write_text(
        yaml.safe_dump({"prompts": [{"name": name, **COMMON, **policy} for name, policy in PROMPTS.items()]})
    )
    env = {
        **QUICK_JOIN_ENV,
        "OPENAI_BASE_URL": provider.base_url,
        "OPENAI_API_KEY": provider.api_key,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "DSPY_CACHEDIR": str(
            workdir / "dspy-cache"
        ),  # a shared disk cache would answer calls the provider never sees
        "GEPA_STREAM_MAX_CONCURRENT_JOBS": str(len(PROMPTS)),
    }
    running = Daemon(kafka_bootstrap, workdir / "policy.yaml", workdir, env=env)
    tracking = running.env["GEPA_STREAM_MLFLOW_TRACKING_URI"]
    for name, policy in PROMPTS.items():
        if policy["backend"] == "mlflow":
            register_seed(tracking, name)
    running.start()
    yield running
    running.stop()


@dataclass
class Outcome:
    """All five jobs run: each prompt's terminal event and seconds from feed to it, and what the provider counted."""

    events: dict[str, Any]
    seconds: dict[str, float]
    served: dict[str, dict[str, int]]


@pytest.fixture(scope="module")
def outcome(daemon: Daemon, provider: FakeProvider) -> Iterator[Outcome]:
    """1. inject the faults, 2. feed every prompt its window, 3. wait for every job's terminal event."""
    provider.inject("status", code=429, retry_after=1, times=2, model="support-router")
    provider.inject("status", code=503, times=None, model="unchanged-reflector")
    provider.inject("hang", times=None, model="math")
    started = time.monotonic()
    produce(
        daemon.bootstrap, [record for name in PROMPTS for record in sme_feed(daemon.topics, name, N_EXAMPLES)]
    )
    events: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    deadline = started + 420
    try:
        while len(events) < len(PROMPTS):
            for event in read_topic(daemon.bootstrap, daemon.topics.optimizations, idle_s=0.5):
                if event.data.status in ("completed", "failed") and event.data.prompt not in events:
                    events[event.data.prompt] = event
                    seconds[event.data.prompt] = time.monotonic() - started
            assert daemon.process is not None and daemon.process.poll() is None, daemon.log.read_text()[
                -4000:
            ]
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-2000:] for p in daemon.workdir.glob("state/jobs/*/job.log"))
                raise AssertionError(f"jobs without a terminal event: {set(PROMPTS) - set(events)}\n{logs}")
            time.sleep(1.0)
    finally:
        provider.clear_faults()
    yield Outcome(events, seconds, provider.stats()["by_model"])


def _usage(outcome: Outcome, name: str) -> Any:
    return outcome.events[name].data.usage


def _promotions(daemon: Daemon, prompt: str) -> list[Any]:
    return [
        e
        for e in read_topic(daemon.bootstrap, daemon.topics.promotions, idle_s=0.5)
        if e.data.prompt == prompt
    ]


def _registered(daemon: Daemon, name: str) -> list[Any]:
    return [
        e
        for e in read_topic(daemon.bootstrap, daemon.topics.prompts, idle_s=0.5)
        if e.data.prompt in (name, f"{name}_route")
    ]


def check_tokens_and_dollars_in_the_events_are_what_the_provider_served(
    outcome: Outcome, daemon: Daemon
) -> None:
    for model in PRICED:
        counted = [
            (name, role, usage)
            for name in PROMPTS
            for role, usage in (_usage(outcome, name).roles.items())
            if ROLE_MODELS[name][role] == model
        ]
        served = outcome.served[model]
        assert sum(u.prompt_tokens for _, _, u in counted) == served["prompt_tokens"], (
            model,
            counted,
            served,
        )
        assert sum(u.completion_tokens for _, _, u in counted) == served["completion_tokens"], (
            model,
            counted,
            served,
        )
        assert sum(u.calls for _, _, u in counted) == served["requests"] - served["faults"], (
            model,
            counted,
            served,
        )
        for name, role, usage in counted:
            expected = (
                usage.prompt_tokens * PRICE["input_per_million"]
                + usage.completion_tokens * PRICE["output_per_million"]
            ) / 1e6
            assert usage.cost_usd == pytest.approx(expected) and not usage.cost_unknown, (name, role, usage)
    for name in PROMPTS:
        usage = _usage(outcome, name)
        assert usage.cost_usd == pytest.approx(sum(u.cost_usd for u in usage.roles.values()))
    assert sorted(_usage(outcome, "fp_cost").roles) == ["judge", "reflection", "task"]


def check_429s_with_retry_after_are_ridden_out_and_the_jobs_complete(
    outcome: Outcome, daemon: Daemon
) -> None:
    assert outcome.served["support-router"]["faults"] == 2
    assert (
        sum(
            _usage(outcome, name).roles["task"].failed_attempts
            for name in ("fp_mlflow", "fp_dspy", "fp_cost", "fp_down")
            if "task" in _usage(outcome, name).roles
        )
        == 2
    )
    for name in ("fp_mlflow", "fp_dspy", "fp_cost"):
        assert outcome.events[name].data.status == "completed", outcome.events[name].data.error


def check_mlflow_backend_through_the_provider_registers_promotes_and_reports_usage(
    outcome: Outcome, daemon: Daemon
) -> None:
    event = outcome.events["fp_mlflow"]
    [registered] = _registered(daemon, "fp_mlflow")
    assert registered.data.usage == event.data.usage
    [promotion] = _promotions(daemon, "fp_mlflow")
    assert promotion.data.decision == "promoted", promotion.data.reason
    validate_against_schemas([event, registered])
    metrics = daemon.get("/metrics")
    task = event.data.usage.roles["task"]
    assert (
        metric_value(
            metrics, "gepa_stream_model_tokens_total", prompt="fp_mlflow", role="task", kind="prompt"
        )
        == task.prompt_tokens
    )
    assert (
        metric_value(
            metrics, "gepa_stream_model_tokens_total", prompt="fp_mlflow", role="task", kind="completion"
        )
        == task.completion_tokens
    )
    assert metric_value(
        metrics, "gepa_stream_model_cost_usd_total", prompt="fp_mlflow", role="task"
    ) == pytest.approx(task.cost_usd)
    mlflow.set_tracking_uri(daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    [run] = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`gepa_stream.request_id` = '{event.data.request_id}'",
    )
    assert run.data.metrics["model_prompt_tokens.task"] == task.prompt_tokens
    assert run.data.metrics["model_cost_usd"] == pytest.approx(event.data.usage.cost_usd)


def check_dspy_backend_through_the_provider_registers_and_promotes(outcome: Outcome, daemon: Daemon) -> None:
    event = outcome.events["fp_dspy"]
    [registered] = _registered(daemon, "fp_dspy")
    assert registered.data.prompt == "fp_dspy_route" and registered.data.usage == event.data.usage
    [promotion] = _promotions(daemon, "fp_dspy_route")
    assert promotion.data.decision == "promoted", promotion.data.reason


def check_max_cost_usd_stops_gepa_and_the_best_candidate_so_far_is_still_gated(
    outcome: Outcome, daemon: Daemon
) -> None:
    data = outcome.events["fp_cost"].data
    assert data.stopped_by == "max_cost_usd"
    assert data.budget.max_cost_usd == 0.5
    assert data.usage.cost_usd >= 0.5
    assert data.metric_calls < 40, "the cost budget, not the metric-call budget, stopped GEPA"
    [promotion] = _promotions(daemon, "fp_cost")
    assert promotion.data.to_version is not None, "the candidate went through the gate"
    for name in ("fp_mlflow", "fp_dspy"):
        assert outcome.events[name].data.stopped_by is None


def check_a_provider_that_stays_down_fails_the_job_naming_role_model_and_error(
    outcome: Outcome, daemon: Daemon
) -> None:
    data = outcome.events["fp_down"].data
    assert data.status == "failed"
    assert "reflection model openai/unchanged-reflector: 5 consecutive 503 responses" in data.error, (
        data.error
    )
    assert outcome.served["unchanged-reflector"]["requests"] == 5, "retried 4 times, then never again"
    assert data.usage.roles["reflection"].failed_attempts == 5
    assert _registered(daemon, "fp_down") == []
    mlflow.set_tracking_uri(daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"])
    assert [v.version for v in MlflowClient().search_prompt_versions("fp_down_route")] == [1]
    assert job_processes(daemon.workdir / "state" / "jobs" / data.request_id) == []


def check_a_provider_that_never_answers_fails_the_job_within_its_wall_time(
    outcome: Outcome, daemon: Daemon
) -> None:
    data = outcome.events["fp_hang"].data
    assert data.status == "failed"
    assert "task model openai/math: 2 consecutive timeouts" in data.error, data.error
    # the job ends itself on its model-call timeouts, inside its 4m wall time (the runner would kill it only at 4m + 120s)
    assert outcome.seconds["fp_hang"] < 240, f"the job took {outcome.seconds['fp_hang']:.0f}s to fail"
    assert _registered(daemon, "fp_hang") == []
    assert job_processes(daemon.workdir / "state" / "jobs" / data.request_id) == []


CHECKS = [
    check_tokens_and_dollars_in_the_events_are_what_the_provider_served,
    check_429s_with_retry_after_are_ridden_out_and_the_jobs_complete,
    check_mlflow_backend_through_the_provider_registers_promotes_and_reports_usage,
    check_dspy_backend_through_the_provider_registers_and_promotes,
    check_max_cost_usd_stops_gepa_and_the_best_candidate_so_far_is_still_gated,
    check_a_provider_that_stays_down_fails_the_job_naming_role_model_and_error,
    check_a_provider_that_never_answers_fails_the_job_within_its_wall_time,
]


def test_five_jobs_through_the_provider(subtests: pytest.Subtests, outcome: Outcome, daemon: Daemon) -> None:
    """Each claim about the five jobs a subtest (named by its check) of one test: as separate tests,
    the suite's work-stealing workers split them, and every worker that ran some of them (again after
    running another module in between) set the five jobs up anew, a minute or more each time."""
    for check in CHECKS:
        with subtests.test(check.__name__.removeprefix("check_")):
            check(outcome, daemon)
