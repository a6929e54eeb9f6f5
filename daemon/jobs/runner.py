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
from collections import defaultdict
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from daemon import metrics
from daemon.broker import die_with_parent
from daemon.jobs import registry
from daemon.jobs.backends import prompt_names
from daemon.jobs.spec import EXAMPLES_FILE, JOB_FILE, PROGRESS_FILE, RESULT_FILE, JobResult, JobSpec, Progress, read_model, write_model
from daemon.settings import Settings
from handlers.snapshot import snapshot_sha256
from schemas.config import PolicyFile
from schemas.events import (
    CloudEvent,
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
        self._producer: AIOKafkaProducer | None = None
        self.ready = False

    # -- the loop --------------------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.settings.bootstrap_servers.split(","), **self.settings.aiokafka_options()}

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
            for task in self._running.values():
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

    async def _dispatch(self, tp: TopicPartition, offset: int, raw: bytes) -> None:
        try:
            event = parse_event(raw)
        except InvalidEvent:
            return  # the ingest role dead-letters bad input records
        if isinstance(event, OptimizationEvent) and event.data.status == "requested":
            if event.data.prompt not in self.policies or event.data.request_id in self._running:
                return
            self._pending[tp].add(offset)
            task = asyncio.create_task(self._job(tp, offset, event))
            self._running[event.data.request_id] = task
        elif isinstance(event, CommandEvent) and event.data.action in ("approve", "reject", "rollback"):
            if event.data.prompt in self.policies:
                await self._command(event)

    # -- one job ---------------------------------------------------------------------------

    async def _job(self, tp: TopicPartition, offset: int, request: OptimizationEvent) -> None:
        data = request.data
        run_dir = self.jobs_dir / data.request_id
        try:
            async with self._slots:
                metrics.JOBS_IN_FLIGHT.inc()
                try:
                    result = read_model(run_dir / RESULT_FILE, JobResult)
                    if not isinstance(result, JobResult):
                        await self._emit_status(data.prompt, data.request_id, "started", budget=data.budget)
                        result = await self._execute(run_dir, request)
                    await self._announce(request, result)
                finally:
                    metrics.JOBS_IN_FLIGHT.dec()
        except asyncio.CancelledError:
            raise
        except Exception:  # emitting failed (broker down): leave the offset uncommitted for a retry
            log.exception("job %s could not be announced; it will be redelivered", data.request_id)
            return
        finally:
            self._running.pop(data.request_id, None)
        self._pending[tp].discard(offset)

    async def _execute(self, run_dir: Path, request: OptimizationEvent) -> JobResult:
        """1. freeze the inputs in the run dir, 2. run the job process, 3. read its result."""
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
            tmp = run_dir / (EXAMPLES_FILE + ".tmp")
            tmp.write_text(json.dumps([e.model_dump(mode="json") for e in examples]))
            tmp.replace(run_dir / EXAMPLES_FILE)
        wall = self.policies[data.prompt].budget.max_wall_time.total_seconds() + GRACE_S
        with (run_dir / "job.log").open("ab") as job_log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "daemon.jobs.execute",
                str(run_dir),
                stdout=job_log,
                stderr=job_log,
                preexec_fn=_job_process_setup,
            )
            try:
                code = await asyncio.wait_for(process.wait(), wall)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
                return JobResult(status="failed", error=f"the job exceeded its wall time ({wall:.0f}s) and was killed")
            except asyncio.CancelledError:
                process.kill()
                raise
        result = read_model(run_dir / RESULT_FILE, JobResult)
        if isinstance(result, JobResult):
            return result
        return JobResult(status="failed", error=f"the job process exited with code {code} without a result (see {run_dir / 'job.log'})")

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
                if not isinstance(event, SnapshotChunkEvent) or event.data.request_id != request.data.request_id:
                    raise SnapshotError(f"{ref.topic}/{ref.partition}@{offset} is not a chunk of {request.data.request_id}")
                chunks[event.data.chunk] = event
        except (asyncio.TimeoutError, KafkaError, InvalidEvent) as exc:
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
        )
        metrics.JOBS.labels(result.status).inc()
        log.info("job %s for %s %s", data.request_id, data.prompt, result.status)

    # -- commands ----------------------------------------------------------------------------

    async def _command(self, event: CommandEvent) -> None:
        """approve / reject a version awaiting approval, or roll `production` back."""
        data = event.data
        names = await asyncio.to_thread(prompt_names, self.policies[data.prompt])
        for name in names:
            outcome = await asyncio.to_thread(_apply_command, name, data.action, data.version)
            if outcome is None:
                log.warning("%s %s: nothing to do (%s)", data.action, name, "no version awaiting approval" if data.action != "rollback" else "no previous production version")
                continue
            decision, from_version, to_version, reason = outcome
            await self._promotion(
                f"{event.id}:{name}",
                name,
                decision,
                from_version=from_version,
                to_version=to_version,
                reason=f"{reason} (command by {data.requested_by or 'unknown'})",
            )

    # -- emitting ----------------------------------------------------------------------------

    async def _promotion(self, event_id: str, name: str, decision: str, **fields: Any) -> None:
        event = PromotionEvent.build(PromotionData(prompt=name, decision=decision, **fields), id=event_id, source=self.source)
        await self._send(self.topics.promotions, event)
        metrics.PROMOTIONS.labels(name, decision).inc()

    async def _emit_status(self, prompt: str, request_id: str, status: str, **fields: Any) -> None:
        event = OptimizationEvent.build(
            OptimizationData(request_id=request_id, prompt=prompt, status=status, **fields),
            id=f"{request_id}:{status}",
            source=self.source,
        )
        await self._send(self.topics.optimizations, event)

    async def _send(self, topic: str, event: CloudEvent) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(topic, event.to_json(), key=event.key)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Jobs this process runs now, with the stage their process reports."""
        jobs = {}
        for request_id in self._running:
            progress = read_model(self.jobs_dir / request_id / PROGRESS_FILE, Progress)
            spec = read_model(self.jobs_dir / request_id / JOB_FILE, JobSpec)
            jobs[request_id] = {
                "prompt": spec.prompt if isinstance(spec, JobSpec) else None,
                "stage": progress.stage if isinstance(progress, Progress) else "queued",
                "detail": progress.detail if isinstance(progress, Progress) else "",
            }
        return jobs


def _apply_command(name: str, action: str, version: int | None) -> tuple[str, int | None, int, str] | None:
    """The registry change a command asks for: (decision, from, to, reason), or None."""
    if action == "rollback":
        moved = registry.roll_back(name)
        return None if moved is None else ("rolled_back", moved[0], moved[1], f"production rolled back from {moved[0]} to {moved[1]}")
    waiting = [v for v in registry.awaiting_approval(name) if version is None or v.version == version]
    if not waiting:
        return None
    target = waiting[-1]
    if action == "approve":
        previous = registry.production(name)
        registry.move_production(name, target.version)
        return "promoted", previous.version if previous else None, target.version, "approved"
    registry.clear_awaiting(name, target.version)
    return "rejected", None, target.version, "rejected by an operator"


def _job_process_setup() -> None:
    """In the job process before exec: die with the daemon; leave Ctrl-C to the daemon."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
