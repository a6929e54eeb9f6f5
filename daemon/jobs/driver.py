"""One request's run directory, driven to its final result: inputs frozen on first start, then
attempts of the job process (bounded by `budget.max_attempts`, across daemon restarts), with
waits for MLflow after an outage. A killed or interrupted job resumes from the directory."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from daemon import prometheus_metrics
from daemon.jobs.announcer import Announcer
from daemon.jobs.attempts import Attempts, describe_exit
from daemon.jobs.launcher import run_job_process
from daemon.jobs.outage import MLFLOW, answers_again
from daemon.jobs.run_dir import RunDir
from daemon.jobs.snapshot_reader import SnapshotError, read_snapshot
from daemon.jobs.spec import Attempt, JobResult, JobSpec
from daemon.settings import Settings
from schemas import event_ids
from schemas.config import PromptPolicy
from schemas.events import OptimizationData, OptimizationEvent

log = logging.getLogger("gepa_stream.jobs")
KILL_GRACE_S = 120.0  # past `max_wall_time` (GEPA stops itself there), the job process is killed
SHUTDOWN = "the daemon stopped it on shutdown"


@dataclass
class JobState:
    """Where a job stands (for /status); `stop_cause` is recorded if the runner stops it."""

    attempt: int
    max_attempts: int
    holding_run_dir: bool = False
    running: bool = False
    pid: int | None = None
    waiting_since: datetime | None = None
    started_at: float | None = None  # when its first attempt took a job slot (epoch seconds)
    stop_cause: str = SHUTDOWN

    def describe(self, client_waiting: str) -> str:
        """One line: `running, attempt 1 of 3`, `waiting for MLflow since ..., attempt 2 of 3`, ..."""
        if self.waiting_since is not None:
            return f"waiting for {MLFLOW} since {self.waiting_since:%Y-%m-%dT%H:%M:%SZ}, attempt {self.attempt + 1} of {self.max_attempts}"
        if not self.holding_run_dir:
            return "waiting for another process to release the run directory"
        if not self.running:
            return f"waiting for a job slot, attempt {self.attempt + 1} of {self.max_attempts}"
        line = f"running, attempt {self.attempt} of {self.max_attempts}"
        return f"{line}; {client_waiting}" if client_waiting else line


class JobDriver:
    """Runs jobs for the policies' prompts, at most `slots` job processes at once."""

    def __init__(
        self,
        settings: Settings,
        policies: Mapping[str, PromptPolicy],
        announcer: Announcer,
        client_options: dict[str, Any],
    ) -> None:
        self.settings = settings
        self.policies = policies
        self.announcer = announcer
        self.client_options = client_options
        self._slots = asyncio.Semaphore(settings.max_concurrent_jobs)

    async def drive(
        self, run: RunDir, request: OptimizationEvent, state: JobState, lock_fd: int
    ) -> JobResult:
        """The job's final result; the caller holds the run directory's lock (`lock_fd`).

        1. a final result already in the run dir is re-announced as it is;
        2. the inputs are frozen in the run dir (first start only);
        3. each attempt (at most `budget.max_attempts`, counted in `attempts.json`) first waits
           for MLflow if the previous one ended in an MLflow outage, then runs the job process;
        4. a process that died without a result (also with an earlier daemon), a result failed by
           an MLflow outage, or a resumable one (an unexpected failure after a killed attempt) is
           announced as `retrying`, once, and tried again; any other result is final.
        """
        data = request.data
        result = run.result()
        if result is not None and result.final:
            return result
        attempts = Attempts(run)  # an attempt cut short by the daemon's death ends here
        if not attempts.ledger.started_announced:
            await self.announcer.status(data.prompt, data.request_id, "started", budget=data.budget)
            attempts.update(attempts.ledger, started_announced=True)
        spec = await self._freeze(run, request)
        if isinstance(spec, JobResult):
            return spec
        if result is not None:  # a retryable result the daemon died before handling
            _set_aside(run, attempts, result)
        limit = spec.policy.budget.max_attempts
        state.attempt, state.max_attempts = attempts.used, limit
        await self._announce_retrying(data, attempts, limit)
        while True:
            last = attempts.last
            if last is not None and last.outage is not None and attempts.used < limit:
                if not await self._wait_for_mlflow(spec, last, state):
                    error = f"{MLFLOW} at {spec.tracking_uri} did not answer within max_outage_wait after attempt {attempts.used} of {limit}: {last.cause}"
                    return _final(run, JobResult(status="failed", error=error))
            if attempts.used >= limit:
                causes = "; ".join(
                    f"attempt {a.number}: {a.cause}" for a in attempts.ledger.attempts if a.counted
                )
                error = f"no result after {limit} attempt{'s' if limit > 1 else ''} (budget.max_attempts): {causes}"
                return _final(run, JobResult(status="failed", error=error))
            attempt = attempts.begin()
            state.attempt = attempts.used
            async with self._slots:
                prometheus_metrics.JOBS_IN_FLIGHT.inc()
                state.running = True
                state.started_at = state.started_at or time.time()
                try:
                    result = await self._attempt(run, spec, attempts, attempt, state, lock_fd)
                finally:
                    state.running = False
                    prometheus_metrics.JOBS_IN_FLIGHT.dec()
            if result is not None and result.final:
                return result
            if result is not None:
                _set_aside(run, attempts, result)
            await self._announce_retrying(data, attempts, limit)

    async def _announce_retrying(self, data: OptimizationData, attempts: Attempts, limit: int) -> None:
        """`retrying` for the last attempt if it ended without a final result, counted, with
        attempts left, and was not announced yet (also when it ended with a daemon that died)."""
        last = attempts.last
        if last is None or last.cause is None or not last.counted or last.announced or attempts.used >= limit:
            return
        log.warning(
            "job %s: attempt %d of %d ended without a result (%s); it will be resumed",
            data.request_id,
            attempts.used,
            limit,
            last.cause,
        )
        await self.announcer.status(
            data.prompt,
            data.request_id,
            "retrying",
            event_id=event_ids.job_retrying(data.request_id, attempts.used),
            error=last.cause,
            attempt=attempts.used,
            max_attempts=limit,
        )
        attempts.update(last, announced=True)

    async def _freeze(self, run: RunDir, request: OptimizationEvent) -> JobSpec | JobResult:
        """The job's spec, and its window frozen in the run dir on first start (a failed result if unreadable)."""
        data = request.data
        if not run.inputs_frozen():
            try:
                examples = await read_snapshot(request, self.client_options)
            except SnapshotError as exc:
                return JobResult(status="failed", error=str(exc))
            policy = self.policies[data.prompt]
            spec = JobSpec(
                request_id=data.request_id,
                prompt=data.prompt,
                policy=policy,
                tracking_uri=self.settings.mlflow_tracking_uri,
                experiment=self.settings.mlflow_experiment,
                trigger=data.trigger,
                window_size=len(examples),
                num_threads=policy.budget.num_threads,
            )
            run.freeze_inputs(spec, examples)
        return run.spec()

    async def _attempt(
        self,
        run: RunDir,
        spec: JobSpec,
        attempts: Attempts,
        attempt: Attempt,
        state: JobState,
        lock_fd: int,
    ) -> JobResult | None:
        """Run the job process once; its result, a failed one at the wall time, or None if it
        died without one. Stopped by the runner, the attempt is recorded as not counted."""
        wall = spec.policy.budget.max_wall_time.total_seconds() + KILL_GRACE_S

        def started(pid: int) -> None:
            attempts.update(attempt, pid=pid)
            state.pid = pid

        try:
            code = await run_job_process(run, attempt.number, lock_fd, wall, started)
        except asyncio.CancelledError:
            attempts.end(attempt, state.stop_cause, counted=False)
            raise
        if code is None:
            error = f"the job exceeded its wall time ({wall:.0f}s) and was killed"
            attempts.end(attempt, error)
            return JobResult(status="failed", error=error)
        result = run.result()
        if result is not None:
            attempts.end(attempt, None if result.final else result.error, outage=result.outage)
            return result
        attempts.end(attempt, f"the job process {describe_exit(code)} without a result (see {run.job_log})")
        return None

    async def _wait_for_mlflow(self, spec: JobSpec, failed: Attempt, state: JobState) -> bool:
        """Probe MLflow with backoff until it answers (True) or `budget.max_outage_wait` has
        passed since the attempt failed (False)."""
        since = failed.ended or datetime.now(UTC)
        deadline = since + spec.policy.budget.max_outage_wait
        state.waiting_since = since
        log.warning(
            "job %s: attempt %d of %d failed with %s unreachable; waiting for it to answer (until %s)",
            spec.request_id,
            state.attempt,
            state.max_attempts,
            MLFLOW,
            f"{deadline:%Y-%m-%dT%H:%M:%SZ}",
        )
        try:
            if not await answers_again(spec.tracking_uri, deadline):
                return False
        finally:
            state.waiting_since = None
        log.warning(
            "job %s: %s answers again; resuming it (attempt %d of %d)",
            spec.request_id,
            MLFLOW,
            state.attempt + 1,
            state.max_attempts,
        )
        return True


def _final(run: RunDir, result: JobResult) -> JobResult:
    """A failure the runner decided: it carries the side effects the job process did (so they
    are announced) and is written as the job's result (a redelivery re-announces it)."""
    done = run.side_effects()
    if done is not None:
        result = result.model_copy(update={"registered": done.registered, "decisions": done.decisions})
    run.write_result(result)
    return result


def _set_aside(run: RunDir, attempts: Attempts, result: JobResult) -> None:
    """Keep a retryable result (an outage, a resumable failure) as its attempt's record, out of
    the way of the next attempt."""
    last = attempts.last
    if last is not None:
        attempts.update(last, ended=last.ended or datetime.now(UTC), cause=result.error, outage=result.outage)
    run.set_result_aside(last.number if last else 0)
