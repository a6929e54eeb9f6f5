"""One optimization job, run in its own process (`python -m daemon.jobs.execute RUN_DIR [ATTEMPT]`).

A separate process keeps GEPA's CPU work and any hang away from the event loop and can
be killed at its wall-time limit. Stages, each checkpointed in the run directory so a
re-run after a crash (of this process or of the daemon) resumes where it stopped and takes
every decision input from its first computation:

1. plan: split the snapshot (hash of trace_id) into train / val / held-out records (`plan.json`);
2. baseline: the `production` version (the latest becomes production if none), frozen with
   its template (`baseline.json`), so a resumed job keeps the lineage parent -> candidate even
   after it moved the alias itself;
3. optimize: GEPA with the budget, resumable from `gepa/` (`candidate.json`);
4. evaluate: baseline and candidate on the held-out records, per example (`scores.json`);
5. register: the candidate as a new version tagged with `request_id` (found again by that tag
   on a resume), recorded in `side_effects.json`;
6. gate (`gate.json`) and promote: in auto mode move `production` (a no-op for a resumed job
   that moved it already), recorded in `side_effects.json`;
7. write `result.json` (the runner announces it).

A failure while MLflow does not answer is marked `outage` in the result; the runner retries
the job once MLflow answers again. An undecided failure (unexpected, not a verdict on the job's
inputs) of an attempt that follows a killed one is marked `resumable`, with GEPA's state and the
scratch store set aside to be rebuilt: what a kill left half-done never ends a job while
attempts remain.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import mlflow

from daemon import prompt_versions
from daemon.jobs.backends import backend_for
from daemon.jobs.outage import MLFLOW, ClientRetryWatch, mlflow_outage
from daemon.jobs.run_dir import RunDir
from daemon.jobs.run_lock import held_by_job_process
from daemon.jobs.spec import (
    Baseline,
    CandidateCheckpoint,
    Decision,
    HeldOut,
    JobResult,
    JobSpec,
    Progress,
    RegisteredVersion,
    SideEffects,
)
from daemon.jobs.usage import call_policy, job_model_calls, log_usage_to_run, model_usage, version_cost
from handlers.jobs import JobPlan, NotEnoughData, plan_job
from handlers.promotion import gate, judge_candidate, segment_scores
from optimization import OptimizationFailed, RunLimits
from optimization.backends import Backend, Optimized, longest_template
from optimization.model_calls import metered_task_calls, template_tokens
from optimization.registry import cost_tags, score_tags
from optimization.results import HeldOutScores, mean
from optimization.rule_dedup import remove_repeated_rules
from schemas.events import VersionCost

HOLD_AT_VAR = "GEPA_STREAM_JOB_HOLD_AT"
DECIDED = (OptimizationFailed, NotEnoughData, LookupError, ValueError)  # failures that end a job


class ProgressFile:
    """`progress.json`: the stage, and what the process waits for; written by the job's thread
    and by the MLflow retry watch (hence the lock)."""

    def __init__(self, run: RunDir, prompt: str, attempt: int) -> None:
        self.run = run
        self.prompt = prompt
        self.attempt = attempt
        self._progress = Progress(stage="start", pid=os.getpid())
        self._lock = threading.Lock()
        self._gepa_written_at = 0.0

    def stage(self, stage: str, detail: str = "") -> None:
        self._write(stage=stage, detail=detail)
        self._hold_for_drill(stage)

    def waiting(self, line: str) -> None:
        self._write(waiting=line)

    def gepa(self, metric_calls: int, best_score: float | None) -> None:
        """GEPA's metric calls and best validation score so far; GEPA's threads call it as the run
        moves: written at most every 0.25 s, and a failed write never fails the run."""
        if time.monotonic() - self._gepa_written_at < 0.25:
            return
        self._gepa_written_at = time.monotonic()
        try:
            self._write(metric_calls=metric_calls, best_score=best_score)
        except OSError:
            pass  # progress is for display only

    def _write(self, **fields: Any) -> None:
        with self._lock:
            self._progress = self._progress.model_copy(update=fields)
            self.run.write_progress(self._progress)

    def _hold_for_drill(self, stage: str) -> None:
        """Crash drills: `GEPA_STREAM_JOB_HOLD_AT=<stage>` (or `<prompt>=<stage>,...`) holds a job's
        attempts right after they report that stage, until someone kills the process (as the
        OOM killer would there) — only until one attempt has ended counted (killed): an attempt
        the runner stopped (shutdown, a revoked partition) is held again. The run directory
        then shows how it resumes."""
        ledger = self.run.ledger()
        earlier = ledger.attempts if ledger is not None else []
        if any(a.counted for a in earlier if a.number < self.attempt):
            return
        for item in os.environ.get(HOLD_AT_VAR, "").split(","):
            prompt, _, at = item.strip().rpartition("=")
            if at == stage and prompt in ("", self.prompt):
                self._write(detail=f"held for a crash drill ({HOLD_AT_VAR})")
                while True:
                    time.sleep(3600)


def _seed(request_id: str) -> int:
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big")


def run_job(run: RunDir, attempt: int = 1) -> JobResult:
    """Run (or resume) the job in `run` and write its `result.json`; never raises."""
    spec = run.spec()
    progress = ProgressFile(run, spec.prompt, attempt)
    ClientRetryWatch.install(spec.tracking_uri, progress.waiting)
    with job_model_calls(spec, run) as calls:
        result = _run_stages(run, spec, progress, attempt)
    result.usage = model_usage(calls.ledger.snapshot())
    if result.outage is None:  # with MLflow down, its run cannot take the record
        log_usage_to_run(spec, result)
    run.write_result(result)
    progress.stage("done", result.status)
    return result


def _run_stages(run: RunDir, spec: JobSpec, progress: ProgressFile, attempt: int) -> JobResult:
    examples = run.examples()
    try:
        mlflow.set_tracking_uri(spec.tracking_uri)
        mlflow.set_experiment(spec.experiment)  # explicit, whatever MLFLOW_EXPERIMENT_* the daemon inherited
        progress.stage("plan")
        plan = run.checkpoint_plan(lambda: plan_job(examples, spec.policy))
        progress.stage("baseline")
        backend = backend_for(spec.policy, plan, spec.num_threads, run, baseline=run.frozen_baseline())
        baseline = run.checkpoint_baseline(backend.baseline)
        candidate = _optimize(run, spec, backend, plan, progress)
        scores = _evaluate(run, backend, plan.heldout, baseline, candidate, progress)
        registered = _register(run, spec, backend, plan, baseline, candidate, scores, progress)
        decisions = _gate_and_promote(
            run, spec, registered, scores, plan.segments, progress, candidate.choice
        )
    except DECIDED as exc:
        return _attempt_failed(run, exc, spec, attempt)
    except Exception as exc:  # an unexpected failure still ends the job with its cause
        traceback.print_exc()
        return _attempt_failed(run, exc, spec, attempt)
    return JobResult(
        status="completed",
        optimizer=backend.optimizer,
        n_train=len(plan.train) + len(plan.val),
        n_val=len(plan.heldout),
        metric_calls=candidate.metric_calls,
        baseline_score=mean(scores.baseline),
        candidate_score=mean(scores.candidate),
        registered=registered,
        decisions=decisions,
        stopped_by=candidate.stopped_by,
        baseline_cost=scores.baseline_cost,
        candidate_cost=scores.candidate_cost,
        candidate_choice=candidate.choice,
    )


def _failed(exc: BaseException, spec: JobSpec) -> JobResult:
    down = mlflow_outage(exc, spec.tracking_uri)
    cause = f"{type(exc).__name__}: {exc}"
    return JobResult(
        status="failed",
        error=f"{MLFLOW} at {spec.tracking_uri} is unreachable: {cause}" if down else cause,
        outage="MLflow" if down else None,
    )


def _attempt_failed(run: RunDir, exc: BaseException, spec: JobSpec, attempt: int) -> JobResult:
    """The attempt's failed result. An undecided failure after a killed attempt may be something
    the kill left half-done, so the optimize stage's working state is set aside (as
    `<name>.attempt-N`) and the result is resumable: the next attempt rebuilds it. The
    checkpoints are atomic and stay."""
    result = _failed(exc, spec)
    if result.outage is None and _undecided(exc) and _follows_a_kill(run, attempt):
        run.set_working_state_aside(attempt)
        result.resumable = True
    return result


def _undecided(exc: BaseException) -> bool:
    """Not a verdict on the job's inputs (too little data, an unknown prompt, a bad setting, a model
    that failed for good, the wall time): an unexpected error, or GEPA's failure wrapping one."""
    if isinstance(exc, OptimizationFailed) and isinstance(exc.cause, BaseException):
        return _undecided(exc.cause)
    return not isinstance(exc, DECIDED)


def _follows_a_kill(run: RunDir, attempt: int) -> bool:
    """Whether an earlier attempt of the job ended without a result (killed, or with its daemon)."""
    ledger = run.ledger()
    earlier = ledger.attempts if ledger is not None else []
    return any(a.number < attempt and a.cause is not None and a.outage is None for a in earlier)


def _optimize(
    run: RunDir, spec: JobSpec, backend: Backend, plan: JobPlan, progress: ProgressFile
) -> CandidateCheckpoint:
    def gepa() -> CandidateCheckpoint:
        progress.stage("optimize", f"GEPA on {len(plan.train)} train / {len(plan.val)} val examples")
        progress.gepa(0, None)
        budget = spec.policy.budget
        limits = RunLimits(
            max_metric_calls=budget.max_metric_calls,
            max_wall_time=budget.max_wall_time.total_seconds(),
            num_threads=spec.num_threads,
            run_dir=str(run.gepa_dir),
            progress=progress.gepa,
            max_cost_usd=budget.max_cost_usd,
            calls=call_policy(spec.policy),
        )
        optimized = backend.optimize(plan.train, plan.val, limits)
        templates, cleaned = optimized.templates, None
        if spec.policy.promotion.remove_repeated_rules:
            templates, cleaned = _without_repeats(optimized.templates)
        return CandidateCheckpoint(
            templates=templates,
            metric_calls=optimized.metric_calls,
            stopped_by=optimized.stopped_by,
            choice="; ".join(part for part in (optimized.choice, cleaned) if part) or None,
        )

    return run.checkpoint_candidate(gepa)


def _without_repeats(templates: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """The candidate's templates without the instruction lines they repeat, and what that removed
    (None when nothing was repeated)."""
    done = {name: remove_repeated_rules(text) for name, text in templates.items()}
    removed = sum(len(d.removed) for d in done.values())
    if not removed:
        return templates, None
    cleaned = {name: d.template for name, d in done.items()}
    saved = sum(template_tokens(templates[n]) - template_tokens(cleaned[n]) for n in templates)
    return cleaned, f"removed {removed} repeated instruction line(s) before evaluation ({saved} tokens)"


def _evaluate(
    run: RunDir,
    backend: Backend,
    heldout: list[dict[str, Any]],
    baseline: Baseline,
    candidate: CandidateCheckpoint,
    progress: ProgressFile,
) -> HeldOut:
    def measured(templates: dict[str, str]) -> tuple[list[float], VersionCost]:
        """Per-example scores, and the version's template tokens and task-model cost per call."""
        with metered_task_calls() as task_calls:
            scores = backend.evaluate(heldout, templates)
        return scores, version_cost(templates, task_calls)

    def score() -> HeldOut:
        progress.stage("evaluate", f"baseline and candidate on {len(heldout)} held-out examples")
        baseline_scores, baseline_cost = measured({name: v.template for name, v in baseline.items()})
        candidate_scores, candidate_cost = measured(candidate.templates)
        return HeldOut(
            baseline=baseline_scores,
            candidate=candidate_scores,
            baseline_cost=baseline_cost,
            candidate_cost=candidate_cost,
        )

    held = run.checkpoint_scores(score)
    if held.candidate_cost is None:  # a checkpoint older than the measurement: the lengths at least
        held = held.model_copy(
            update={
                "baseline_cost": VersionCost(
                    template_tokens=longest_template({n: v.template for n, v in baseline.items()})
                ),
                "candidate_cost": VersionCost(template_tokens=longest_template(candidate.templates)),
            }
        )
    return held


def _register(
    run: RunDir,
    spec: JobSpec,
    backend: Backend,
    plan: JobPlan,
    baseline: Baseline,
    candidate: CandidateCheckpoint,
    scores: HeldOut,
    progress: ProgressFile,
) -> list[RegisteredVersion]:
    """Register each candidate template (or find the version a previous attempt registered)."""
    tags = {
        **score_tags(backend.optimizer, HeldOutScores(scores.baseline, scores.candidate), "gepa-stream"),
        "gepa_stream.n_train": str(len(plan.train) + len(plan.val)),
        "gepa_stream.n_val": str(len(plan.heldout)),
        "gepa_stream.window_size": str(spec.window_size),
        "gepa_stream.trigger": spec.trigger.rule if spec.trigger else "unknown",
        **cost_tags(scores.baseline_cost, scores.candidate_cost),
    }
    progress.stage("register")
    registered = []
    for name, template in candidate.templates.items():
        parent = baseline[name].version
        version = prompt_versions.register_candidate(
            name, template, spec.request_id, {**tags, "gepa_stream.parent_version": str(parent)}
        )
        registered.append(
            RegisteredVersion(name=name, version=version.version, uri=version.uri, parent_version=parent)
        )
    run.write_side_effects(SideEffects(registered=registered))
    backend.log(
        Optimized(candidate.templates, candidate.metric_calls),
        f"gepa-stream {spec.request_id}",
        {prompt_versions.TAG_REQUEST: spec.request_id},
    )
    return registered


def _gate_and_promote(
    run: RunDir,
    spec: JobSpec,
    registered: list[RegisteredVersion],
    scores: HeldOut,
    segments: list[str | None] | None,
    progress: ProgressFile,
    choice: str | None = None,
) -> list[Decision]:
    """1. the paired gate (frozen on first computation); 2. per version, the promotion rules
    (handlers/promotion.py) on the registry as it is; 3. their registry change (moving
    `production`, starting a canary, or marking the version awaiting approval). Each change is
    idempotent on a resume. A candidate chosen under the template limit says so in its reason."""
    policy = spec.policy
    progress.stage("gate")
    comparison = run.checkpoint_gate(
        lambda: gate(
            scores.baseline,
            scores.candidate,
            policy.promotion,
            seed=_seed(spec.request_id),
            segments=segments,
            baseline_cost=scores.baseline_cost,
            candidate_cost=scores.candidate_cost,
        ),
    )
    decisions = []
    for version in registered:
        registry = prompt_versions.registry(version.name)
        outcome = judge_candidate(
            comparison, policy.promotion, registry, version.version, version.parent_version
        )
        prompt_versions.apply(version.name, outcome)
        decisions.append(
            Decision(
                name=version.name,
                decision=outcome.decision,
                from_version=version.parent_version,
                to_version=version.version,
                improvement=comparison.improvement,
                ci_low=comparison.ci_low,
                ci_high=comparison.ci_high,
                traffic_share=outcome.traffic_share,
                segments=segment_scores(comparison),
                baseline_cost=comparison.baseline_cost,
                candidate_cost=comparison.candidate_cost,
                reason=f"{outcome.reason}; {choice}" if choice else outcome.reason,
            )
        )
    run.write_side_effects(SideEffects(registered=registered, decisions=decisions))
    progress.stage("promote", "; ".join(f"{d.name} v{d.to_version}: {d.decision}" for d in decisions))
    return decisions


def main() -> None:
    """Entry point of the job process; exit code 0 once `result.json` is written. It inherits the
    daemon's environment, quieted by the CLI before MLflow and litellm were first imported, and
    drives the run directory only while it holds the directory's lock (`daemon/jobs/run_lock.py`)."""
    run = RunDir(Path(sys.argv[1]))
    with held_by_job_process(run):
        run_job(run, int(sys.argv[2]) if len(sys.argv) > 2 else 1)


if __name__ == "__main__":
    main()
