"""gepa-stream's optimizer library: the design guide's API over DSPy GEPA and MLflow GEPA.

Guide-level classes: `DSPyGepaOptimizer`, `GepaOptimizer`, `HumanFeedbackOptimizer`,
`PromptOptimizer`. Job-runner entry points: `run_dspy_gepa`, `run_mlflow_gepa`,
`evaluate_per_example`, `evaluate_prompt`. Deployers: `PromptRouter` (staged rollouts, see
docs/deployers.md). Models: litellm strings, MLflow URIs,
and the deterministic demo/test models `offline/*` (see `optimization.offline`).

The names load on first use (PEP 562 `__getattr__`): `import optimization.comparison` from the
daemon's pure layer, or `from optimization import DSPyGepaOptimizer` here, imports only the module
that defines the name, so DSPy, MLflow and litellm load only where a name needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names for type checkers; at run time __getattr__ imports them
    from optimization.ab_testing import ABTestResult, ab_test
    from optimization.data import convert_to_dspy_examples, split_holdout, validate_records
    from optimization.dspy_gepa_optimizer import DSPyGepaOptimizer, extract_prompts, run_dspy_gepa
    from optimization.errors import OptimizationFailed, RoutingUnavailable
    from optimization.evaluation import evaluate_per_example, evaluate_prompt, override_templates
    from optimization.human_feedback import HumanFeedbackOptimizer, feedback_records
    from optimization.metrics import adapt_metric, create_dspy_metric, create_mlflow_based_metric
    from optimization.mlflow_gepa_optimizer import GepaOptimizer, run_mlflow_gepa
    from optimization.models import ModelSpec, complete_text, make_lm, parse_model
    from optimization.production_traces import load_production_data_from_mlflow, load_production_records
    from optimization.records import RatedExample
    from optimization.registry import register_optimized_prompts, tag_prompt_version
    from optimization.results import (
        Candidate,
        DSPyOptimizationResult,
        HeldOutScores,
        PromptOptimizationOutcome,
    )
    from optimization.routing import PromptRouter, Route, RoutingTable
    from optimization.run_control import RunLimits
    from optimization.scorers import resolve_scorers
    from optimization.sme_metric import SMERatingMetric, rated_examples, resolve_rated_scorers
    from optimization.template_agent import make_template_agent
    from optimization.unified import PromptOptimizer

_MODULES = {
    "optimization.ab_testing": ("ABTestResult", "ab_test"),
    "optimization.data": ("convert_to_dspy_examples", "split_holdout", "validate_records"),
    "optimization.dspy_gepa_optimizer": ("DSPyGepaOptimizer", "extract_prompts", "run_dspy_gepa"),
    "optimization.errors": ("OptimizationFailed", "RoutingUnavailable"),
    "optimization.evaluation": ("evaluate_per_example", "evaluate_prompt", "override_templates"),
    "optimization.human_feedback": ("HumanFeedbackOptimizer", "feedback_records"),
    "optimization.metrics": ("adapt_metric", "create_dspy_metric", "create_mlflow_based_metric"),
    "optimization.mlflow_gepa_optimizer": ("GepaOptimizer", "run_mlflow_gepa"),
    "optimization.models": ("ModelSpec", "complete_text", "make_lm", "parse_model"),
    "optimization.production_traces": ("load_production_data_from_mlflow", "load_production_records"),
    "optimization.records": ("RatedExample",),
    "optimization.registry": ("register_optimized_prompts", "tag_prompt_version"),
    "optimization.results": (
        "Candidate",
        "DSPyOptimizationResult",
        "HeldOutScores",
        "PromptOptimizationOutcome",
    ),
    "optimization.routing": ("PromptRouter", "Route", "RoutingTable"),
    "optimization.run_control": ("RunLimits",),
    "optimization.scorers": ("resolve_scorers",),
    "optimization.sme_metric": ("SMERatingMetric", "rated_examples", "resolve_rated_scorers"),
    "optimization.template_agent": ("make_template_agent",),
    "optimization.unified": ("PromptOptimizer",),
}
_MODULE_OF = {name: module for module, names in _MODULES.items() for name in names}
__all__ = [
    "ABTestResult",
    "Candidate",
    "DSPyGepaOptimizer",
    "DSPyOptimizationResult",
    "GepaOptimizer",
    "HeldOutScores",
    "HumanFeedbackOptimizer",
    "ModelSpec",
    "OptimizationFailed",
    "PromptOptimizationOutcome",
    "PromptOptimizer",
    "PromptRouter",
    "RatedExample",
    "Route",
    "RoutingTable",
    "RoutingUnavailable",
    "RunLimits",
    "SMERatingMetric",
    "ab_test",
    "adapt_metric",
    "complete_text",
    "convert_to_dspy_examples",
    "create_dspy_metric",
    "create_mlflow_based_metric",
    "evaluate_per_example",
    "evaluate_prompt",
    "extract_prompts",
    "feedback_records",
    "load_production_data_from_mlflow",
    "load_production_records",
    "make_lm",
    "make_template_agent",
    "override_templates",
    "parse_model",
    "rated_examples",
    "register_optimized_prompts",
    "resolve_rated_scorers",
    "resolve_scorers",
    "run_dspy_gepa",
    "run_mlflow_gepa",
    "split_holdout",
    "tag_prompt_version",
    "validate_records",
]


def __getattr__(name: str) -> Any:
    """Import the module defining `name` on first access, and keep the name here."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'optimization' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
