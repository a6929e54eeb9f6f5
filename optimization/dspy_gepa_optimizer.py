"""DSPy backend: `dspy.GEPA` over a DSPy program, scored on held-out data.

`run_dspy_gepa` is the entry point for job runners (explicit split, budget,
wall time, run directory, threads); `DSPyGepaOptimizer` is the guide's API on top.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

import dspy

from optimization.data import convert_to_dspy_examples, split_holdout
from optimization.keywords import check_pass_through, one_reflection_model
from optimization.metrics import (
    adapt_metric,
    create_dspy_metric,
    create_mlflow_based_metric,
    exact_match_metric,
)
from optimization.model_calls import CallPolicy
from optimization.models import make_lm, parse_model
from optimization.results import Candidate, DSPyOptimizationResult
from optimization.run_control import ModelCallStopper, RunLimits, RunMonitor, run_with_deadline

__all__ = [
    "DSPyGepaOptimizer",
    "convert_to_dspy_examples",
    "create_dspy_metric",
    "create_mlflow_based_metric",
    "extract_prompts",
    "run_dspy_gepa",
]

AutoBudget = Literal["light", "medium", "heavy"]
OFFLINE_REFLECTOR = "offline/reflector"
DSPY_OWNED_OPTIONS = {
    "metric": "pass the metric to optimize()",
    "max_full_evals": "use auto= or max_metric_calls=",
    "log_dir": "use run_dir=",
    "track_stats": "always on (the result's scores come from it)",
    "perfect_score": "1.0: the run stops on a perfect held-out score",
}
"""`dspy.GEPA` options the optimizer sets itself, and what to use instead."""


def extract_prompts(program: dspy.Module) -> dict[str, str]:
    """`{predictor_name: instruction}` of a program (`answer.predict` is reported as `answer`)."""
    return {
        name.removesuffix(".predict"): predictor.signature.instructions
        for name, predictor in program.named_predictors()
    }


def _reflection_lm(reflection_model: str | dspy.BaseLM | None) -> dspy.BaseLM:
    """The reflection LM: the given one, else offline/reflector for an offline task LM, else the task LM."""
    if isinstance(reflection_model, dspy.BaseLM):
        return reflection_model
    if reflection_model is not None:
        return make_lm(reflection_model, role="reflection")
    task_lm = dspy.settings.lm
    if task_lm is None:
        raise ValueError(
            "reflection_model: no reflection model given and no LM configured with dspy.configure(lm=...)"
        )
    if str(getattr(task_lm, "model", "")).startswith("offline/"):
        return make_lm(OFFLINE_REFLECTOR, role="reflection")
    return task_lm


def required_inputs(program: dspy.Module) -> list[str]:
    """The inputs `program` needs: `forward`'s required arguments, or its only predictor's input fields."""
    parameters = list(inspect.signature(program.forward).parameters.values())
    named = [
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty
    ]
    predictors = [predictor for _, predictor in program.named_predictors()]
    if not named and len(predictors) == 1:
        return list(predictors[0].signature.input_fields)
    return named


def _check_examples(
    examples: Sequence[dspy.Example], argument: str, needed: Sequence[str] = ()
) -> list[dspy.Example]:
    if not examples:
        raise ValueError(f"{argument}: no examples given")
    for index, example in enumerate(examples):
        if not isinstance(example, dspy.Example) or not example.inputs().keys():
            raise ValueError(
                f"{argument}[{index}]: expected a dspy.Example with inputs set by .with_inputs(...)"
            )
        missing = [key for key in needed if key not in example.inputs()]
        if missing:
            raise ValueError(f"{argument}[{index}]: inputs lack {missing}, which the program needs")
    return list(examples)


def run_dspy_gepa(
    program: dspy.Module,
    trainset: Sequence[dspy.Example],
    valset: Sequence[dspy.Example],
    metric: Callable[..., Any] | None = None,
    *,
    reflection_model: str | dspy.BaseLM | None = None,
    limits: RunLimits = RunLimits(),
    auto: AutoBudget | None = None,
    **gepa_options: Any,
) -> DSPyOptimizationResult:
    """Optimize `program` with dspy.GEPA on `trainset`, selecting and scoring on `valset` (caller's split).

    Budget is `limits.max_metric_calls` unless `auto` is given. Stops on a perfect
    held-out score or the wall-time limit; resumes from `limits.run_dir`.
    Raises OptimizationFailed when reflection/model failures left only the seed.
    """
    if not list(program.named_predictors()):
        raise ValueError("program: has no predictors to optimize")
    trainset = _check_examples(trainset, "trainset", required_inputs(program))
    valset = _check_examples(valset, "valset", required_inputs(program))
    monitor = RunMonitor(report=limits.progress)
    budget = {"auto": auto} if auto else {"max_metric_calls": limits.max_metric_calls}
    extra = dict(gepa_options.pop("gepa_kwargs", {}) or {})
    with limits.model_calls() as calls:
        stopper = ModelCallStopper(calls, limits.max_cost_usd)
        optimizer = dspy.GEPA(
            metric=adapt_metric(metric or exact_match_metric),
            reflection_lm=_reflection_lm(reflection_model),
            num_threads=limits.num_threads,
            log_dir=limits.run_dir,
            track_stats=True,
            perfect_score=limits.perfect_score,
            gepa_kwargs={**extra, "stop_callbacks": limits.stop_callbacks(stopper), "callbacks": [monitor]},
            **budget,
            **gepa_options,
        )
        with monitor.capturing("dspy"):
            optimized = run_with_deadline(
                lambda: optimizer.compile(program, trainset=trainset, valset=valset), limits, calls
            )
        calls.raise_if_failed()
        usage = calls.ledger.snapshot()
    details = optimized.detailed_results
    monitor.check(len(details.candidates), details.val_aggregate_scores[0] >= limits.perfect_score)

    def per_example(index: int) -> list[float]:
        return [float(details.val_subscores[index].get(i, 0.0)) for i in range(len(valset))]

    return DSPyOptimizationResult(
        baseline_scores=per_example(0),
        candidate_scores=per_example(details.best_idx),
        metric_calls=int(details.total_metric_calls or 0),
        candidates=[
            Candidate(extract_prompts(c), float(s))
            for c, s in zip(details.candidates, details.val_aggregate_scores)
        ],
        usage=usage,
        stopped_by=stopper.fired,
        optimized_program=optimized,
        instructions=extract_prompts(optimized),
    )


class DSPyGepaOptimizer:
    """The guide's DSPy GEPA optimizer.

    `max_bootstrapped_demos`, `max_labeled_demos` and `max_rounds` are accepted
    for compatibility with DSPy's few-shot optimizers and are not used by GEPA
    (it optimizes instructions only). `reflection_model` (or dspy's name `reflection_lm`),
    `max_metric_calls` (replaces `auto`), `max_wall_time`, `num_threads`, `run_dir`,
    `max_cost_usd` and `model_calls` (timeout, retries, prices of every model call) set the
    run; other keyword options go to `dspy.GEPA` (an unknown one is a TypeError).
    """

    def __init__(
        self,
        auto: AutoBudget = "medium",
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 8,
        max_rounds: int = 3,
        *,
        reflection_model: str | dspy.BaseLM | None = None,
        reflection_lm: str | dspy.BaseLM | None = None,
        max_metric_calls: int | None = None,
        max_wall_time: float = 1800.0,
        num_threads: int = 1,
        run_dir: str | None = None,
        max_cost_usd: float | None = None,
        model_calls: CallPolicy = CallPolicy(),
        **gepa_options: Any,
    ) -> None:
        if auto not in ("light", "medium", "heavy"):
            raise ValueError(f"auto: expected 'light', 'medium' or 'heavy', got {auto!r}")
        reflection_model = one_reflection_model("DSPyGepaOptimizer", reflection_model, reflection_lm)
        if isinstance(reflection_model, str):
            parse_model(reflection_model, "reflection_model")
        check_pass_through("DSPyGepaOptimizer", gepa_options, dspy.GEPA.__init__, DSPY_OWNED_OPTIONS)
        self.auto = None if max_metric_calls is not None else auto
        self.max_bootstrapped_demos = max_bootstrapped_demos
        self.max_labeled_demos = max_labeled_demos
        self.max_rounds = max_rounds
        self.reflection_model = reflection_model
        self.limits = RunLimits(
            max_wall_time=max_wall_time,
            num_threads=num_threads,
            run_dir=run_dir,
            max_cost_usd=max_cost_usd,
            calls=model_calls,
        )
        if max_metric_calls is not None:
            self.limits = replace(self.limits, max_metric_calls=max_metric_calls)
        self.gepa_options = gepa_options

    def optimize(
        self,
        program: dspy.Module,
        trainset: list[dspy.Example],
        valset: list[dspy.Example] | None = None,
        metric: Callable[..., Any] | None = None,
    ) -> DSPyOptimizationResult:
        """Optimize `program`; scores are on `valset`, or on a deterministic held-out split of `trainset`."""
        trainset = _check_examples(trainset, "trainset")
        train, held_out = (trainset, valset) if valset else split_holdout(trainset)
        return run_dspy_gepa(
            program,
            train,
            held_out,
            metric,
            reflection_model=self.reflection_model,
            limits=self.limits,
            auto=self.auto,
            **self.gepa_options,
        )

    @staticmethod
    def extract_prompts(program: dspy.Module) -> dict[str, str]:
        """`{predictor_name: instruction}` of an (optimized) program."""
        return extract_prompts(program)
