"""Guide, "Production Optimization with DSPy GEPA": MLflow traces -> DSPy GEPA with MLflow scorers -> registry.

Changed from the guide only where it needs a real provider or a live workspace:
the agent's LM is `offline/support-agent` (a deterministic demo model); the
scorers are resolved by name with the offline demo judge (`offline/judge`)
because `Correctness(model=...)` needs an LLM and `Relevance` does not exist in
MLflow 3.17; MLflow is a local sqlite store, and "production" traces with
expectations are logged first so there is something to load. The library's
`load_production_data_from_mlflow` and `create_mlflow_based_metric` replace the
guide's inline versions; the continuous pipeline runs once instead of on a schedule.
"""

from __future__ import annotations

import dspy
import mlflow

from examples._local import use_local_mlflow
from examples.support_data import ANSWERS, QUESTIONS
from optimization import DSPyGepaOptimizer, load_production_data_from_mlflow, make_lm, resolve_scorers
from optimization.dspy_gepa_optimizer import create_mlflow_based_metric
from optimization.registry import score_tags


class ProductionAgent(dspy.Module):
    """The guide's production DSPy agent."""

    def __init__(self):
        self.answer = dspy.ChainOfThought("query -> response")

    def forward(self, query):
        return self.answer(query=query)


def log_production_traffic(experiment_name: str, questions: list[tuple[str, str]]) -> str:
    """Simulate production: trace the agent on each question and log the SME's expected response."""
    experiment_id = mlflow.set_experiment(experiment_name).experiment_id
    agent = ProductionAgent()

    @mlflow.trace
    def serve(query: str) -> str:
        return agent(query=query).response

    traced = []
    for question, topic in questions:
        serve(query=question)
        trace_id = mlflow.get_last_active_trace_id()
        if trace_id is None:
            raise RuntimeError("MLflow tracing is off: no trace to label")
        traced.append((trace_id, ANSWERS[topic]))
    mlflow.flush_trace_async_logging()
    for trace_id, answer in traced:
        mlflow.log_expectation(trace_id=trace_id, name="expected_response", value=answer)
    return experiment_id


def main(workdir: str | None = None) -> dict[str, object]:
    """Run the example; return the result and the registered prompt versions."""
    use_local_mlflow(workdir)

    # Configure DSPy (guide: dspy.LM("databricks/databricks-claude-sonnet-4"))
    lm = make_lm("offline/support-agent")
    dspy.configure(lm=lm)

    train_experiment = log_production_traffic("prod-agent-123", QUESTIONS[0::2])
    val_experiment = log_production_traffic("prod-agent-val", QUESTIONS[1::2])

    # Load production feedback
    trainset = load_production_data_from_mlflow(experiment_id=train_experiment)
    valset = load_production_data_from_mlflow(experiment_id=val_experiment)

    # Define MLflow-based metric (guide: Correctness(model=...), Relevance(model=...))
    mlflow_scorers = resolve_scorers(
        [
            "correctness",
            "guidelines:The response must answer the customer's question about orders, returns, refunds, shipping or passwords",
        ],
        judge_model="offline/judge",
    )
    metric = create_mlflow_based_metric(mlflow_scorers)

    # Optimize with DSPy GEPA
    optimizer = DSPyGepaOptimizer(auto="medium")

    result = optimizer.optimize(program=ProductionAgent(), trainset=trainset, valset=valset, metric=metric)

    print("Optimization complete!")
    print(f"   Initial Score: {result.initial_score:.2f}")
    print(f"   Final Score: {result.final_score:.2f}")
    print(f"   Improvement: {result.improvement * 100:.1f}%")

    # Extract optimized prompts
    optimized_prompts = optimizer.extract_prompts(result.optimized_program)

    # Push to the Prompt Registry
    registered = []
    for module_name, prompt_template in optimized_prompts.items():
        prompt = mlflow.genai.register_prompt(
            name=f"production_agent_{module_name}",
            template=prompt_template,
            tags={
                **score_tags("dspy_gepa", result, source="production_pipeline"),
                "experiment_id": train_experiment,
            },
        )
        registered.append(prompt)
        print(f"Registered: {prompt.uri}")

    # Deploy optimized agent
    optimized_agent = result.optimized_program

    # Use in production
    response = optimized_agent(query="How do I reset my password?")
    print(f"Response: {response.response}")

    pipeline = continuous_optimization_pipeline(train_experiment, metric, min_examples=5)
    return {"result": result, "registered": registered, "pipeline": pipeline}


def continuous_optimization_pipeline(experiment_id: str, mlflow_based_metric, min_examples: int = 50) -> str:
    """The guide's daily pipeline, run once: optimize on today's traces, register only on >5% improvement."""
    # 1. Load today's production data (guide: "yesterday"; the traces here were just logged)
    trainset = load_production_data_from_mlflow(experiment_id=experiment_id, date_range="today")

    # 2. Optimize if we have enough new data
    if len(trainset) < min_examples:
        print(f"Insufficient data ({len(trainset)} examples, need {min_examples})")
        return "insufficient"
    optimizer = DSPyGepaOptimizer(auto="light")  # Fast optimization
    result = optimizer.optimize(program=ProductionAgent(), trainset=trainset, metric=mlflow_based_metric)

    # 3. Only deploy if improvement is significant
    if result.improvement > 0.05:  # >5% improvement
        prompts = optimizer.extract_prompts(result.optimized_program)
        for name, template in prompts.items():
            mlflow.genai.register_prompt(name=f"production_agent_{name}", template=template)
        print(f"Deployed new version with {result.improvement * 100:.1f}% improvement")
        return "deployed"
    print(f"Skipped deployment (improvement: {result.improvement * 100:.1f}%)")
    return "skipped"


if __name__ == "__main__":
    main()
