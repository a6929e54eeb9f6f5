"""The built-in template agent: load an MLflow prompt inside each call, format it, call the model.

Loading inside the call is what lets `mlflow.genai.optimize_prompts` (and
`evaluation.override_templates`) swap the template under evaluation.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import mlflow

from optimization.models import complete_text, parse_model

PredictFn = Callable[..., Any]


def prompt_uri(prompt_uri_or_name: str) -> str:
    """`prompts:/...` URIs unchanged; a bare name means its latest version (`prompts:/name@latest`)."""
    if not prompt_uri_or_name or not prompt_uri_or_name.strip():
        raise ValueError("prompt_uri_or_name: empty prompt name")
    text = prompt_uri_or_name.strip()
    return text if text.startswith("prompts:/") else f"prompts:/{text}@latest"


def _as_text(formatted: Any) -> str:
    if isinstance(formatted, str):
        return formatted
    return "\n\n".join(str(message.get("content", "")) for message in formatted)


def make_template_agent(prompt_uri_or_name: str, model: str, latency_ms: float | None = None) -> PredictFn:
    """`predict_fn(**inputs) -> str` that formats the prompt with the inputs and calls `model`."""
    uri = prompt_uri(prompt_uri_or_name)
    spec = parse_model(model, "model")

    def predict_fn(**inputs: Any) -> str:
        prompt = (
            mlflow.genai.load_prompt(uri, cache_ttl_seconds=0)
            if "@" in uri
            else mlflow.genai.load_prompt(uri)
        )
        return complete_text(spec, _as_text(prompt.format(**inputs)), latency_ms)

    predict_fn.__name__ = f"template_agent[{uri}]"
    return predict_fn


def as_keyword_predict_fn(predict_fn: PredictFn) -> PredictFn:
    """MLflow calls `predict_fn(**inputs)`; also accept the guide's `lambda inputs: ...` single-dict form."""
    if not callable(predict_fn):
        raise ValueError(f"predict_fn: expected a callable, got {type(predict_fn).__name__}")
    try:
        parameters = list(inspect.signature(predict_fn).parameters.values())
    except (TypeError, ValueError):
        return predict_fn
    if (
        len(parameters) == 1
        and parameters[0].name == "inputs"
        and parameters[0].kind is not parameters[0].VAR_KEYWORD
    ):

        def keyword_predict_fn(**inputs: Any) -> Any:
            return predict_fn(inputs)

        keyword_predict_fn.__name__ = getattr(predict_fn, "__name__", "predict_fn")
        return keyword_predict_fn
    return predict_fn
