"""`gepa-stream compare`: the A/B test of two prompt versions with the prompt's configured agent and
scorers, judged like the promotion gate; with `promote`, the alias move is announced as a
`gepa.promotion.v1` event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from daemon import prompt_versions
from daemon.admin import KafkaUnavailable
from daemon.kafka_client import send_events
from daemon.mlflow_bridge import experiment_examples
from daemon.settings import Settings
from handlers.promotion import promotion_event
from optimization.ab_testing import ABTestResult, ab_test, load_examples
from optimization.import_ref import load_ref
from optimization.mlflow_errors import not_found
from optimization.template_agent import PredictFn
from schemas.config import ConfigError, PromptPolicy
from schemas.errors import GepaStreamError
from schemas.events import PromotionEvent


class CompareFailed(GepaStreamError, ValueError):
    """The A/B test could not run on what it was given (examples, versions, the prompt's agent or scorers)."""


def configured_agent(policy: PromptPolicy) -> PredictFn | None:
    """The policy's own `predict_fn` (`module:function`), or None for the built-in template agent."""
    if policy.backend != "mlflow":
        raise ConfigError(
            f"prompt {policy.name!r}: compare supports backend 'mlflow' only (this prompt uses {policy.backend!r})"
        )
    return load_ref(policy.predict_fn, "predict_fn") if policy.predict_fn else None


def ab_test_promotion(result: ABTestResult, from_version: int | None) -> PromotionEvent:
    """The `promoted` event for an A/B test that moved the alias to version B."""
    c = result.comparison
    return promotion_event(
        result.prompt,
        "promoted",
        f"gepa-stream compare v{result.version_a} vs v{result.version_b}: {c.reason}",
        source="gepa-stream/compare",
        from_version=from_version,
        to_version=result.version_b,
        baseline_score=c.baseline_score,
        candidate_score=c.candidate_score,
        improvement=c.improvement,
        ci_low=c.ci_low,
        ci_high=c.ci_high,
        n_eval=c.n_eval,
    )


def compare_examples(
    settings: Settings, data: Path | None, experiment: str | None, prompt: str
) -> list[dict[str, Any]]:
    """The A/B test's examples: a JSONL file, or an experiment's traces with expectations."""
    try:
        return load_examples(data) if data else experiment_examples(settings, str(experiment), prompt)
    except ValueError as exc:  # a bad line of the file names its number
        raise CompareFailed(f"compare failed: {exc}") from exc


def run_compare(
    settings: Settings,
    policy: PromptPolicy,
    version_a: int,
    version_b: int,
    examples: Sequence[dict[str, Any]],
    *,
    promote: bool = False,
    seed: int = 0,
) -> tuple[ABTestResult, PromotionEvent | None]:
    """A/B test B against A under the policy's gate; when `promote` and it passes, move the alias and
    publish the promotion event (returned too)."""
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    agent = configured_agent(policy)
    try:
        result = ab_test(
            policy.name,
            version_a,
            version_b,
            examples,
            policy.scorers,
            model=policy.task_model,
            predict_fn=agent,
            judge_model=policy.judge_model or policy.reflection_model,
            min_improvement=policy.promotion.min_improvement,
            confidence=policy.promotion.confidence,
            min_eval_examples=policy.promotion.min_eval_examples,
            seed=seed,
            num_threads=policy.budget.num_threads,
        )
    except ValueError as exc:  # the library names the argument it cannot use (examples, scorers, model)
        raise CompareFailed(f"compare failed: {exc}") from exc
    except MlflowException as exc:
        if not not_found(exc):
            raise
        raise CompareFailed(f"compare failed: {exc.message}") from exc  # a version that does not exist
    if not (promote and result.passed):
        return result, None
    # the daemon's own alias move, so a later `rollback` command knows the version it replaced
    previous = prompt_versions.move_production(policy.name, version_b)
    result = replace(result, promoted=True)
    event = ab_test_promotion(result, previous)
    try:
        send_events([(settings.topics.promotions, event)], settings)
    except KafkaUnavailable as exc:
        raise KafkaUnavailable(
            f"production moved to v{version_b}, but the promotion event was not sent: {exc}"
        ) from exc
    return result, event


def describe(result: ABTestResult) -> str:
    """The paired result as the gate sees it, one figure a line."""
    c = result.comparison
    return "\n".join(
        [
            f"A/B test {result.prompt}: v{result.version_a} (A) vs v{result.version_b} (B) on {c.n_eval} example(s)",
            f"  mean A       {c.baseline_score:.3f}",
            f"  mean B       {c.candidate_score:.3f}",
            f"  improvement  {c.improvement:+.1%} (mean difference {c.mean_difference:+.3f})",
            f"  {c.confidence:.0%} CI      [{c.ci_low:+.3f}, {c.ci_high:+.3f}] (paired bootstrap of B - A)",
            f"  decision     {c.decision}: {c.reason}",
        ]
    )
