"""One optimization job, run in its own process (`python -m daemon.jobs.execute RUN_DIR`).

A separate process keeps GEPA's CPU work and any hang away from the event loop and can
be killed at its wall-time limit. Stages, each checkpointed in the run directory so a
re-run after a crash resumes where it stopped:

1. plan: split the snapshot (hash of trace_id) into train / val / held-out records;
2. baseline: the `production` version (the latest becomes production if none);
3. optimize: GEPA with the budget, resumable from `gepa/` (skipped if `candidate.json` exists);
4. evaluate: baseline and candidate on the held-out records, per example;
5. register: the candidate as a new version tagged with `request_id` (idempotent);
6. gate and promote: the paired gate; in auto mode move `production`;
7. write `result.json` (the runner announces it).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import mlflow
from pydantic import BaseModel

from daemon.jobs import registry
from daemon.jobs.backends import Backend, Optimized, backend_for
from daemon.jobs.spec import (
    EXAMPLES_FILE,
    JOB_FILE,
    PROGRESS_FILE,
    RESULT_FILE,
    Decision,
    JobResult,
    JobSpec,
    Progress,
    RegisteredVersion,
    read_model,
    write_model,
)
from handlers.gate import decide
from handlers.jobs import JobPlan, NotEnoughData, plan_job
from optimization import OptimizationFailed, RunLimits
from optimization.results import mean, relative_improvement
from schemas.events import Example

Baseline = dict[str, registry.Version]
CANDIDATE_FILE = "candidate.json"
SCORES_FILE = "scores.json"


class Candidate(BaseModel):
    templates: dict[str, str]
    metric_calls: int


class HeldOut(BaseModel):
    baseline: list[float]
    candidate: list[float]


def _progress(run_dir: Path, stage: str, detail: str = "") -> None:
    write_model(run_dir / PROGRESS_FILE, Progress(stage=stage, detail=detail))


def _seed(request_id: str) -> int:
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big")


def run_job(run_dir: Path) -> JobResult:
    """Run (or resume) the job in `run_dir`; always returns a result, never raises."""
    spec = JobSpec.model_validate_json((run_dir / JOB_FILE).read_bytes())
    examples = [Example.model_validate(e) for e in json.loads((run_dir / EXAMPLES_FILE).read_bytes())]
    try:
        mlflow.set_tracking_uri(spec.tracking_uri)
        mlflow.set_experiment(spec.experiment)  # explicit, whatever MLFLOW_EXPERIMENT_* the daemon inherited
        _progress(run_dir, "plan")
        plan = plan_job(examples, spec.policy)
        _progress(run_dir, "baseline")
        backend = backend_for(spec.policy, plan, spec.num_threads)
        baseline = backend.baseline()
        candidate = _optimize(run_dir, spec, backend, plan)
        scores = _evaluate(run_dir, backend, plan.heldout, baseline, candidate)
        return _register_and_gate(run_dir, spec, backend, plan, baseline, candidate, scores)
    except (OptimizationFailed, NotEnoughData, LookupError, ValueError) as exc:
        return JobResult(status="failed", error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # an unexpected failure still ends the job with its cause
        traceback.print_exc()
        return JobResult(status="failed", error=f"{type(exc).__name__}: {exc}")


def _optimize(run_dir: Path, spec: JobSpec, backend: Backend, plan: JobPlan) -> Candidate:
    checkpoint = read_model(run_dir / CANDIDATE_FILE, Candidate)
    if isinstance(checkpoint, Candidate):
        return checkpoint
    _progress(run_dir, "optimize", f"GEPA on {len(plan.train)} train / {len(plan.val)} val examples")
    budget = spec.policy.budget
    limits = RunLimits(
        max_metric_calls=budget.max_metric_calls,
        max_wall_time=budget.max_wall_time.total_seconds(),
        num_threads=spec.num_threads,
        run_dir=str(run_dir / "gepa"),
    )
    optimized = backend.optimize(plan, limits)
    candidate = Candidate(templates=optimized.templates, metric_calls=optimized.metric_calls)
    write_model(run_dir / CANDIDATE_FILE, candidate)
    return candidate


def _evaluate(
    run_dir: Path, backend: Backend, heldout: list[dict[str, Any]], baseline: Baseline, candidate: Candidate
) -> HeldOut:
    checkpoint = read_model(run_dir / SCORES_FILE, HeldOut)
    if isinstance(checkpoint, HeldOut):
        return checkpoint
    _progress(run_dir, "evaluate", f"baseline and candidate on {len(heldout)} held-out examples")
    scores = HeldOut(
        baseline=backend.evaluate(heldout, {name: v.template for name, v in baseline.items()}),
        candidate=backend.evaluate(heldout, candidate.templates),
    )
    write_model(run_dir / SCORES_FILE, scores)
    return scores


def _register_and_gate(
    run_dir: Path, spec: JobSpec, backend: Backend, plan: JobPlan, baseline: Baseline, candidate: Candidate, scores: HeldOut
) -> JobResult:
    policy = spec.policy
    base_mean, cand_mean = mean(scores.baseline), mean(scores.candidate)
    n_train = len(plan.train) + len(plan.val)
    tags = {
        "optimizer": backend.optimizer,
        "source": "gepa-stream",
        "initial_score": str(base_mean),
        "final_score": str(cand_mean),
        "improvement": f"{relative_improvement(base_mean, cand_mean) * 100:.1f}%",
        "gepa_stream.baseline_score": str(base_mean),
        "gepa_stream.candidate_score": str(cand_mean),
        "gepa_stream.n_train": str(n_train),
        "gepa_stream.n_val": str(len(plan.heldout)),
        "gepa_stream.window_size": str(spec.window_size),
        "gepa_stream.trigger": spec.trigger.rule if spec.trigger else "unknown",
    }
    _progress(run_dir, "register")
    registered = []
    for name, template in candidate.templates.items():
        parent = baseline[name].version
        version = registry.register_candidate(name, template, spec.request_id, {**tags, "gepa_stream.parent_version": str(parent)})
        registered.append(RegisteredVersion(name=name, version=version.version, uri=version.uri, parent_version=parent))
    backend.log(Optimized(candidate.templates, candidate.metric_calls), f"gepa-stream {spec.request_id}", {registry.TAG_REQUEST: spec.request_id})
    _progress(run_dir, "gate")
    gate = decide(scores.baseline, scores.candidate, policy.promotion, seed=_seed(spec.request_id))
    decisions = []
    for version in registered:
        decision = gate.decision
        if decision == "promoted" and policy.promotion.mode == "manual":
            registry.mark_awaiting_approval(version.name, version.version)
            decision = "awaiting_approval"
        elif decision == "promoted":
            registry.move_production(version.name, version.version)
        decisions.append(
            Decision(
                name=version.name,
                decision=decision,
                from_version=version.parent_version,
                to_version=version.version,
                improvement=gate.improvement,
                ci_low=gate.ci_low,
                ci_high=gate.ci_high,
                reason=gate.reason,
            )
        )
    return JobResult(
        status="completed",
        optimizer=backend.optimizer,
        n_train=n_train,
        n_val=len(plan.heldout),
        metric_calls=candidate.metric_calls,
        baseline_score=base_mean,
        candidate_score=cand_mean,
        registered=registered,
        decisions=decisions,
    )


def main() -> None:
    """Entry point of the job process; exit code 0 once `result.json` is written."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    run_dir = Path(sys.argv[1])
    result = run_job(run_dir)
    write_model(run_dir / RESULT_FILE, result)
    _progress(run_dir, "done", result.status)


if __name__ == "__main__":
    main()
