"""The guide's optimizers on the path real users take: litellm model strings and MLflow `openai:/...`
URIs, reaching the fake OpenAI-compatible provider through `OPENAI_BASE_URL` / `api_base` with an
API key — not the offline models, which bypass litellm."""

import dspy
import mlflow
from mlflow.tracking import MlflowClient

from optimization import DSPyGepaOptimizer, GepaOptimizer, HumanFeedbackOptimizer, complete_text


def test_mlflow_path_user_agent_builtin_judge_and_reflection_through_litellm(
    router_prompt, router_records, fake_provider
) -> None:
    train, val = router_records

    def support_router(ticket: str) -> str:  # the user's own agent: loads its prompt, calls its model
        return complete_text(
            "openai/support-router", mlflow.genai.load_prompt(router_prompt.uri).format(ticket=ticket)
        )

    optimizer = GepaOptimizer(
        reflection_model="openai:/reflector",
        max_metric_calls=60,
        judge_model="openai:/judge",
        max_wall_time=300,
    )
    result = optimizer.optimize(
        predict_fn=lambda inputs: support_router(inputs["ticket"]),
        train_data=train,
        val_data=val,
        prompt_uris=[router_prompt.uri],
        scorers=["correctness"],  # MLflow's built-in Correctness judge, called through litellm
    )
    assert result.final_score > result.initial_score
    assert sorted(int(v.version) for v in MlflowClient().search_prompt_versions("support_router")) == [1, 2]
    assert "Rule: if the ticket mentions" in mlflow.genai.load_prompt("prompts:/support_router/2").template
    served = fake_provider.stats()["by_model"]
    assert (
        served["support-router"]["requests"] > 0
        and served["judge"]["requests"] > 0
        and served["reflector"]["requests"] > 0
    )


class Route(dspy.Signature):
    """Route this support ticket to billing, shipping, technical or account.
    Rule: if the ticket mentions "crash", the category is technical."""

    ticket: str = dspy.InputField()
    category: str = dspy.OutputField()


def test_dspy_path_with_dspys_reflection_lm_keyword(router_records, fake_provider) -> None:
    train, val = router_records

    def as_examples(records: list[dict]) -> list[dspy.Example]:
        return [
            dspy.Example(
                ticket=r["inputs"]["ticket"], category=r["expectations"]["expected_response"]
            ).with_inputs("ticket")
            for r in records
        ]

    task_lm = dspy.LM(
        "openai/support-router", api_base=fake_provider.base_url, api_key=fake_provider.api_key, cache=False
    )
    reflection_lm = dspy.LM(
        "openai/reflector", api_base=fake_provider.base_url, api_key=fake_provider.api_key, cache=False
    )

    def accuracy(example, prediction, trace=None):
        return float(prediction.category.strip().lower() == example.category)

    with dspy.context(lm=task_lm):
        result = DSPyGepaOptimizer(auto="light", reflection_lm=reflection_lm, max_wall_time=300).optimize(
            program=dspy.Predict(Route), trainset=as_examples(train), valset=as_examples(val), metric=accuracy
        )
    assert result.final_score > result.initial_score
    assert "Rule: if the ticket mentions" in next(iter(result.instructions.values())).split("crash", 1)[1]
    served = fake_provider.stats()["by_model"]
    assert served["support-router"]["requests"] > 0 and served["reflector"]["requests"] > 0


def test_human_feedback_ratings_only_through_litellm(mlflow_store, fake_provider) -> None:
    from examples.support_data import ANSWERS, QUESTIONS

    mlflow.genai.register_prompt(name="agent", template="Answer the customer query professionally: {{query}}")

    def my_agent(query: str) -> str:
        return complete_text(
            "openai/support-agent", mlflow.genai.load_prompt("prompts:/agent/1").format(query=query)
        )

    feedback = [{"inputs": {"query": "How do I track my order?"}, "sme_rating": "excellent"}]
    for question, topic in QUESTIONS:
        feedback.append({"inputs": {"query": question}, "outputs": ANSWERS[topic], "sme_rating": "excellent"})
        feedback.append(
            {
                "inputs": {"query": question},
                "outputs": "Please contact our support team.",
                "sme_rating": "poor",
                "comment": "Generic.",
            }
        )
    result = HumanFeedbackOptimizer(
        reflection_model="openai:/reflector", max_metric_calls=60, register=False, max_wall_time=300
    ).optimize_from_feedback(
        predict_fn=my_agent, feedback=feedback, prompt_uris=["prompts:/agent/1"], use_ratings_as_metric=True
    )
    assert result.final_score > result.initial_score
    assert (
        fake_provider.stats()["by_model"]["support-agent"]["requests"] > 0
        and fake_provider.stats()["by_model"]["reflector"]["requests"] > 0
    )
