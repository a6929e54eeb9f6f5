"""Registering optimized prompts: new versions with the guide's tags."""

import mlflow

from optimization import HeldOutScores, register_optimized_prompts


def test_register_optimized_prompts_uses_the_guide_tags(mlflow_store) -> None:
    (prompt,) = register_optimized_prompts(
        {"solve": "Solve it."},
        HeldOutScores([0.5], [0.75]),
        optimizer="dspy_gepa",
        source="test",
        name_prefix="math_",
    )
    tags = mlflow.genai.load_prompt(prompt.uri).tags
    assert prompt.name == "math_solve"
    assert {k: tags[k] for k in ("optimizer", "initial_score", "final_score", "improvement", "source")} == {
        "optimizer": "dspy_gepa",
        "initial_score": "0.5",
        "final_score": "0.75",
        "improvement": "50.0%",
        "source": "test",
    }
