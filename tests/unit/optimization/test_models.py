"""Model strings: accepted forms, offline options, clear errors."""

import pytest

from optimization.models import complete_text, make_lm, parse_model
from optimization.offline import OfflineEngine


@pytest.mark.parametrize(
    ("model", "litellm", "uri"),
    [
        ("openai/gpt-4.1-mini", "openai/gpt-4.1-mini", "openai:/gpt-4.1-mini"),
        ("openai:/gpt-4.1-mini", "openai/gpt-4.1-mini", "openai:/gpt-4.1-mini"),
        (
            "databricks-claude-sonnet-4",
            "databricks/databricks-claude-sonnet-4",
            "databricks:/databricks-claude-sonnet-4",
        ),
        ("offline/support-router", "offline/support-router", "offline:/support-router"),
    ],
)
def test_accepted_model_forms(model: str, litellm: str, uri: str) -> None:
    spec = parse_model(model)
    assert (spec.litellm, spec.mlflow_uri) == (litellm, uri)


def test_latency_comes_from_the_model_string_or_the_argument() -> None:
    assert parse_model("offline/support-router?latency_ms=50").latency_ms == 50
    engine = make_lm("offline/support-router?latency_ms=50", latency_ms=5).engine
    assert isinstance(engine, OfflineEngine) and engine.latency_ms == 5


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "gpt4",
        "openai/",
        "offline/unknown",
        "offline/math?latency_ms=x",
        "offline/math?speed=1",
        "openai/gpt?latency_ms=1",
    ],
)
def test_malformed_model_strings_name_the_argument(bad: str) -> None:
    with pytest.raises(ValueError, match="reflection_model"):
        parse_model(bad, "reflection_model")


def test_offline_task_model_answers_plain_prompts() -> None:
    prompt = 'Route the ticket.\nRule: if the ticket mentions "refund", the category is billing.\nTicket: I want a refund'
    assert complete_text("offline/support-router", prompt) == "billing"
