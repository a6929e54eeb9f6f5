"""The backend a job runs: the policy's backend (`optimization/backends.py`) wired to the registry —
the baseline is a resumed job's frozen one, else `production` — and to the run directory's scratch
store, where MLflow GEPA registers its trial versions."""

from __future__ import annotations

from daemon import prompt_versions
from daemon.jobs.run_dir import RunDir
from handlers.jobs import JobPlan
from optimization.backends import Backend, DspyBackend, MlflowBackend
from optimization.prompt_version import Version
from schemas.config import PromptPolicy


def backend_for(
    policy: PromptPolicy,
    plan: JobPlan,
    num_threads: int,
    run: RunDir,
    baseline: dict[str, Version] | None = None,
) -> Backend:
    """The policy's backend; `plan` supplies the rated outputs of the SME-rating scorer; `baseline`
    (a resumed job's frozen one) replaces the registry's current `production`."""

    def baseline_of(name: str, initial_template: str | None) -> Version:
        if baseline is not None:
            return baseline[name]
        return prompt_versions.ensure_production(name, initial_template)

    if policy.backend == "dspy":
        return DspyBackend(policy, baseline_of, plan.rated, num_threads)
    return MlflowBackend(
        policy,
        baseline_of,
        lambda version: prompt_versions.scratch_registry(run.scratch_db, version),
        plan.rated,
        num_threads,
    )
