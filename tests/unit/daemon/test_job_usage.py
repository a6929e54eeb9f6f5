"""A job's model-call scope: the policy it takes from the prompt, and the usage it keeps across attempts."""

from __future__ import annotations

from pathlib import Path

from daemon.jobs.run_dir import RunDir
from daemon.jobs.spec import JobSpec
from daemon.jobs.usage import call_policy, job_model_calls
from schemas.config import PromptPolicy


def _spec(**policy: object) -> JobSpec:
    return JobSpec(
        request_id="r1",
        prompt="p",
        policy=PromptPolicy(name="p", **policy),
        tracking_uri="sqlite:///x.db",
        window_size=1,
    )


def test_the_policy_of_a_prompts_model_calls() -> None:
    policy = call_policy(
        _spec(
            model_calls={
                "timeout": "5s",
                "max_retries": 2,
                "prices": {"openai:/m": {"input_per_million": 1, "output_per_million": 3}},
            }
        ).policy
    )
    assert (policy.timeout, policy.max_retries, policy.max_backoff) == (5.0, 2, 30.0)
    assert (policy.prices["openai/m"].input, policy.prices["openai/m"].output) == (1.0, 3.0)


def test_a_resumed_job_adds_to_the_usage_its_earlier_attempts_recorded(tmp_path: Path) -> None:
    spec = _spec(reflection_model="openai/r")
    run = RunDir(tmp_path)
    with job_model_calls(spec, run) as calls:
        calls.ledger.record("task", prompt_tokens=10, completion_tokens=2, cost=0.5)
        assert calls.judge_model == "openai/r"  # the judge defaults to the reflection model
    with job_model_calls(spec, run) as calls:
        calls.ledger.record("task", prompt_tokens=5, completion_tokens=1, cost=None)
        assert calls.ledger.cost_usd == 0.5
    usage = run.usage()
    assert usage is not None
    task = usage.roles["task"]
    assert (task.calls, task.prompt_tokens, task.completion_tokens, task.cost_usd, task.cost_unknown) == (
        2,
        15,
        3,
        0.5,
        True,
    )
    assert usage.cost_usd == 0.5 and usage.cost_unknown
