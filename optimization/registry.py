"""Optimized prompt versions into the MLflow Prompt Registry, tagged as the design guide says
(scores, source, optimizer) and with their cost figures."""

from __future__ import annotations

from typing import Any

import mlflow

from optimization.results import HeldOutScores
from optimization.score_tag import TAG_FINAL_SCORE
from schemas.events import VersionCost


def score_tags(optimizer: str, scores: HeldOutScores, source: str) -> dict[str, str]:
    """The guide's registry tags, for the library and the daemon alike: optimizer, initial_score and
    final_score (mean held-out scores, exact: `float(tag)` gives the number back, as events carry it),
    improvement (a percentage, one decimal), source."""
    return {
        "optimizer": optimizer,
        "initial_score": repr(scores.initial_score),
        TAG_FINAL_SCORE: repr(scores.final_score),
        "improvement": f"{scores.improvement * 100:.1f}%",
        "source": source,
    }


def cost_tags(baseline: VersionCost | None, candidate: VersionCost | None) -> dict[str, str]:
    """Template tokens and the task model's tokens / USD per call of both versions, as registry
    tags (`gepa_stream.template_tokens`, `gepa_stream.baseline_template_tokens`, ...); a figure
    not measured has no tag."""
    tags = {}
    for prefix, cost in (("", candidate), ("baseline_", baseline)):
        if cost is None:
            continue
        tags[f"gepa_stream.{prefix}template_tokens"] = str(cost.template_tokens)
        if cost.tokens_per_call is not None:
            tags[f"gepa_stream.{prefix}tokens_per_call"] = f"{cost.tokens_per_call:.1f}"
        if cost.cost_per_call_usd is not None:
            tags[f"gepa_stream.{prefix}cost_per_call_usd"] = repr(cost.cost_per_call_usd)
            tags[f"gepa_stream.{prefix}cost_unknown"] = str(cost.cost_unknown).lower()
    return tags


def tag_prompt_version(
    version: Any,
    *,
    optimizer: str,
    scores: HeldOutScores,
    source: str,
    extra_tags: dict[str, str] | None = None,
) -> None:
    """Set the score tags (and `extra_tags`) on an already registered prompt version."""
    for key, value in {**score_tags(optimizer, scores, source), **(extra_tags or {})}.items():
        mlflow.genai.set_prompt_version_tag(version.name, version.version, key, value)


def register_optimized_prompts(
    templates: dict[str, str],
    scores: HeldOutScores,
    *,
    optimizer: str,
    source: str,
    name_prefix: str = "",
    extra_tags: dict[str, str] | None = None,
    commit_message: str | None = None,
) -> list[Any]:
    """Register each template as a new version of prompt `name_prefix + name`, tagged with the scores."""
    if not templates:
        raise ValueError("templates: nothing to register")
    tags = {**score_tags(optimizer, scores, source), **(extra_tags or {})}
    return [
        mlflow.genai.register_prompt(
            name=f"{name_prefix}{name}",
            template=template,
            commit_message=commit_message or f"Optimized by {optimizer}",
            tags=tags,
        )
        for name, template in templates.items()
    ]
