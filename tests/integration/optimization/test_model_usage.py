"""The library through the fake OpenAI-compatible provider: every role's tokens and dollars in the
result are what the provider served; 429 (waiting its Retry-After), 5xx, connection resets and
malformed answers are retried; a silent provider times out; a reflection model that stays down
is named, not swallowed."""

import time

import dspy
import pytest

from optimization import (
    GepaOptimizer,
    OptimizationFailed,
    RunLimits,
    complete_text,
    make_template_agent,
    run_mlflow_gepa,
)
from optimization.model_calls import CallPolicy, ModelCallFailed, Price, governed, metered_task_calls
from optimization.models import make_lm
from optimization.offline.datasets import SEED_ROUTER_PROMPT

PRICES = {"openai/support-router": Price(1.0, 2.0), "openai/reflector": Price(3.0, 4.0)}


def test_usage_per_role_is_what_the_provider_served(router_prompt, router_records, fake_provider) -> None:
    train, val = router_records
    agent = make_template_agent(router_prompt.uri, "openai/support-router")
    outcome = run_mlflow_gepa(
        agent,
        train,
        val,
        [router_prompt.uri],
        ["exact_match", "correctness"],
        reflection_model="openai:/reflector",
        judge_model="openai:/judge",
        limits=RunLimits(max_metric_calls=40, num_threads=2, calls=CallPolicy(prices=PRICES)),
    )
    served = fake_provider.stats()["by_model"]
    for role, model in (("task", "support-router"), ("reflection", "reflector"), ("judge", "judge")):
        usage = outcome.usage[role]
        assert (usage.calls, usage.prompt_tokens, usage.completion_tokens) == (
            served[model]["requests"],
            served[model]["prompt_tokens"],
            served[model]["completion_tokens"],
        ), role
    task = outcome.usage["task"]
    assert task.cost_usd == pytest.approx((task.prompt_tokens * 1.0 + task.completion_tokens * 2.0) / 1e6)
    assert (
        outcome.usage["judge"].cost_unknown and outcome.usage["judge"].cost_usd == 0.0
    )  # no price for openai/judge
    assert outcome.cost_usd == pytest.approx(sum(u.cost_usd for u in outcome.usage.values()))
    assert outcome.final_score > outcome.initial_score


def test_a_reflection_model_that_stays_down_is_named_and_nothing_is_registered(
    router_prompt, router_records, fake_provider
) -> None:
    train, val = router_records
    fake_provider.inject("status", code=503, times=None, model="reflector")
    optimizer = GepaOptimizer(
        "openai:/reflector", max_metric_calls=40, model_calls=CallPolicy(max_retries=2, max_backoff=1.0)
    )
    with pytest.raises(
        ModelCallFailed, match="reflection model openai/reflector: 3 consecutive 503 responses"
    ) as failure:
        optimizer.optimize(
            make_template_agent(router_prompt.uri, "openai/support-router"),
            train,
            [router_prompt.uri],
            ["exact_match"],
            val_data=val,
        )
    assert isinstance(failure.value, OptimizationFailed)
    assert fake_provider.stats()["by_model"]["reflector"]["requests"] == 3
    from mlflow.tracking import MlflowClient

    assert [int(v.version) for v in MlflowClient().search_prompt_versions("support_router")] == [1]


@pytest.mark.parametrize(
    ("kind", "params", "at_least_s"),
    [
        ("status", {"code": 429, "retry_after": 2}, 2.0),
        ("status", {"code": 500}, 0.0),
        ("reset", {}, 0.0),
        ("malformed", {}, 0.0),
    ],
)
def test_litellm_faults_are_retried_and_retry_after_is_waited_out(
    fake_provider, kind, params, at_least_s
) -> None:
    fake_provider.inject(kind, times=1, model="support-router", **params)
    started = time.monotonic()
    with governed(CallPolicy(timeout=5.0, max_retries=2, max_backoff=1.0)) as calls:
        answer = complete_text("openai/support-router", "Ticket: I was charged twice")
    assert answer == complete_text(
        "offline/support-router", "Ticket: I was charged twice"
    )  # the fake serves the offline model
    assert time.monotonic() - started >= at_least_s
    assert fake_provider.stats()["by_model"]["support-router"]["requests"] == 2
    assert calls.ledger.snapshot()["task"].failed_attempts == 1


def test_a_silent_provider_times_out_and_is_named(fake_provider) -> None:
    fake_provider.inject("hang", times=None, model="support-router")
    started = time.monotonic()
    with (
        governed(CallPolicy(timeout=1.0, max_retries=1, max_backoff=1.0)),
        pytest.raises(ModelCallFailed, match="task model openai/support-router: 2 consecutive timeouts"),
    ):
        complete_text("openai/support-router", "Ticket: I was charged twice")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("model", ["openai/support-router", "openai:/support-router"])
def test_a_provider_answering_200_with_malformed_json_is_named_so(fake_provider, model) -> None:
    """litellm reports an unparseable 200 as a 500; the reason says what the provider did."""
    fake_provider.inject("malformed", times=None, model="support-router")
    with (
        governed(CallPolicy(timeout=5.0, max_retries=2, backoff=0.1, max_backoff=0.1)),
        pytest.raises(ModelCallFailed) as failure,
    ):
        complete_text(model, "Ticket: I was charged twice")
    reason = str(failure.value)
    assert reason.startswith("task model openai/support-router: 3 consecutive malformed responses"), reason
    assert "a 200 answer that is not valid JSON: Unterminated string" in reason and "500" not in reason, (
        reason
    )


def test_the_held_out_meter_counts_real_task_calls_as_the_provider_served_them(fake_provider) -> None:
    """`metered_task_calls` (behind `promotion.max_cost_increase`) through litellm: the calls, tokens
    and dollars of one version's held-out answers, plain completions and a DSPy program alike."""
    prompts = [SEED_ROUTER_PROMPT.replace("{{ticket}}", t) for t in ("refund me", "app crashes", "login")]
    with governed(CallPolicy(prices=PRICES)), metered_task_calls() as tally:
        for prompt in prompts:
            complete_text("openai/support-router", prompt)
        with dspy.context(lm=make_lm("openai/support-router")):
            dspy.Predict("ticket -> category")(ticket="I was charged twice")
    served = fake_provider.stats()["by_model"]["support-router"]
    assert (tally.calls, tally.prompt_tokens, tally.completion_tokens) == (
        served["requests"],
        served["prompt_tokens"],
        served["completion_tokens"],
    ) and served["requests"] == 4
    price = PRICES["openai/support-router"]
    expected = (served["prompt_tokens"] * price.input + served["completion_tokens"] * price.output) / 1e6
    assert tally.cost_usd == pytest.approx(expected) and not tally.cost_unknown
