"""Guide, Option 4 (SME ratings as metrics): optimize from ratings, with no judge model.

Changed from the guide only in the models (`offline/support-agent` behind the
built-in template agent, `offline/reflector`), a local sqlite MLflow, and the
"more feedback": past answers SMEs rated (with `outputs`), on several scales,
some with comments or corrections. Items without `outputs` rate what the
current prompt answers.
"""

from __future__ import annotations

import mlflow

from examples._local import use_local_mlflow
from examples.support_data import ANSWERS, QUESTIONS
from optimization import HumanFeedbackOptimizer, make_template_agent


def main(workdir: str | None = None) -> object:
    """Run the example; return the optimization result."""
    use_local_mlflow(workdir)
    mlflow.genai.register_prompt(name="agent", template="Answer the customer query professionally: {{query}}")
    my_agent = make_template_agent("prompts:/agent/1", "offline/support-agent")

    # SME feedback with ratings only
    feedback: list[dict[str, object]] = [
        {"inputs": {"query": "How do I track my order?"}, "sme_rating": "excellent"},
        {
            "inputs": {"query": "What's your return policy?"},
            "sme_rating": "poor",  # No correction provided!
        },
        {"inputs": {"query": "Do you ship internationally?"}, "sme_rating": "fair"},
    ]
    # ... more feedback: answers SMEs rated in past reviews, on the label, five-point and thumbs scales
    scales: list[dict[str, object]] = [
        {"sme_rating": "excellent"},
        {"sme_rating": 5, "scale": "five_point"},
        {"sme_rating": "up"},
        {"sme_rating": "good"},
    ]
    for index, (question, topic) in enumerate(QUESTIONS):
        feedback.append(
            {"inputs": {"query": question}, "outputs": ANSWERS[topic], **scales[index % len(scales)]}
        )
        if index % 3 == 0:
            feedback.append(
                {
                    "inputs": {"query": question},
                    "outputs": "Please contact our support team for more details.",
                    "sme_rating": "poor",
                    "comment": "Generic; it should state our policy.",
                }
            )

    # Optimize using ratings as metric
    optimizer = HumanFeedbackOptimizer(reflection_model="offline/reflector")

    result = optimizer.optimize_from_feedback(
        predict_fn=my_agent,
        feedback=feedback,
        prompt_uris=["prompts:/agent/1"],
        use_ratings_as_metric=True,  # Use ratings directly
    )

    print(f"Optimized from {len(feedback)} SME ratings")
    print(f"Held-out score: {result.initial_score:.2f} -> {result.final_score:.2f}")
    print(f"Registered: {[p.uri for p in result.optimized_prompts]}")
    return result


if __name__ == "__main__":
    main()
