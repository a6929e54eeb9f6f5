"""The job runner (role `optimizer` or `all`): takes `requested` events off the optimizations
topic and runs each as a job process, with bounded concurrency, while the event loop keeps
consuming, heartbeating and committing. Also acts on approve / reject / rollback commands.

Offsets: a `requested` record's offset is committed only after the job's terminal event is
emitted, so a job interrupted by a crash is redelivered and resumes from its run directory
(on another worker, it re-runs) — it never vanishes. Every emitted event has a
deterministic id, so a resumed job re-announces rather than duplicates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from daemon import prometheus_metrics
from daemon.broker import die_with_parent
from daemon.jobs import prompt_versions
from daemon.jobs.attempts import Attempt, Attempts, describe_exit
from daemon.jobs.backends import prompt_names
from daemon.jobs.outage import MLFLOW, answers_again, mlflow_outage
from daemon.jobs.spec import (
    EXAMPLES_FILE,
    JOB_FILE,
    PROGRESS_FILE,
    RESULT_FILE,
    SIDE_EFFECTS_FILE,
    JobResult,
    JobSpec,
    Progress,
    SideEffects,
    read_model,
    write_atomically,
    write_model,
)
from daemon.settings import Settings
from handlers.snapshot import snapshot_sha256
from schemas.config import PolicyFile
from schemas.events import (
    CloudEvent,
    CommandData,
    CommandEvent,
    Example,
    OptimizationData,
    OptimizationEvent,
    PromotionData,
    PromotionEvent,
    PromptRegisteredData,
    PromptRegisteredEvent,
    SnapshotChunkEvent,
)
from schemas.parse import InvalidEvent, parse_event

log = logging.getLogger("gepa_stream.jobs")
GRACE_S = 120.0
WATCH_S = 1.0


@dataclass
class JobState:
    """Where a job stands in its attempts (for /status)."""

    attempt: int
    max_attempts: int
    running: bool = False
    pid: int | None = None
    waiting_since: datetime | None = None
    started_at: float | None = None  # when its first attempt took a job slot (epoch seconds)

    def describe(self, client_waiting: str) -> str:
        """One line: `running, attempt 1 of 3`, `waiting for MLflow since ..., attempt 2 of 3`, ..."""
        if self.waiting_since is not None:
            return f"waiting for {MLFLOW} since {self.waiting_since:%Y-%m-%dT%H:%M:%SZ}, attempt {self.attempt + 1} of {self.max_attempts}"
        if not self.running:
            return f"waiting for a job slot, attempt {self.attempt + 1} of {self.max_attempts}"
        line = f"running, attempt {self.attempt} of {self.max_attempts}"
        return f"{line}; {client_waiting}" if client_waiting else line


class SnapshotError(RuntimeError):
    """The frozen window cannot be read back intact."""


class JobRunner:
    def __init__(self, settings: Settings, policies: PolicyFile) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.policies = {p.name: p for p in policies.prompts}
        self.jobs_dir = settings.state_dir / "jobs"
        self.source = f"gepa-stream/{settings.app_id}/optimizer"
        self._slots = asyncio.Semaphore(settings.max_concurrent_jobs)
        self._pending: dict[TopicPartition, set[int]] = defaultdict(set)
        self._next: dict[TopicPartition, int] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._states: dict[str, JobState] = {}
        self._commands: set[asyncio.Task[None]] = set()
        self._command_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.ready = False

    # -- the loop --------------------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.settings.bootstrap_servers.split(","),
            **self.settings.aiokafka_options(),
        }

    async def run(self) -> None:
        """Consume until cancelled."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        consumer = AIOKafkaConsumer(
            self.topics.optimizations,
            self.topics.commands,
            group_id=f"{self.settings.app_id}-optimizer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self.settings.heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(self.settings.rebalance_timeout_s * 1000),
            **self._client_options(),
        )
        self._producer = AIOKafkaProducer(acks="all", **self._client_options())
        await self._producer.start()
        await consumer.start()
        self._consumer = consumer
        self.ready = True
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        self._next[tp] = record.offset + 1
                        await self._dispatch(tp, record.offset, record.value)
                await self._commit(consumer)
        finally:
            self.ready = False
            for task in [*self._running.values(), *self._commands]:
                task.cancel()
            await consumer.stop()
            await self._producer.stop()

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Per partition: up to the oldest unfinished request, else everything seen."""
        offsets = {}
        for tp, next_offset in self._next.items():
            pending = self._pending.get(tp)
            offsets[tp] = min(pending) if pending else next_offset
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:  # rebalanced away: the new owner re-runs
            log.warning("commit failed (%s); unfinished requests will be redelivered", exc)
            self._next.clear()

    async def _dispatch(self, tp: TopicPartition, offset: int, raw: bytes | None) -> None:
        try:
            event = parse_event(raw, max_bytes=self.settings.max_event_bytes)
        except InvalidEvent as exc:  # the ingest role, which reads both topics, dead-letters it
            log.debug("skipping %s/%d@%d: %s: %s", tp.topic, tp.partition, offset, exc.reason, exc)
            return
        if isinstance(event, OptimizationEvent) and event.data.status == "requested":
            if event.data.prompt not in self.policies or event.data.request_id in self._running:
                return
            self._pending[tp].add(offset)
            task = asyncio.create_task(self._job(tp, offset, event))
            self._running[event.data.request_id] = task
        elif isinstance(event, CommandEvent) and event.data.action in ("approve", "reject", "rollback"):
            if event.data.prompt in self.policies:
                self._pending[tp].add(offset)
                task = asyncio.create_task(self._command_in_order(tp, offset, event))
                self._commands.add(task)
                task.add_done_callback(self._commands.discard)

    # -- one job ---------------------------------------------------------------------------

    async def _job(self, tp: TopicPartition, offset: int, request: OptimizationEvent) -> None:
        data = request.data
        try:
            result = await self._run(self.jobs_dir / data.request_id, request)
            await self._announce(request, result)
        except asyncio.CancelledError:
            raise
        except Exception:  # emitting failed (broker down): leave the offset uncommitted for a retry
            log.exception("job %s could not be announced; it will be redelivered", data.request_id)
            return
        finally:
            self._running.pop(data.request_id, None)
            self._states.pop(data.request_id, None)
        self._pending[tp].discard(offset)

    async def _run(self, run_dir: Path, request: OptimizationEvent) -> JobResult:
        """The job's final result; the job process is resumed from the run dir until it gives one.

        1. a final result already in the run dir is re-announced as it is;
        2. the inputs are frozen in the run dir (first start only);
        3. each attempt (at most `budget.max_attempts`, counted in `attempts.json`) first waits
           for MLflow if the previous one ended in an MLflow outage, then runs the job process;
        4. a process that died without a result, or a result failed by an MLflow outage, is
           announced as `retrying` and tried again; any other result is final.
        """
        data = request.data
        result = read_model(run_dir / RESULT_FILE, JobResult)
        if isinstance(result, JobResult) and result.outage is None:
            return result
        await self._emit_status(data.prompt, data.request_id, "started", budget=data.budget)
        spec = await self._freeze(run_dir, request)
        if isinstance(spec, JobResult):
            return spec
        attempts = Attempts(run_dir)
        if isinstance(result, JobResult):  # an outage result the daemon died before handling
            _set_aside(run_dir, attempts, result)
        limit = spec.policy.budget.max_attempts
        state = self._states.setdefault(data.request_id, JobState(attempt=attempts.used, max_attempts=limit))
        while True:
            last = attempts.last
            if last is not None and last.outage is not None and attempts.used < limit:
                if not await self._wait_for_mlflow(spec, last, state):
                    error = f"{MLFLOW} at {spec.tracking_uri} did not answer within max_outage_wait after attempt {attempts.used} of {limit}: {last.cause}"
                    return self._final(run_dir, JobResult(status="failed", error=error))
            if attempts.used >= limit:
                causes = "; ".join(
                    f"attempt {a.number}: {a.cause}" for a in attempts.ledger.attempts if a.counted
                )
                return self._final(
                    run_dir,
                    JobResult(
                        status="failed",
                        error=f"no result after {limit} attempt{'s' if limit > 1 else ''} (budget.max_attempts): {causes}",
                    ),
                )
            attempt = attempts.begin()
            state.attempt = attempts.used
            async with self._slots:
                prometheus_metrics.JOBS_IN_FLIGHT.inc()
                state.running = True
                state.started_at = state.started_at or time.time()
                try:
                    result = await self._attempt(run_dir, spec, attempts, attempt, state)
                finally:
                    state.running = False
                    prometheus_metrics.JOBS_IN_FLIGHT.dec()
            if result is not None and result.outage is None:
                return result
            if result is not None:
                _set_aside(run_dir, attempts, result)
            if attempts.used < limit:
                log.warning(
                    "job %s: attempt %d of %d ended without a result (%s); it will be resumed",
                    data.request_id,
                    attempts.used,
                    limit,
                    attempt.cause,
                )
                await self._emit_status(
                    data.prompt,
                    data.request_id,
                    "retrying",
                    event_id=f"{data.request_id}:retrying:{attempts.used}",
                    error=attempt.cause,
                    attempt=attempts.used,
                    max_attempts=limit,
                )

    async def _freeze(self, run_dir: Path, request: OptimizationEvent) -> JobSpec | JobResult:
        """The job's spec, and its window frozen in the run dir on first start (a failed result if unreadable)."""
        data = request.data
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / EXAMPLES_FILE).exists():
            try:
                examples = await self._read_snapshot(request)
            except SnapshotError as exc:
                return JobResult(status="failed", error=str(exc))
            spec = JobSpec(
                request_id=data.request_id,
                prompt=data.prompt,
                policy=self.policies[data.prompt],
                tracking_uri=self.settings.mlflow_tracking_uri,
                experiment=self.settings.mlflow_experiment,
                trigger=data.trigger,
                window_size=len(examples),
                num_threads=self.policies[data.prompt].budget.num_threads,
            )
            write_model(run_dir / JOB_FILE, spec)
            write_atomically(
                run_dir / EXAMPLES_FILE, json.dumps([e.model_dump(mode="json") for e in examples]).encode()
            )
        return JobSpec.model_validate_json((run_dir / JOB_FILE).read_bytes())

    async def _attempt(
        self, run_dir: Path, spec: JobSpec, attempts: Attempts, attempt: Attempt, state: JobState
    ) -> JobResult | None:
        """Run the job process once; its result, a failed one at the wall time, or None if it died without one."""
        wall = spec.policy.budget.max_wall_time.total_seconds() + GRACE_S
        with (run_dir / "job.log").open("ab") as job_log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "daemon.jobs.execute",
                str(run_dir),
                str(attempt.number),
                stdout=job_log,
                stderr=job_log,
                preexec_fn=_job_process_setup,
            )
            attempts.update(attempt, pid=process.pid)
            state.pid = process.pid
            try:
                code = await self._watch(process, spec.request_id, run_dir, wall)
            except asyncio.CancelledError:
                process.kill()
                attempts.end(attempt, "the daemon stopped it on shutdown", counted=False)
                raise
        if code is None:
            error = f"the job exceeded its wall time ({wall:.0f}s) and was killed"
            attempts.end(attempt, error)
            return JobResult(status="failed", error=error)
        result = read_model(run_dir / RESULT_FILE, JobResult)
        if isinstance(result, JobResult):
            attempts.end(attempt, result.error if result.outage else None, outage=result.outage)
            return result
        attempts.end(
            attempt, f"the job process {describe_exit(code)} without a result (see {run_dir / 'job.log'})"
        )
        return None

    async def _watch(
        self, process: asyncio.subprocess.Process, request_id: str, run_dir: Path, wall: float
    ) -> int | None:
        """Wait for the job process (None if it hit `wall` and was killed), logging when it
        starts and stops waiting on MLflow's client retries."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wall
        exited = asyncio.ensure_future(process.wait())
        noted = ""
        try:
            while not exited.done():
                await asyncio.wait({exited}, timeout=max(0.0, min(WATCH_S, deadline - loop.time())))
                if exited.done():
                    break
                if loop.time() >= deadline:
                    process.kill()
                    await exited
                    return None
                progress = read_model(run_dir / PROGRESS_FILE, Progress)
                waiting = (
                    progress.waiting if isinstance(progress, Progress) and progress.pid == process.pid else ""
                )
                if waiting and not noted:
                    log.warning("job %s waits: %s", request_id, waiting)
                elif noted and not waiting:
                    log.warning("job %s: %s answers again", request_id, MLFLOW)
                noted = waiting
            return exited.result()
        finally:
            exited.cancel()

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

    def _final(self, run_dir: Path, result: JobResult) -> JobResult:
        """A failure the runner decided: it carries the side effects the job process did (so they
        are announced) and is written as the job's result (a redelivery re-announces it)."""
        done = read_model(run_dir / SIDE_EFFECTS_FILE, SideEffects)
        if isinstance(done, SideEffects):
            result = result.model_copy(update={"registered": done.registered, "decisions": done.decisions})
        write_model(run_dir / RESULT_FILE, result)
        return result

    async def _read_snapshot(self, request: OptimizationEvent) -> list[Example]:
        ref = request.data.snapshot
        if ref is None:
            raise SnapshotError("the request carries no snapshot")
        consumer = AIOKafkaConsumer(enable_auto_commit=False, **self._client_options())
        await consumer.start()
        try:
            tp = TopicPartition(ref.topic, ref.partition)
            consumer.assign([tp])
            chunks: dict[int, SnapshotChunkEvent] = {}
            for offset in ref.offsets:
                consumer.seek(tp, offset)
                record = await asyncio.wait_for(consumer.getone(tp), 30)
                event = parse_event(record.value)
                if (
                    not isinstance(event, SnapshotChunkEvent)
                    or event.data.request_id != request.data.request_id
                ):
                    raise SnapshotError(
                        f"{ref.topic}/{ref.partition}@{offset} is not a chunk of {request.data.request_id}"
                    )
                chunks[event.data.chunk] = event
        except (TimeoutError, KafkaError, InvalidEvent) as exc:
            raise SnapshotError(f"cannot read the snapshot: {exc!r}") from None
        finally:
            await consumer.stop()
        examples = [e for i in sorted(chunks) for e in chunks[i].data.examples]
        if len(examples) != ref.n_examples or snapshot_sha256(examples) != ref.sha256:
            raise SnapshotError("the snapshot read back does not match its digest")
        return examples

    async def _announce(self, request: OptimizationEvent, result: JobResult) -> None:
        """registered -> promotion -> completed | failed, each with a deterministic id."""
        data = request.data
        for version in result.registered:
            await self._send(
                self.topics.prompts,
                PromptRegisteredEvent.build(
                    PromptRegisteredData(
                        prompt=version.name,
                        version=version.version,
                        uri=version.uri,
                        parent_version=version.parent_version,
                        request_id=data.request_id,
                        optimizer=result.optimizer or "mlflow_gepa",
                        baseline_score=result.baseline_score,
                        candidate_score=result.candidate_score,
                        n_train=result.n_train,
                        n_val=result.n_val,
                        usage=result.usage,
                    ),
                    id=f"{data.request_id}:registered:{version.name}",
                    source=self.source,
                ),
            )
        for decision in result.decisions:
            await self._promotion(
                f"{data.request_id}:promotion:{decision.name}",
                decision.name,
                decision.decision,
                program=data.prompt,
                from_version=decision.from_version,
                to_version=decision.to_version,
                baseline_score=result.baseline_score,
                candidate_score=result.candidate_score,
                improvement=decision.improvement,
                ci_low=decision.ci_low,
                ci_high=decision.ci_high,
                n_eval=result.n_val,
                request_id=data.request_id,
                reason=decision.reason,
            )
        await self._emit_status(
            data.prompt,
            data.request_id,
            result.status,
            n_train=result.n_train,
            n_val=result.n_val,
            budget=data.budget,
            metric_calls=result.metric_calls,
            baseline_score=result.baseline_score,
            candidate_score=result.candidate_score,
            version=result.registered[0].version if len(result.registered) == 1 else None,
            error=result.error,
            usage=result.usage,
            stopped_by=result.stopped_by,
        )
        prometheus_metrics.JOBS.labels(result.status).inc()
        _count_usage(data.prompt, result)
        log.info("job %s for %s %s", data.request_id, data.prompt, result.status)

    # -- commands ----------------------------------------------------------------------------

    async def _command_in_order(self, tp: TopicPartition, offset: int, event: CommandEvent) -> None:
        """Apply a command after the prompt's earlier ones. While MLflow is unreachable the command
        waits for it (up to the prompt's `budget.max_outage_wait`), in a task, so consuming goes on;
        a command that still fails is logged as an error and skipped, never a crash."""
        prompt = event.data.prompt
        async with self._command_locks[prompt]:
            deadline = datetime.now(UTC) + self.policies[prompt].budget.max_outage_wait
            uri = self.settings.mlflow_tracking_uri
            while True:
                try:
                    await self._command(event)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not await asyncio.to_thread(mlflow_outage, exc, uri) or datetime.now(UTC) >= deadline:
                        log.exception(
                            "command %s (%s %s) failed; skipped", event.id, event.data.action, prompt
                        )
                        break
                    log.warning(
                        "command %s (%s %s) waits for %s at %s to answer: %s",
                        event.id,
                        event.data.action,
                        prompt,
                        MLFLOW,
                        uri,
                        exc,
                    )
                    if not await answers_again(uri, deadline):
                        log.error(
                            "command %s (%s %s) skipped: %s did not answer within max_outage_wait",
                            event.id,
                            event.data.action,
                            prompt,
                            MLFLOW,
                        )
                        break
        self._pending[tp].discard(offset)

    async def _command(self, event: CommandEvent) -> None:
        """approve / reject a version awaiting approval, or roll `production` back."""
        data = event.data
        names = await asyncio.to_thread(prompt_names, self.policies[data.prompt])
        for name in names:
            outcome = await asyncio.to_thread(_apply_command, name, data)
            if outcome is None:
                log.warning(
                    "%s %s: nothing to do (%s)",
                    data.action,
                    name,
                    "no version awaiting approval"
                    if data.action != "rollback"
                    else "no previous production version, or production is no longer the version named",
                )
                continue
            decision, from_version, to_version, reason = outcome
            await self._promotion(
                f"{event.id}:{name}",
                name,
                decision,
                program=data.prompt,
                from_version=from_version,
                to_version=to_version,
                reason=f"{reason} (command by {data.requested_by or 'unknown'})",
            )

    # -- emitting ----------------------------------------------------------------------------

    async def _promotion(
        self, event_id: str, name: str, decision: str, *, program: str, **fields: Any
    ) -> None:
        """Keyed by the policy prompt (`program`): a dspy predictor prompt's promotion lands on its
        program's partition, where the ingest role keeps the program's live guard."""
        event = PromotionEvent.build(
            PromotionData(prompt=name, decision=decision, **fields), id=event_id, source=self.source
        )
        await self._send(self.topics.promotions, event, key=program.encode())
        prometheus_metrics.PROMOTIONS.labels(name, decision).inc()

    async def _emit_status(
        self, prompt: str, request_id: str, status: str, event_id: str | None = None, **fields: Any
    ) -> None:
        event = OptimizationEvent.build(
            OptimizationData(request_id=request_id, prompt=prompt, status=status, **fields),
            id=event_id or f"{request_id}:{status}",
            source=self.source,
        )
        await self._send(self.topics.optimizations, event)

    async def _send(self, topic: str, event: CloudEvent, key: bytes | None = None) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(topic, event.to_json(), key=key or event.key)

    # -- status ------------------------------------------------------------------------------

    def assignment(self) -> list[str]:
        """The partitions this process's optimizer group member owns now, as "topic/partition"."""
        assigned = self._consumer.assignment() if self._consumer is not None else set()
        return sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)

    def status(self) -> dict[str, Any]:
        """Jobs this process runs now: the stage their process reports, the attempt, what the
        job waits for (a slot, MLflow after an outage, MLflow's client retries), and GEPA's
        metric calls of the budget, best score so far and start time (elapsed of wall time)."""
        jobs = {}
        for request_id in self._running:
            progress = read_model(self.jobs_dir / request_id / PROGRESS_FILE, Progress)
            spec = read_model(self.jobs_dir / request_id / JOB_FILE, JobSpec)
            state = self._states.get(request_id)
            budget = spec.policy.budget if isinstance(spec, JobSpec) else None
            jobs[request_id] = {
                "prompt": spec.prompt if isinstance(spec, JobSpec) else None,
                "stage": progress.stage if isinstance(progress, Progress) else "queued",
                "detail": progress.detail if isinstance(progress, Progress) else "",
                "attempt": state.attempt if state else 0,
                "max_attempts": state.max_attempts if state else None,
                "state": state.describe(
                    progress.waiting if isinstance(progress, Progress) and progress.pid == state.pid else ""
                )
                if state
                else "queued",
                "metric_calls": progress.metric_calls if isinstance(progress, Progress) else None,
                "best_score": progress.best_score if isinstance(progress, Progress) else None,
                "max_metric_calls": budget.max_metric_calls if budget else None,
                "max_wall_time_s": budget.max_wall_time.total_seconds() if budget else None,
                "started_at": state.started_at if state else None,
            }
        return jobs


def _set_aside(run_dir: Path, attempts: Attempts, result: JobResult) -> None:
    """Keep an outage-failed result as its attempt's record, out of the way of the next attempt."""
    last = attempts.last
    if last is not None:
        attempts.update(last, ended=last.ended or datetime.now(UTC), cause=result.error, outage=result.outage)
    (run_dir / RESULT_FILE).replace(run_dir / f"result.attempt-{last.number if last else 0}.json")


def _apply_command(name: str, command: CommandData) -> tuple[str, int | None, int, str] | None:
    """The registry change a command asks for: (decision, from, to, reason), or None. A rollback
    naming a version happens only while that version is in production (the guard's request
    may be stale); one requested by the guard tags the version it rolled back."""
    action, version = command.action, command.version
    if action == "rollback":
        moved = prompt_versions.roll_back(name, expected=version)
        if moved is None:
            return None
        reason = command.reason or f"production rolled back from {moved[0]} to {moved[1]}"
        if command.requested_by == "guard":
            prompt_versions.mark_rolled_back_by_guard(name, moved[0], reason)
        return "rolled_back", moved[0], moved[1], reason
    waiting = [v for v in prompt_versions.awaiting_approval(name) if version is None or v.version == version]
    if not waiting:
        return None
    target = waiting[-1]
    if action == "approve":
        previous = prompt_versions.production(name)
        prompt_versions.move_production(name, target.version)
        return "promoted", previous.version if previous else None, target.version, "approved"
    prompt_versions.clear_awaiting(name, target.version)
    return "rejected", None, target.version, "rejected by an operator"


def _count_usage(prompt: str, result: JobResult) -> None:
    """Add a finished job's model calls, tokens and estimated USD to the per-prompt, per-role counters."""
    for role, usage in (result.usage.roles if result.usage else {}).items():
        prometheus_metrics.MODEL_CALLS.labels(prompt, role).inc(usage.calls)
        prometheus_metrics.MODEL_TOKENS.labels(prompt, role, "prompt").inc(usage.prompt_tokens)
        prometheus_metrics.MODEL_TOKENS.labels(prompt, role, "completion").inc(usage.completion_tokens)
        prometheus_metrics.MODEL_COST.labels(prompt, role).inc(usage.cost_usd)


def _job_process_setup() -> None:
    """In the job process before exec: die with the daemon; leave Ctrl-C to the daemon."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
