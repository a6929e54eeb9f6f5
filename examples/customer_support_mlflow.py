"""Guide, Option 2 (MLflow GEPA): a customer-support agent written without DSPy.

Changed from the guide only where it needs a real provider: the agent calls
`offline/support-agent` (a deterministic demo model) through `complete_text`
instead of the Databricks deployment client, the reflection model is
`offline/reflector` (so the name scorers use the offline demo judges), MLflow is
a local sqlite store, and the training data is filled in.
"""

from __future__ import annotations

import mlflow

from examples._local import use_local_mlflow
from examples.support_data import support_records
from optimization import GepaOptimizer
from optimization.models import complete_text


def main(workdir: str | None = None) -> object:
    """Run the example; return the optimization result."""
    use_local_mlflow(workdir)

    # Register initial prompt
    prompt = mlflow.genai.register_prompt(
        name="customer_support", template="Answer the customer query professionally: {{query}}"
    )

    # Your existing agent (ANY framework!)
    def customer_support_agent(query: str) -> str:
        prompt = mlflow.genai.load_prompt("prompts:/customer_support/1")
        # guide: get_deploy_client("databricks").predict(endpoint="databricks-claude-sonnet-4", ...)
        return complete_text("offline/support-agent", prompt.format(query=query))

    # Training data from production logs
    train_data = support_records()

    # Optimize with MLflow GEPA
    optimizer = GepaOptimizer(reflection_model="offline/reflector", max_metric_calls=100)

    result = optimizer.optimize(
        predict_fn=lambda inputs: customer_support_agent(inputs["query"]),
        train_data=train_data,
        prompt_uris=[prompt.uri],
        scorers=["correctness", "professionalism"],
    )

    # Use optimized prompt
    optimized_prompt = result.optimized_prompts[0]
    print(f"Optimized prompt URI: {optimized_prompt.uri}")
    print(f"Held-out score: {result.initial_score:.2f} -> {result.final_score:.2f}")
    return result


if __name__ == "__main__":
    main()
