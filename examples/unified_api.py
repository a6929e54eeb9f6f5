"""Guide, "Unified API": one `PromptOptimizer` for DSPy GEPA, MLflow GEPA and SME ratings.

Changed from the guide only in the models (`offline/*` demo models: `offline/math`
for the DSPy program, `offline/support-agent` behind the template agent,
`offline/reflector`), a local sqlite MLflow, and the data the guide leaves out.
"""

from __future__ import annotations

import dspy
import mlflow

from examples._local import use_local_mlflow
from examples.support_data import ANSWERS, QUESTIONS, support_records
from optimization import HeldOutScores, PromptOptimizer, make_lm, make_template_agent


def main(workdir: str | None = None) -> dict[str, HeldOutScores]:
    """Run the example; return the three results by method."""
    use_local_mlflow(workdir)
    dspy.configure(lm=make_lm("offline/math"))
    dspy_program = dspy.ChainOfThought("question -> answer")
    trainset = [
        dspy.Example(question=f"What is {a}{op}{b}?", answer=str(value)).with_inputs("question")
        for a, op, b, value in [
            (2, "+", 2, 4),
            (3, "*", 5, 15),
            (9, "-", 4, 5),
            (6, "*", 7, 42),
            (8, "-", 3, 5),
            (5, "+", 6, 11),
            (4, "*", 4, 16),
            (20, "-", 8, 12),
            (7, "*", 3, 21),
            (15, "-", 6, 9),
        ]
    ]

    def accuracy(example, pred, trace=None):
        return 1.0 if example.answer.strip() == pred.answer.strip() else 0.0

    mlflow.genai.register_prompt(name="agent", template="Answer the customer query professionally: {{query}}")
    any_function = make_template_agent("prompts:/agent/1", "offline/support-agent")
    train_data = support_records()
    sme_feedback = [
        {"inputs": {"query": question}, "outputs": ANSWERS[topic], "sme_rating": "excellent"}
        for question, topic in QUESTIONS
    ] + [{"inputs": {"query": "How do I track my order?"}, "sme_rating": "fair", "comment": "Too generic."}]

    optimizer = PromptOptimizer(reflection_model="offline/reflector")

    # DSPy GEPA
    result1 = optimizer.optimize_with_dspy_gepa(program=dspy_program, trainset=trainset, metric=accuracy)

    # MLflow GEPA
    result2 = optimizer.optimize_with_gepa(
        predict_fn=any_function, train_data=train_data, prompt_uris=["prompts:/agent/1"]
    )

    # SME Ratings
    result3 = optimizer.optimize_from_feedback(
        predict_fn=any_function,
        feedback=sme_feedback,
        prompt_uris=["prompts:/agent/1"],
        use_ratings_as_metric=True,
    )

    results = {"dspy_gepa": result1, "mlflow_gepa": result2, "sme_ratings": result3}
    for method, result in results.items():
        print(f"{method}: held-out {result.initial_score:.2f} -> {result.final_score:.2f}")
    return results


if __name__ == "__main__":
    main()
