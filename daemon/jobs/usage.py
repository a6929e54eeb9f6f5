"""A job's model calls: the policy they follow (from the prompt's `model_calls:` and `budget:`),
the scope that governs and counts them for the whole job process, and where their figures go
(the job's result, hence its events and metrics, and the job's MLflow run)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from mlflow import MlflowClient

from daemon.jobs.run_dir import RunDir
from daemon.jobs.spec import JobResult, JobSpec
from daemon.prompt_version import TAG_REQUEST
from optimization.model_calls import (
    CallPolicy,
    ModelCalls,
    Price,
    UsageLedger,
    UsageTally,
    governed,
    template_tokens,
)
from optimization.models import parse_model
from optimization.run_control import STOP_GRACE_S
from schemas.config import PromptPolicy
from schemas.events import ModelUsage, RoleUsage, VersionCost

log = logging.getLogger("gepa_stream.jobs")


def call_policy(policy: PromptPolicy) -> CallPolicy:
    """The model-call policy of a prompt's jobs."""
    calls = policy.model_calls
    return CallPolicy(
        timeout=calls.timeout.total_seconds(),
        max_retries=calls.max_retries,
        max_backoff=calls.max_backoff.total_seconds(),
        prices={model: Price(p.input_per_million, p.output_per_million) for model, p in calls.prices.items()},
    )


@contextmanager
def job_model_calls(spec: JobSpec, run: RunDir) -> Iterator[ModelCalls]:
    """Every model call of the job process, governed by the prompt's policy until the job's hard
    deadline (`max_wall_time` plus the grace GEPA gets to stop; the runner kills later still).
    The ledger starts from what earlier attempts of the job recorded in `usage.json` and is
    written back there at the end, so a resumed job reports (and budgets) its whole spend."""
    deadline = time.monotonic() + spec.policy.budget.max_wall_time.total_seconds() + STOP_GRACE_S
    judge = parse_model(spec.policy.judge_model or spec.policy.reflection_model, "judge_model").litellm
    earlier = run.usage()
    initial: dict[str, UsageTally] | None = (
        {role: UsageTally(**figures.model_dump()) for role, figures in earlier.roles.items()}
        if earlier is not None
        else None
    )
    with governed(call_policy(spec.policy), deadline, UsageLedger(initial), judge_model=judge) as calls:
        try:
            yield calls
        finally:
            run.write_usage(model_usage(calls.ledger.snapshot()))


def version_cost(templates: dict[str, str], task_calls: UsageTally) -> VersionCost:
    """A version's cost figures: its longest template in tokens, and the mean tokens (prompt +
    completion) and USD of the task model's calls measured while it was evaluated (None without
    calls)."""
    calls = task_calls.calls
    return VersionCost(
        template_tokens=max((template_tokens(t) for t in templates.values()), default=0),
        calls=calls,
        tokens_per_call=(task_calls.prompt_tokens + task_calls.completion_tokens) / calls if calls else None,
        cost_per_call_usd=task_calls.cost_usd / calls if calls else None,
        cost_unknown=task_calls.cost_unknown,
    )


def model_usage(roles: dict[str, UsageTally]) -> ModelUsage:
    """The event form of a ledger snapshot."""
    usage = {role: RoleUsage(**vars(figures)) for role, figures in roles.items()}
    return ModelUsage(
        roles=usage,  # type: ignore[arg-type]
        cost_usd=sum(u.cost_usd for u in usage.values()),
        cost_unknown=any(u.cost_unknown for u in usage.values()),
    )


def log_usage_to_run(spec: JobSpec, result: JobResult) -> None:
    """Log the job's model usage (and outcome) as metrics and tags of the job's MLflow run
    (tagged with its `request_id`; created if the backend logged none). MLflow being down
    costs only this record: the job's result stands."""
    if result.usage is None:
        return
    metrics = {"model_cost_usd": result.usage.cost_usd}
    for role, figures in result.usage.roles.items():
        metrics |= {
            f"model_calls.{role}": figures.calls,
            f"model_failed_attempts.{role}": figures.failed_attempts,
            f"model_prompt_tokens.{role}": figures.prompt_tokens,
            f"model_completion_tokens.{role}": figures.completion_tokens,
            f"model_cost_usd.{role}": figures.cost_usd,
        }
    tags = {
        TAG_REQUEST: spec.request_id,
        "gepa_stream.status": result.status,
        "gepa_stream.cost_unknown": str(result.usage.cost_unknown).lower(),
    }
    if result.stopped_by:
        tags["gepa_stream.stopped_by"] = result.stopped_by
    try:
        experiment = mlflow.set_experiment(spec.experiment)
        found = MlflowClient().search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{TAG_REQUEST}` = '{spec.request_id}'",
            max_results=1,
        )
        run_id = found[0].info.run_id if found else None
        with mlflow.start_run(
            run_id=run_id, run_name=None if run_id else f"gepa-stream {spec.request_id}", tags=tags
        ):
            mlflow.log_metrics(metrics)
    except Exception:  # the result is final; only the run's record of it is lost
        log.exception("could not log the model usage of job %s to MLflow", spec.request_id)
