"""MLflow backend: `mlflow.genai.optimize_prompts` with `GepaPromptOptimizer`, scored on held-out data.

`run_mlflow_gepa` is the entry point for job runners. MLflow registers a new
prompt version on every run (even without improvement); with `register=False`
that version is deleted again right after the run (its number stays used), and
with `register=True` it is kept and tagged — so one run never leaves two versions.
Offline reflection models (`offline/*`) reflect through GEPA's
`custom_candidate_proposer`, without network.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gepa
import mlflow
from mlflow.genai.optimize.optimizers import GepaPromptOptimizer
from mlflow.genai.scorers import Scorer
from mlflow.ml_package_versions import FLAVOR_TO_MODULE_NAME
from mlflow.tracing.provider import is_tracing_enabled
from mlflow.tracking import MlflowClient
from mlflow.utils.autologging_utils import AUTOLOGGING_INTEGRATIONS

from optimization.data import split_holdout, validate_records
from optimization.errors import OptimizationFailed
from optimization.keywords import check_pass_through, one_reflection_model
from optimization.model_calls import ROLE_KEY, CallPolicy, role_scope
from optimization.models import ModelSpec, parse_model
from optimization.offline.engine import REFLECTORS, reflect
from optimization.registry import tag_prompt_version
from optimization.results import Candidate, PromptOptimizationOutcome, mean
from optimization.run_control import ModelCallStopper, RunLimits, RunMonitor, run_with_deadline
from optimization.scorers import score_value
from optimization.sme_metric import resolve_rated_scorers
from optimization.template_agent import PredictFn, as_keyword_predict_fn

DEFAULT_REFLECTION_MODEL = "databricks-claude-sonnet-4"
GEPA_OWNED_OPTIONS = {
    name: "set by gepa-stream or MLflow for every run"
    for name in (
        "seed_candidate",
        "trainset",
        "adapter",
        "task_lm",
        "evaluator",
        "display_progress_bar",
        "use_mlflow",
        "stop_callbacks",
        "logger",
        "callbacks",
        "perfect_score",
    )
} | {
    "valset": "pass val_data to optimize()",
    "max_metric_calls": "use max_metric_calls=",
    "run_dir": "use run_dir=",
}
"""`gepa.optimize` options the MLflow path sets itself, and what to use instead."""

Proposer = Callable[[dict[str, str], dict[str, list[dict[str, Any]]], list[str]], dict[str, str]]


def offline_proposer(spec: ModelSpec) -> Proposer:
    """GEPA `custom_candidate_proposer` running an offline reflection model (demo/test only)."""
    if spec.model not in REFLECTORS:
        raise ValueError(f"reflection_model: offline/{spec.model} is a task model; use offline/reflector")

    def propose(
        candidate: dict[str, str], reflective_dataset: dict[str, list[dict[str, Any]]], components: list[str]
    ) -> dict[str, str]:
        if spec.latency_ms:
            time.sleep(spec.latency_ms / 1000)
        return {
            name: reflect(spec.model, candidate[name], reflective_dataset.get(name, []), spec.notes)
            for name in components
        }

    return propose


def _preload_lazy_imports() -> None:
    """Import what litellm's success-logging thread imports lazily on its first call (the proxy's
    savings module, absent from SDK-only installs), so no thread imports it mid-run. Part of the
    workaround for the MLflow/litellm import deadlock (see `_evaluation_settings`)."""
    try:
        import litellm.proxy.spend_tracking.savings  # noqa: F401
    except Exception:  # an SDK-only litellm has no proxy package: nothing to preload
        pass


@contextmanager
def _evaluation_settings(num_threads: int, trace_evaluations: bool) -> Iterator[None]:
    """Process-wide MLflow settings for one run, restored afterwards:

    1. the evaluation thread count (MLFLOW_GENAI_EVAL_MAX_WORKERS);
    2. unless `trace_evaluations`, tracing off (a trace per evaluated example costs ~30 ms and
       serializes on the store);
    3. every MLflow autolog integration the user has not configured marked disabled. Each
       evaluation of `optimize_prompts` otherwise re-configures autologging: it holds MLflow's
       import-hook lock while importing `mlflow.<flavor>` for every loaded library (`openai` gets
       loaded by the first litellm call, i.e. mid-run). If litellm's success-logging thread is
       importing a module lazily at that moment, it waits for that lock in MLflow's import
       finder while the GEPA thread waits for its module lock: an ABBA deadlock, forever
       (MLflow 3.17.2, litellm 1.110.2; 2 of 6 fresh runs hung here). Disabled integrations
       register no hook and import nothing, so the lock is never held across an import.
       (It also keeps DSPy's autolog from calling `dspy.configure` in an evaluation thread,
       which breaks every later `dspy.configure` of the process.) Integrations the user
       configured stay as they are; litellm's lazy import is preloaded for them.
    """
    previous = os.environ.get("MLFLOW_GENAI_EVAL_MAX_WORKERS")
    _preload_lazy_imports()
    left_off = [flavor for flavor in FLAVOR_TO_MODULE_NAME if flavor not in AUTOLOGGING_INTEGRATIONS]
    for flavor in left_off:
        AUTOLOGGING_INTEGRATIONS[flavor] = {"disable": True}
    os.environ["MLFLOW_GENAI_EVAL_MAX_WORKERS"] = str(num_threads)
    was_tracing = is_tracing_enabled()
    if was_tracing and not trace_evaluations:
        mlflow.tracing.disable()
    try:
        yield
    finally:
        for flavor in left_off:
            AUTOLOGGING_INTEGRATIONS.pop(flavor, None)
        if was_tracing and not trace_evaluations:
            mlflow.tracing.enable()
        if previous is None:
            os.environ.pop("MLFLOW_GENAI_EVAL_MAX_WORKERS", None)
        else:
            os.environ["MLFLOW_GENAI_EVAL_MAX_WORKERS"] = previous


def _gepa_record(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a record MLflow evaluates: inputs and expectations (ratings live in the scorer)."""
    return {"inputs": record["inputs"], "expectations": record.get("expectations") or {}}


def _load_prompts(prompt_uris: Sequence[str]) -> list[Any]:
    """Load every prompt (so a bad URI fails before GEPA starts); ValueError names `prompt_uris`."""
    if not prompt_uris:
        raise ValueError("prompt_uris: give at least one prompt URI")
    prompts = []
    for uri in prompt_uris:
        try:
            prompts.append(mlflow.genai.load_prompt(uri))
        except Exception as error:
            raise ValueError(f"prompt_uris: cannot load {uri!r} ({error})") from None
    return prompts


def run_mlflow_gepa(
    predict_fn: PredictFn,
    train_data: Sequence[dict[str, Any]],
    val_data: Sequence[dict[str, Any]],
    prompt_uris: Sequence[str],
    scorers: Sequence[str | Scorer | Any] | None = None,
    *,
    input_keys: Sequence[str] = (),
    reflection_model: str = "offline/reflector",
    judge_model: str | None = None,
    limits: RunLimits = RunLimits(),
    register: bool = False,
    source: str = "gepa-stream",
    enable_tracking: bool = False,
    trace_evaluations: bool = False,
    gepa_kwargs: dict[str, Any] | None = None,
) -> PromptOptimizationOutcome:
    """Optimize the prompts used by `predict_fn` on `train_data`, selecting and scoring on `val_data`.

    Records are `{"inputs", "expectations"}`; rated records (`sme_rating`, `outputs`, `comment`,
    `correction`) feed the `sme_rating` scorer. Every record's inputs must hold `input_keys`.
    Returns the best templates with per-example held-out baseline/candidate scores.
    Nothing stays registered unless `register` (see module docstring). Evaluations are
    traced only with `trace_evaluations` (traces feed GEPA's reflection, at ~30 ms each). Raises
    OptimizationFailed when reflection/model failures left only the seed.
    """
    train = validate_records(list(train_data), "train_data", input_keys)
    val = validate_records(list(val_data), "val_data", input_keys)
    spec = parse_model(reflection_model, "reflection_model")
    resolved = resolve_rated_scorers(scorers, train + val, judge_model or reflection_model)
    _load_prompts(prompt_uris)
    monitor = RunMonitor(report=limits.progress)
    call = as_keyword_predict_fn(predict_fn)

    def watched_predict_fn(**inputs: Any) -> Any:
        try:
            with role_scope("task"):
                return call(**inputs)
        except Exception as error:  # recorded for OptimizationFailed, then handled by MLflow as before
            monitor.log(f"predict_fn failed: {error!r}")
            raise

    with limits.model_calls(parse_model(judge_model or reflection_model, "judge_model").litellm) as calls:
        stopper = ModelCallStopper(calls, limits.max_cost_usd)
        extra = dict(gepa_kwargs or {})
        kwargs = {
            **extra,
            "valset": [_gepa_record(r) for r in val],
            "run_dir": limits.run_dir,
            "stop_callbacks": limits.stop_callbacks(stopper),
            "callbacks": [monitor],
            "logger": monitor,
            "perfect_score": limits.perfect_score,
            "reflection_lm_kwargs": {
                **(extra.get("reflection_lm_kwargs") or {}),
                "metadata": {ROLE_KEY: "reflection"},
            },
        }
        if spec.is_offline:
            kwargs["custom_candidate_proposer"] = offline_proposer(spec)
        optimizer = GepaPromptOptimizer(
            reflection_model=spec.mlflow_uri, max_metric_calls=limits.max_metric_calls, gepa_kwargs=kwargs
        )

        def optimize() -> Any:
            return mlflow.genai.optimize_prompts(
                predict_fn=watched_predict_fn,
                train_data=[_gepa_record(r) for r in train],
                prompt_uris=list(prompt_uris),
                optimizer=optimizer,
                scorers=resolved,
                aggregation=lambda scores: mean([score_value(value)[0] for value in scores.values()]),
                enable_tracking=enable_tracking,
            )

        with _evaluation_settings(limits.num_threads, trace_evaluations):
            result = run_with_deadline(optimize, limits, calls)
        try:
            calls.raise_if_failed()
            outcome = _outcome(monitor, len(val), limits.perfect_score)
        except OptimizationFailed:
            _delete_versions(result.optimized_prompts)
            raise
        outcome.usage = calls.ledger.snapshot()
        outcome.stopped_by = stopper.fired
    outcome.templates = {p.name: p.template for p in result.optimized_prompts}
    if register:
        for version in result.optimized_prompts:
            tag_prompt_version(version, optimizer="mlflow_gepa", scores=outcome, source=source)
        outcome.optimized_prompts = list(result.optimized_prompts)
    else:
        _delete_versions(result.optimized_prompts)
    return outcome


def _delete_versions(versions: Sequence[Any]) -> None:
    """Delete the prompt versions `optimize_prompts` registered (the caller decides registration)."""
    client = MlflowClient()
    for version in versions:
        client.delete_prompt_version(version.name, str(version.version))


def _outcome(monitor: RunMonitor, n_val: int, perfect_score: float) -> PromptOptimizationOutcome:
    state = monitor.final_state
    if state is None:
        raise OptimizationFailed(
            "GEPA ended without a final state", monitor.errors[0] if monitor.errors else None
        )
    subscores = state.prog_candidate_val_subscores
    averages = [mean([float(s.get(i, 0.0)) for i in range(n_val)]) for s in subscores]
    monitor.check(len(state.program_candidates), averages[0] >= perfect_score)
    best = max(range(len(averages)), key=lambda index: (averages[index], -index))
    return PromptOptimizationOutcome(
        baseline_scores=[float(subscores[0].get(i, 0.0)) for i in range(n_val)],
        candidate_scores=[float(subscores[best].get(i, 0.0)) for i in range(n_val)],
        metric_calls=int(state.total_num_evals),
        candidates=[Candidate(dict(c), a) for c, a in zip(state.program_candidates, averages)],
    )


class GepaOptimizer:
    """The guide's MLflow GEPA optimizer for any predict_fn that loads its prompts from the registry.

    `reflection_model` (or gepa's name `reflection_lm`) also judges the name scorers unless
    `judge_model` is set. Other keyword options go to `gepa.optimize` (an unknown one, or one
    the library sets, is a TypeError naming it).
    The optimized prompts are registered (unless `register=False`) as new versions
    tagged with the scores and `source` = the optimizer's class name. `model_calls` sets
    every model call's timeout, retries and prices; `max_cost_usd` stops GEPA at that spend.
    """

    def __init__(
        self,
        reflection_model: str | None = None,
        max_metric_calls: int = 100,
        *,
        reflection_lm: str | None = None,
        judge_model: str | None = None,
        max_wall_time: float = 1800.0,
        num_threads: int = 1,
        run_dir: str | None = None,
        register: bool = True,
        enable_tracking: bool = False,
        trace_evaluations: bool = False,
        max_cost_usd: float | None = None,
        model_calls: CallPolicy = CallPolicy(),
        **gepa_kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        reflection_model = (
            one_reflection_model(owner, reflection_model, reflection_lm) or DEFAULT_REFLECTION_MODEL
        )
        parse_model(reflection_model, "reflection_model")
        if judge_model is not None:
            parse_model(judge_model, "judge_model")
        check_pass_through(owner, gepa_kwargs, gepa.optimize, GEPA_OWNED_OPTIONS)
        self.reflection_model = reflection_model
        self.judge_model = judge_model
        self.limits = RunLimits(
            max_metric_calls=max_metric_calls,
            max_wall_time=max_wall_time,
            num_threads=num_threads,
            run_dir=run_dir,
            max_cost_usd=max_cost_usd,
            calls=model_calls,
        )
        self.register = register
        self.enable_tracking = enable_tracking
        self.trace_evaluations = trace_evaluations
        self.gepa_kwargs = gepa_kwargs

    def optimize(
        self,
        predict_fn: PredictFn,
        train_data: list[dict[str, Any]],
        prompt_uris: list[str],
        scorers: list[str | Scorer | Any] | None = None,
        val_data: list[dict[str, Any]] | None = None,
    ) -> PromptOptimizationOutcome:
        """Optimize and register; scores are on `val_data`, or on a deterministic held-out split of `train_data`."""
        records = validate_records(list(train_data), "train_data")
        train, held_out = (records, val_data) if val_data else split_holdout(records, argument="train_data")
        return self._run(predict_fn, train, held_out, prompt_uris, scorers)

    def _run(
        self,
        predict_fn: PredictFn,
        train: list[dict[str, Any]],
        held_out: list[dict[str, Any]],
        prompt_uris: list[str],
        scorers: list[str | Scorer | Any] | None,
    ) -> PromptOptimizationOutcome:
        """`run_mlflow_gepa` with this optimizer's settings."""
        return run_mlflow_gepa(
            predict_fn,
            train,
            held_out,
            prompt_uris,
            scorers,
            reflection_model=self.reflection_model,
            judge_model=self.judge_model,
            limits=self.limits,
            register=self.register,
            source=type(self).__name__,
            enable_tracking=self.enable_tracking,
            trace_evaluations=self.trace_evaluations,
            gepa_kwargs=self.gepa_kwargs,
        )
