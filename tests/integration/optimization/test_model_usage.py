"""The library through the fake OpenAI-compatible provider: every role's tokens and dollars in the
result are what the provider served, and a reflection model that stays down is named, not
swallowed."""

import pytest

from optimization import GepaOptimizer, OptimizationFailed, RunLimits, make_template_agent, run_mlflow_gepa
from optimization.model_calls import CallPolicy, ModelCallFailed, Price

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
    assert outcome.usage["judge"].cost_unknown and outcome.usage["judge"].cost_usd == 0.0  # no price for openai/judge
    assert outcome.cost_usd == pytest.approx(sum(u.cost_usd for u in outcome.usage.values()))
    assert outcome.final_score > outcome.initial_score


def test_a_reflection_model_that_stays_down_is_named_and_nothing_is_registered(router_prompt, router_records, fake_provider) -> None:
    train, val = router_records
    fake_provider.inject("status", code=503, times=None, model="reflector")
    optimizer = GepaOptimizer("openai:/reflector", max_metric_calls=40, model_calls=CallPolicy(max_retries=2, max_backoff=1.0))
    with pytest.raises(ModelCallFailed, match="reflection model openai/reflector: 3 consecutive 503 responses") as failure:
        optimizer.optimize(make_template_agent(router_prompt.uri, "openai/support-router"), train, [router_prompt.uri], ["exact_match"], val_data=val)
    assert isinstance(failure.value, OptimizationFailed)
    assert fake_provider.stats()["by_model"]["reflector"]["requests"] == 3
    from mlflow.tracking import MlflowClient

    assert [int(v.version) for v in MlflowClient().search_prompt_versions("support_router")] == [1]
