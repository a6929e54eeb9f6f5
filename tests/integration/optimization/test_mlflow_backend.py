"""MLflow backend with real mlflow.genai.optimize_prompts + GEPA, the offline router and a sqlite store."""

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from optimization import (
    GepaOptimizer,
    OptimizationFailed,
    RunLimits,
    evaluate_per_example,
    evaluate_prompt,
    make_template_agent,
    run_mlflow_gepa,
)


def versions(name="support_router"):
    return sorted(int(v.version) for v in MlflowClient().search_prompt_versions(name))


def test_run_returns_templates_and_paired_held_out_scores_without_registering(
    router_prompt, router_records
) -> None:
    train, val = router_records
    agent = make_template_agent(router_prompt.uri, "offline/support-router")
    outcome = run_mlflow_gepa(
        agent, train, val, [router_prompt.uri], ["exact_match"], limits=RunLimits(max_metric_calls=60)
    )
    assert outcome.final_score > outcome.initial_score
    assert len(outcome.baseline_scores) == len(outcome.candidate_scores) == len(val)
    assert outcome.templates["support_router"] != router_prompt.template and outcome.optimized_prompts == []
    assert versions() == [1]
    # the daemon's gate re-scores the candidate the same way, without registering it
    rescored = evaluate_prompt(
        router_prompt.uri,
        "offline/support-router",
        val,
        ["exact_match"],
        template=outcome.templates["support_router"],
    )
    assert rescored == outcome.candidate_scores


def test_register_keeps_one_tagged_version(router_prompt, router_records) -> None:
    train, val = router_records
    agent = make_template_agent("support_router", "offline/support-router")
    outcome = run_mlflow_gepa(
        agent,
        train,
        val,
        [router_prompt.uri],
        ["exact_match"],
        limits=RunLimits(max_metric_calls=60),
        register=True,
        source="test",
    )
    assert versions() == [1, 2]
    tags = mlflow.genai.load_prompt("prompts:/support_router/2").tags
    assert (
        tags["optimizer"] == "mlflow_gepa"
        and tags["source"] == "test"
        and float(tags["final_score"]) == outcome.final_score
    )


def test_failing_reflection_raises_and_registers_nothing(router_prompt, router_records) -> None:
    train, val = router_records
    agent = make_template_agent(router_prompt.uri, "offline/support-router")
    with pytest.raises(OptimizationFailed, match="outage"):
        run_mlflow_gepa(
            agent,
            train,
            val,
            [router_prompt.uri],
            ["exact_match"],
            reflection_model="offline/failing",
            limits=RunLimits(max_metric_calls=40),
            register=True,
        )
    assert versions() == [1]


def test_failing_task_model_raises(router_prompt, router_records) -> None:
    train, val = router_records
    agent = make_template_agent(router_prompt.uri, "offline/failing")
    with pytest.raises(OptimizationFailed, match="outage"):
        run_mlflow_gepa(
            agent, train, val, [router_prompt.uri], ["exact_match"], limits=RunLimits(max_metric_calls=40)
        )


def test_resume_from_run_dir_continues(router_prompt, router_records, tmp_path) -> None:
    train, val = router_records
    agent = make_template_agent(router_prompt.uri, "offline/support-router")
    calls = []

    def counted(ticket: str) -> str:
        calls.append(ticket)
        return agent(ticket=ticket)

    limits = RunLimits(max_metric_calls=10, run_dir=str(tmp_path / "run"))
    first = run_mlflow_gepa(counted, train, val, [router_prompt.uri], ["exact_match"], limits=limits)
    first_calls = len(calls)
    again = run_mlflow_gepa(counted, train, val, [router_prompt.uri], ["exact_match"], limits=limits)
    # a restart would redo the whole budget; a resume only re-scores the seed on the valset (+ MLflow's one sample check)
    assert len(calls) - first_calls <= len(val) + 1 < first_calls
    assert [c.texts for c in again.candidates] == [c.texts for c in first.candidates]


def test_guide_optimizer_accepts_a_single_dict_predict_fn_and_registers(
    router_prompt, router_records
) -> None:
    train, val = router_records
    agent = make_template_agent(router_prompt.uri, "offline/support-router")
    result = GepaOptimizer(reflection_model="offline/reflector", max_metric_calls=60).optimize(
        predict_fn=lambda inputs: agent(ticket=inputs["ticket"]),
        train_data=train + val,
        prompt_uris=[router_prompt.uri],
        scorers=["exact_match"],
    )
    (prompt,) = result.optimized_prompts
    assert prompt.version == 2 and prompt.uri == "prompts:/support_router/2" and "Rule:" in prompt.template
    assert result.improvement > 0


def test_scorer_objects_and_corrections_from_feedback(router_prompt, router_records) -> None:
    from mlflow.genai.scorers import scorer

    from optimization import HumanFeedbackOptimizer

    @scorer
    def same_queue(outputs, expectations):
        return outputs.strip() == expectations["expected_response"]

    train, val = router_records
    agent = make_template_agent(router_prompt.uri, "offline/support-router")
    outcome = run_mlflow_gepa(
        agent, train, val, [router_prompt.uri], [same_queue], limits=RunLimits(max_metric_calls=60)
    )
    assert outcome.final_score > outcome.initial_score
    feedback = [
        {"inputs": r["inputs"], "sme_rating": "poor", "correction": r["expectations"]["expected_response"]}
        for r in train + val
    ]
    result = HumanFeedbackOptimizer(
        reflection_model="offline/reflector", max_metric_calls=60, register=False
    ).optimize_from_feedback(agent, feedback, [router_prompt.uri], use_ratings_as_metric=False)
    assert result.improvement > 0 and versions() == [1]


def test_user_predict_fn_is_evaluated_with_an_override_template(router_prompt, router_records) -> None:
    _, val = router_records

    def user_agent(ticket: str) -> str:
        prompt = mlflow.genai.load_prompt(router_prompt.uri)
        return "billing" if prompt.format(ticket=ticket).startswith("billing") else "unknown"

    assert evaluate_per_example(user_agent, val, ["exact_match"], judge_model="offline/judge") == [0.0] * len(
        val
    )
    scores = evaluate_per_example(
        user_agent,
        val,
        ["exact_match"],
        judge_model="offline/judge",
        templates={"support_router": "billing\nTicket: {{ticket}}"},
    )
    assert scores == [1.0 if r["expectations"]["expected_response"] == "billing" else 0.0 for r in val]


def test_sme_rating_scorer_from_rated_records(router_prompt, router_records) -> None:
    train, val = router_records
    rated = [
        {"inputs": r["inputs"], "outputs": r["expectations"]["expected_response"], "sme_rating": "excellent"}
        for r in train + val
    ]
    rated += [
        {
            "inputs": r["inputs"],
            "outputs": "general",
            "sme_rating": 1,
            "scale": "five_point",
            "comment": "Wrong queue.",
        }
        for r in val
    ]
    agent = make_template_agent(router_prompt.uri, "offline/support-router")
    outcome = run_mlflow_gepa(
        agent,
        rated[:8],
        rated[8:12],
        [router_prompt.uri],
        ["sme_rating"],
        limits=RunLimits(max_metric_calls=60),
    )
    assert outcome.final_score > outcome.initial_score
    scores = evaluate_per_example(
        agent, rated[8:], ["sme_rating"], judge_model="offline/judge", templates=outcome.templates
    )
    assert scores[:4] == outcome.candidate_scores


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompt_uris": []}, "prompt_uris"),
        ({"input_keys": ["query"]}, "lack"),
        ({"prompt_uris": ["prompts:/missing/1"]}, "prompt_uris"),
        ({"scorers": ["nope"]}, "scorers"),
        ({"reflection_model": "gpt"}, "reflection_model"),
        ({"train_data": []}, "train_data"),
    ],
)
def test_bad_arguments_are_named(router_prompt, router_records, kwargs, match) -> None:
    train, val = router_records
    arguments = {
        "predict_fn": make_template_agent(router_prompt.uri, "offline/support-router"),
        "train_data": train,
        "val_data": val,
        "prompt_uris": [router_prompt.uri],
        "scorers": ["exact_match"],
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        run_mlflow_gepa(**arguments)
