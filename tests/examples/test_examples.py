"""Every example of the design guide runs offline, improves its held-out score, and registers where it should."""

import mlflow
from mlflow.tracking import MlflowClient

from examples import (
    converters,
    customer_support_mlflow,
    math_solver,
    production_pipeline,
    sme_ratings,
    unified_api,
)


def prompt_versions(name: str) -> list[int]:
    return sorted(int(v.version) for v in MlflowClient().search_prompt_versions(name))


def test_math_solver() -> None:
    result = math_solver.main()
    assert result.final_score > result.initial_score and result.improvement > 0


def test_customer_support_mlflow(tmp_path) -> None:
    result = customer_support_mlflow.main(str(tmp_path))
    assert result.improvement > 0
    assert result.optimized_prompts[0].uri == "prompts:/customer_support/2"
    assert prompt_versions("customer_support") == [1, 2]


def test_sme_ratings(tmp_path) -> None:
    result = sme_ratings.main(str(tmp_path))
    assert result.improvement > 0 and prompt_versions("agent") == [1, 2]
    assert mlflow.genai.load_prompt("prompts:/agent/2").tags["source"] == "HumanFeedbackOptimizer"


def test_unified_api(tmp_path) -> None:
    results = unified_api.main(str(tmp_path))
    assert all(result.improvement > 0 for result in results.values())
    assert prompt_versions("agent") == [1, 2, 3]


def test_converters() -> None:
    assert converters.main().improvement > 0


def test_production_pipeline(tmp_path) -> None:
    outcome = production_pipeline.main(str(tmp_path))
    result = outcome["result"]
    assert result.improvement > 0
    (prompt,) = outcome["registered"]
    tags = mlflow.genai.load_prompt(prompt.uri).tags
    assert tags["optimizer"] == "dspy_gepa" and {
        "initial_score",
        "final_score",
        "improvement",
        "experiment_id",
    } <= set(tags)
    assert outcome["pipeline"] == "deployed" and prompt_versions("production_agent_answer") == [1, 2]
