"""Held-out evaluation: per-example scores of a predict_fn (or a prompt + model) for paired comparison.

`override_templates` makes `load_prompt(...)` return candidate templates for
the duration of a block, so a candidate is evaluated without registering it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from mlflow.entities.model_registry import PromptVersion
from mlflow.genai.scorers import Scorer

from optimization.data import validate_records
from optimization.errors import OptimizationFailed
from optimization.model_calls import CallPolicy, governed, role_scope
from optimization.models import parse_model
from optimization.scorers import run_scorers
from optimization.sme_metric import resolve_rated_scorers
from optimization.template_agent import PredictFn, as_keyword_predict_fn, make_template_agent

_PATCH_LOCK = threading.RLock()


@contextmanager
def override_templates(templates: dict[str, str] | None) -> Iterator[None]:
    """While active, text prompts named in `templates` load with the given template (process-wide, serialized)."""
    if not templates:
        yield
        return
    with _PATCH_LOCK:
        original = PromptVersion.__dict__["template"]

        def template(self: PromptVersion) -> Any:
            return (
                templates[self.name]
                if self.name in templates and self.is_text_prompt
                else original.fget(self)
            )

        # a deliberate patch of MLflow's class: mypy sees `template` as a method, it is a property
        PromptVersion.template = property(template)  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            PromptVersion.template = original  # type: ignore[method-assign]


def evaluate_per_example(
    predict_fn: PredictFn,
    examples: Sequence[dict[str, Any]],
    scorers: Sequence[str | Scorer | Any],
    *,
    judge_model: str = "databricks-claude-sonnet-4",
    num_threads: int = 1,
    templates: dict[str, str] | None = None,
    calls: CallPolicy | None = None,
) -> list[float]:
    """Score `predict_fn` on each `{"inputs", "expectations"}` example; one float in [0, 1] per example, in order.

    Model calls follow `calls` (or the enclosing run scope's policy, see `optimization.model_calls`);
    one that fails for good fails the evaluation with its named cause.

    Rated examples (`sme_rating` + `outputs`, see `sme_metric.rated_examples`) serve the `sme_rating` scorer.
    A failed prediction scores 0; if every prediction fails, OptimizationFailed is raised
    (an outage must not look like a bad prompt).
    """
    records = validate_records(list(examples), "examples")
    if not scorers:
        raise ValueError("scorers: give at least one scorer")
    resolved = resolve_rated_scorers(scorers, records, judge_model)
    call = as_keyword_predict_fn(predict_fn)
    errors: list[BaseException] = []

    def score(record: dict[str, Any]) -> float:
        try:
            with role_scope("task"):
                outputs = call(**record["inputs"])
        except Exception as error:  # one failed call scores 0; all failing raises below
            errors.append(error)
            return 0.0
        return run_scorers(resolved, record["inputs"], outputs, record.get("expectations"))[0]

    with (
        governed(
            calls or CallPolicy(), judge_model=parse_model(judge_model, "judge_model").litellm
        ) as governor,
        override_templates(templates),
        ThreadPoolExecutor(max_workers=num_threads) as pool,
    ):
        scores = list(pool.map(score, records))
    governor.raise_if_failed()
    if len(errors) == len(records):
        raise OptimizationFailed("every prediction failed during evaluation", errors[0])
    return scores


def evaluate_prompt(
    prompt_uri_or_name: str,
    model: str,
    examples: Sequence[dict[str, Any]],
    scorers: Sequence[str | Scorer | Any],
    *,
    template: str | None = None,
    judge_model: str | None = None,
    num_threads: int = 1,
) -> list[float]:
    """Per-example scores of the built-in template agent on a prompt (or on `template` in its place)."""
    agent = make_template_agent(prompt_uri_or_name, model)
    name = prompt_uri_or_name.removeprefix("prompts:/").split("/")[0].split("@")[0]
    return evaluate_per_example(
        agent,
        examples,
        scorers,
        judge_model=judge_model or model,
        num_threads=num_threads,
        templates={name: template} if template is not None else None,
    )
