"""The guide's A/B test as one call: two versions of a prompt, the same agent, the same
examples, paired per example and judged by the statistics of the promotion gate.

`ab_test(...)` evaluates version A and version B by swapping the prompt's template
under the agent (`override_templates`), so a user agent that loads the prompt by
alias is tested exactly as the built-in template agent is. With `promote=True` the
alias moves to B only when the comparison passes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.genai.scorers import Scorer

from optimization.comparison import Comparison, compare_paired
from optimization.evaluation import evaluate_per_example
from optimization.template_agent import PredictFn, make_template_agent
from schemas.events import PRODUCTION_ALIAS


@dataclass(frozen=True)
class ABTestResult:
    """The paired comparison of B against A, the per-example scores behind it, and whether B was promoted."""

    prompt: str
    version_a: int
    version_b: int
    comparison: Comparison
    scores_a: list[float]
    scores_b: list[float]
    promoted: bool = False

    @property
    def passed(self) -> bool:
        return self.comparison.decision == "promoted"


def load_examples(path: Path) -> list[dict[str, Any]]:
    """`{"inputs": {...}, "expectations": {...}}` records, one JSON object per line (blank lines skipped)."""
    examples = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                examples.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return examples


def ab_test(
    prompt: str,
    version_a: int,
    version_b: int,
    examples: Sequence[dict[str, Any]],
    scorers: Sequence[str | Scorer | Any],
    *,
    model: str | None = None,
    predict_fn: PredictFn | None = None,
    judge_model: str | None = None,
    min_improvement: float = 0.05,
    confidence: float = 0.95,
    min_eval_examples: int = 20,
    seed: int = 0,
    num_threads: int = 1,
    promote: bool = False,
    alias: str = PRODUCTION_ALIAS,
) -> ABTestResult:
    """Compare version B of `prompt` against version A on `examples` (B is the candidate).

    The agent is `predict_fn` if given, else the built-in template agent calling `model`.
    `promote=True` points `alias` at B when the decision is `promoted`.
    """
    if predict_fn is None and model is None:
        raise ValueError("ab_test: give `model` (template agent) or `predict_fn`")
    agent = (
        predict_fn
        if predict_fn is not None
        else make_template_agent(f"prompts:/{prompt}/{version_a}", str(model))
    )
    scores_a, scores_b = (
        evaluate_per_example(
            agent,
            examples,
            scorers,
            judge_model=judge_model or model or "databricks-claude-sonnet-4",
            num_threads=num_threads,
            templates={prompt: mlflow.genai.load_prompt(f"prompts:/{prompt}/{version}").template},
        )
        for version in (version_a, version_b)
    )
    comparison = compare_paired(
        scores_a,
        scores_b,
        min_improvement=min_improvement,
        confidence=confidence,
        min_eval_examples=min_eval_examples,
        seed=seed,
    )
    passed = comparison.decision == "promoted"
    if promote and passed:
        mlflow.genai.set_prompt_alias(prompt, alias, version_b)
    return ABTestResult(prompt, version_a, version_b, comparison, scores_a, scores_b, promote and passed)
