"""The two optimization backends behind one interface: MLflow GEPA over a prompt template,
and dspy.GEPA over a user's DSPy program (one prompt per predictor).

A backend (1) resolves the production baseline, (2) optimizes on train/val records,
(3) scores any set of templates per held-out example; it never registers or promotes.

With `promotion.max_template_tokens`, the candidate a backend returns is the best one within the
limit from GEPA's whole candidate list (both backends: MLflow's GEPA state, dspy.GEPA's
`detailed_results`), by GEPA's validation aggregate; if none is within, GEPA's best (the gate
then rejects it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dspy
import mlflow
from pydantic import TypeAdapter

from daemon.jobs import prompt_versions
from daemon.jobs.run_dir import RunDir
from daemon.jobs.spec import OptimizerName
from daemon.prompt_names import predictor_prompt as predictor_prompt  # re-exported
from daemon.prompt_names import prompt_names as prompt_names
from handlers.jobs import JobPlan
from optimization import (
    RunLimits,
    SMERatingMetric,
    evaluate_per_example,
    extract_prompts,
    make_lm,
    make_template_agent,
    resolve_scorers,
    run_dspy_gepa,
    run_mlflow_gepa,
)
from optimization.import_ref import load_ref
from optimization.metrics import adapt_metric, create_mlflow_based_metric, exact_match_metric
from optimization.model_calls import governed, template_tokens
from optimization.results import Candidate
from schemas.config import PromptPolicy
from schemas.events import StopReason

Templates = dict[str, str]
_STOP_REASON: TypeAdapter[StopReason | None] = TypeAdapter(StopReason | None)


@dataclass(frozen=True)
class Optimized:
    templates: Templates
    metric_calls: int
    stopped_by: StopReason | None = None
    choice: str | None = None  # why these templates and not GEPA's best (the template limit)


def longest_template(templates: Templates) -> int:
    """The length in tokens of a version's longest template (the one `max_template_tokens` limits)."""
    return max((template_tokens(text) for text in templates.values()), default=0)


def within_template_limit(
    best: Templates,
    candidates: list[Candidate],
    max_template_tokens: int | None,
    names: Callable[[dict[str, str]], Templates] = dict,
) -> tuple[Templates, str | None]:
    """GEPA's `best` templates if within `max_template_tokens` (or no limit); else the best-scoring
    candidate GEPA proposed within it (GEPA's validation aggregate; the earliest on a tie; not the
    seed, `candidates[0]`, which is the baseline itself), its components named as the backend
    names templates by `names`; else `best`, for the gate to reject. With the reason of the choice."""
    if max_template_tokens is None or not candidates:
        return best, None
    best_tokens = longest_template(best)
    if best_tokens <= max_template_tokens:
        return best, None
    sizes = [longest_template(c.texts) for c in candidates]
    within = [i for i, size in enumerate(sizes) if i > 0 and size <= max_template_tokens]
    if not within:
        return best, (
            f"none of the {len(candidates) - 1} candidates GEPA proposed is within max_template_tokens "
            f"{max_template_tokens} (GEPA's best has {best_tokens} tokens): GEPA's best is kept"
        )
    chosen = max(within, key=lambda i: (candidates[i].val_score, -i))
    top = max(c.val_score for c in candidates)
    return names(candidates[chosen].texts), (
        f"chose candidate {chosen} of GEPA's {len(candidates)} (validation score {candidates[chosen].val_score:.3f}, "
        f"{sizes[chosen]} tokens): the best within max_template_tokens {max_template_tokens}; GEPA's best "
        f"(validation score {top:.3f}) has {best_tokens} tokens"
    )


class Backend(Protocol):
    optimizer: OptimizerName

    def baseline(self) -> dict[str, prompt_versions.Version]: ...

    def optimize(self, plan: JobPlan, limits: RunLimits) -> Optimized: ...

    def evaluate(self, records: list[dict[str, Any]], templates: Templates) -> list[float]: ...

    def log(self, optimized: Optimized, run_name: str, tags: dict[str, str]) -> None: ...


def backend_for(
    policy: PromptPolicy,
    plan: JobPlan | None = None,
    num_threads: int = 1,
    baseline: dict[str, prompt_versions.Version] | None = None,
) -> Backend:
    """The policy's backend; `plan` supplies the rated outputs of the SME-rating scorer; `baseline`
    (a resumed job's frozen one) replaces the registry's current `production`."""
    return (DspyBackend if policy.backend == "dspy" else MlflowBackend)(policy, plan, num_threads, baseline)


class _Scoring:
    """Scorer objects for a policy (the SME-rating metric is built from the plan's rated outputs)."""

    def __init__(self, policy: PromptPolicy, plan: JobPlan | None, num_threads: int) -> None:
        self.policy = policy
        self.judge_model = policy.judge_model or policy.reflection_model
        self.num_threads = num_threads
        sme = SMERatingMetric(plan.rated).as_scorer() if plan is not None and plan.rated else None
        self.scorers = resolve_scorers(policy.scorers, judge_model=self.judge_model, sme_scorer=sme)


class MlflowBackend(_Scoring):
    """`mlflow.genai.optimize_prompts` on the prompt, through the template agent or a user predict_fn."""

    optimizer: OptimizerName = "mlflow_gepa"

    def __init__(
        self,
        policy: PromptPolicy,
        plan: JobPlan | None,
        num_threads: int,
        baseline: dict[str, prompt_versions.Version] | None = None,
    ) -> None:
        super().__init__(policy, plan, num_threads)
        self._baseline = baseline[policy.name] if baseline else prompt_versions.ensure_production(policy.name)
        if policy.predict_fn:
            self.predict_fn = load_ref(policy.predict_fn, "predict_fn")
        else:
            self.predict_fn = make_template_agent(self._baseline.uri, policy.task_model)

    def baseline(self) -> dict[str, prompt_versions.Version]:
        return {self.policy.name: self._baseline}

    def optimize(self, plan: JobPlan, limits: RunLimits) -> Optimized:
        assert limits.run_dir is not None  # jobs always have a run directory
        scratch = RunDir.holding(Path(limits.run_dir)).scratch_db
        with prompt_versions.scratch_registry(scratch, self._baseline):
            outcome = self._run_gepa(plan, limits)
        best = dict(outcome.templates)
        templates, choice = within_template_limit(
            best,
            [c for c in outcome.candidates if set(c.texts) == set(best)],
            self.policy.promotion.max_template_tokens,
        )
        return Optimized(templates, outcome.metric_calls, _stop_reason(outcome.stopped_by), choice)

    def _run_gepa(self, plan: JobPlan, limits: RunLimits) -> Any:
        return run_mlflow_gepa(
            self.predict_fn,
            plan.train,
            plan.val,
            [self._baseline.uri],
            self.scorers,
            reflection_model=self.policy.reflection_model,
            judge_model=self.judge_model,
            limits=limits,
            register=False,
            source="gepa-stream",
        )

    def evaluate(self, records: list[dict[str, Any]], templates: Templates) -> list[float]:
        """Per-example scores. The baseline version is loaded (and cached) first, so an MLflow
        outage fails the stage rather than scoring the predictions that could not load it 0."""
        mlflow.genai.load_prompt(self._baseline.uri)
        return evaluate_per_example(
            self.predict_fn,
            records,
            self.scorers,
            judge_model=self.judge_model,
            num_threads=self.num_threads,
            templates=templates,
        )

    def log(self, optimized: Optimized, run_name: str, tags: dict[str, str]) -> None:
        """Nothing beyond the prompt version itself (the template is the whole artifact)."""


class DspyBackend(_Scoring):
    """dspy.GEPA on the user's program; each predictor's instruction is prompt `<prompt>_<predictor>`."""

    optimizer: OptimizerName = "dspy_gepa"

    def __init__(
        self,
        policy: PromptPolicy,
        plan: JobPlan | None,
        num_threads: int,
        baseline: dict[str, prompt_versions.Version] | None = None,
    ) -> None:
        super().__init__(policy, plan, num_threads)
        assert policy.program is not None  # the policy model requires it for dspy
        self.factory = load_ref(policy.program, "program")
        self.lm = make_lm(policy.task_model)
        program = self.factory()
        self.names = {predictor_prompt(policy.name, n): n for n, _ in program.named_predictors()}
        initial = extract_prompts(program)
        self._baseline = baseline or {
            name: prompt_versions.ensure_production(name, initial[predictor])
            for name, predictor in self.names.items()
        }
        first = program.named_predictors()[0][1]
        self.output_field = policy.output_field or next(iter(first.signature.output_fields))
        self.metric = adapt_metric(
            exact_match_metric
            if list(policy.scorers) == ["exact_match"]
            else create_mlflow_based_metric(self.scorers)
        )

    def baseline(self) -> dict[str, prompt_versions.Version]:
        return dict(self._baseline)

    def program(self, templates: Templates) -> dspy.Module:
        """A fresh program with each predictor's instruction taken from `templates`."""
        program = self.factory()
        for name, predictor in program.named_predictors():
            text = templates.get(predictor_prompt(self.policy.name, name))
            if text is not None:
                predictor.signature = predictor.signature.with_instructions(text)
        return program

    def examples(self, records: list[dict[str, Any]]) -> list[dspy.Example]:
        keys = list(self.policy.input_keys)
        return [
            dspy.Example(
                **r["inputs"], **{self.output_field: r["expectations"].get("expected_response", "")}
            ).with_inputs(*keys)
            for r in records
        ]

    def optimize(self, plan: JobPlan, limits: RunLimits) -> Optimized:
        start = {name: version.template for name, version in self._baseline.items()}
        with dspy.context(lm=self.lm):
            result = run_dspy_gepa(
                self.program(start),
                self.examples(plan.train),
                self.examples(plan.val),
                self.metric,
                reflection_model=self.policy.reflection_model,
                limits=limits,
            )

        def names(instructions: dict[str, str]) -> Templates:
            return {predictor_prompt(self.policy.name, n): text for n, text in instructions.items()}

        templates, choice = within_template_limit(
            names(result.instructions), result.candidates, self.policy.promotion.max_template_tokens, names
        )
        return Optimized(templates, result.metric_calls, _stop_reason(result.stopped_by), choice)

    def evaluate(self, records: list[dict[str, Any]], templates: Templates) -> list[float]:
        program = self.program(templates)
        scores = []
        with governed() as calls, dspy.context(lm=self.lm):
            for example in self.examples(records):
                try:
                    prediction = program(**example.inputs())
                except Exception:  # a failed call scores 0, as in the MLflow backend
                    scores.append(0.0)
                    continue
                scores.append(float(self.metric(example, prediction).score))
        calls.raise_if_failed()  # a model call that failed for good is the cause, not a score of 0
        return scores

    def log(self, optimized: Optimized, run_name: str, tags: dict[str, str]) -> None:
        """Log the optimized program's state to an MLflow run tagged like the prompt versions
        (once: a resumed job finds the finished run an earlier attempt logged by its tags)."""
        wanted = " and ".join(
            [*(f"tags.`{key}` = '{value}'" for key, value in tags.items()), "attributes.status = 'FINISHED'"]
        )
        if not mlflow.search_runs(filter_string=wanted, max_results=1, output_format="list"):
            self._log_run(optimized, run_name, tags)

    def _log_run(self, optimized: Optimized, run_name: str, tags: dict[str, str]) -> None:
        program = self.program(optimized.templates)
        with mlflow.start_run(run_name=run_name, tags=tags), tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "program.json"
            program.save(str(target))
            mlflow.log_artifact(str(target))
            mlflow.log_dict(optimized.templates, "instructions.json")


def _stop_reason(fired: str | None) -> StopReason | None:
    """Why GEPA stopped early, as the event contract names it (ValueError for a name it lacks)."""
    return _STOP_REASON.validate_python(fired)
