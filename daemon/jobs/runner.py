"""The job runner (role `optimizer` or `all`): the consume/commit loop of the optimizer group.

It takes `requested` events off the optimizations topic and drives each as a job
(`daemon/jobs/driver.py`), and approve / reject / rollback commands off the commands topic
(`daemon/jobs/commands.py`), each in a task, while the loop keeps consuming, heartbeating and
committing. A record's offset is committed only once its work is done and announced
(`daemon/jobs/offsets.py`), so a job interrupted by a crash or a revoked partition is
redelivered and resumes from its run directory; every emitted event has a deterministic id,
so a resumed job re-announces rather than duplicates.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from daemon.jobs.announcer import Announcer
from daemon.jobs.commands import Commands
from daemon.jobs.driver import SHUTDOWN, JobDriver, JobState
from daemon.jobs.offsets import Hold, OffsetTracker
from daemon.jobs.run_dir import RunDir
from daemon.jobs.run_lock import driving
from daemon.settings import Settings
from schemas.config import PolicyBook, PolicyFile
from schemas.events import CommandEvent, OptimizationEvent
from schemas.parse import InvalidEvent, parse_event

log = logging.getLogger("gepa_stream.jobs")
REVOKED = "its partition was revoked (a rebalance); the partition's next owner resumes it"


@dataclass(eq=False)
class _Work:
    """A task started by a record, and the hold on that record's offset."""

    task: asyncio.Task[None]
    hold: Hold[TopicPartition]
    state: JobState | None = None  # jobs only


class JobRunner:
    """The optimizer group member of this process: its loop, its work in flight, its rebalances."""

    def __init__(self, settings: Settings, policies: PolicyFile) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.policies = PolicyBook(policies)
        self.jobs_dir = settings.state_dir / "jobs"
        self.source = f"gepa-stream/{settings.app_id}/optimizer"
        self.offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self._jobs: dict[str, _Work] = {}  # request id -> its job
        self._commands: set[_Work] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self.ready = False

    def _client_options(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.settings.bootstrap_servers.split(","),
            **self.settings.aiokafka_options(),
        }

    def reload(self, policies: PolicyFile) -> None:
        """A reloaded policy file (daemon/policy_watch.py): new jobs and commands read it; a running
        job keeps the policy frozen in its `job.json`."""
        self.policies.replace(policies)

    async def run(self) -> None:
        """Consume until cancelled; on the way out, stop every job and command (their offsets
        stay uncommitted, so the group's next owner resumes them)."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        consumer = AIOKafkaConsumer(
            group_id=f"{self.settings.app_id}-optimizer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self.settings.heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(self.settings.rebalance_timeout_s * 1000),
            **self._client_options(),
        )
        consumer.subscribe([self.topics.optimizations, self.topics.commands], listener=_Rebalance(self))
        producer = AIOKafkaProducer(acks="all", **self._client_options())
        await producer.start()
        announcer = Announcer(producer, self.topics, self.source)
        driver = JobDriver(self.settings, self.policies, announcer, self._client_options())
        commands = Commands(
            self.policies, self.settings.mlflow_tracking_uri, announcer.promotion, self.source
        )
        await consumer.start()
        self._consumer = consumer
        self.ready = True
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        if self.offsets.seen(tp, record.offset):
                            self._dispatch(tp, record.offset, record.value, driver, commands)
                await self._commit(self.offsets.due())
        finally:
            self.ready = False
            await self._stop_work(consumer.assignment(), SHUTDOWN)
            self.offsets.revoke(consumer.assignment())
            await consumer.stop()
            await producer.stop()

    async def _commit(self, points: dict[TopicPartition, int]) -> None:
        """Commit the offsets below which every record's work is done and announced."""
        if not points or self._consumer is None:
            return
        try:
            await self._consumer.commit(points)
        except (KafkaError, IllegalStateError) as exc:  # rebalancing: the listener settles it
            log.warning("commit failed (%s); unfinished requests will be redelivered", exc)
            return
        self.offsets.committed(points)

    def _dispatch(
        self, tp: TopicPartition, offset: int, raw: bytes | None, driver: JobDriver, commands: Commands
    ) -> None:
        """Start the record's work in a task, holding its offset until the task has finished it."""
        try:
            event = parse_event(raw, max_bytes=self.settings.max_event_bytes)
        except InvalidEvent as exc:  # the ingest role, which reads both topics, dead-letters it
            log.debug("skipping %s/%d@%d: %s: %s", tp.topic, tp.partition, offset, exc.reason, exc)
            return
        if isinstance(event, OptimizationEvent) and event.data.status == "requested":
            data = event.data
            if data.prompt not in self.policies or data.request_id in self._jobs:
                return
            hold = self.offsets.start(tp, offset)
            if hold is None:
                return
            state = JobState(attempt=0, max_attempts=self.policies[data.prompt].budget.max_attempts)
            job = _Work(asyncio.create_task(self._job(hold, event, driver, state)), hold, state)
            self._jobs[data.request_id] = job
            job.task.add_done_callback(
                lambda _: self._jobs.pop(data.request_id) if self._jobs.get(data.request_id) is job else None
            )
        elif isinstance(event, CommandEvent) and event.data.action != "optimize":
            if event.data.prompt not in self.policies:
                return
            hold = self.offsets.start(tp, offset)
            if hold is None:
                return
            work = _Work(asyncio.create_task(self._command(hold, event, commands)), hold)
            self._commands.add(work)
            work.task.add_done_callback(lambda _: self._commands.discard(work))

    async def _job(
        self, hold: Hold[TopicPartition], request: OptimizationEvent, driver: JobDriver, state: JobState
    ) -> None:
        """One request, announced before its offset is released (commit-after-announce):

        1. hold the run directory's lock, waiting while another process drives it;
        2. drive the job to its final result (resuming from the run directory);
        3. announce it: registered -> promotion -> completed | failed, each acknowledged;
        4. release the offset's hold; the loop's next commit covers it.
        A failure to announce (broker down) leaves the hold: the request is redelivered."""
        run = RunDir(self.jobs_dir / request.data.request_id)
        try:
            async with driving(run) as lock_fd:  # 1
                state.holding_run_dir = True
                result = await driver.drive(run, request, state, lock_fd)  # 2
                await driver.announcer.result(request, result)  # 3
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s could not be announced; it will be redelivered", request.data.request_id)
            return
        self.offsets.finish(hold)  # 4

    async def _command(self, hold: Hold[TopicPartition], event: CommandEvent, commands: Commands) -> None:
        """Apply the command (never raises), then release its offset."""
        await commands.apply_in_order(event)
        self.offsets.finish(hold)

    async def _stop_work(self, partitions: set[TopicPartition], cause: str) -> None:
        """Cancel the jobs and commands of these partitions and wait until they are gone: a
        cancelled job terminates its job process, waits for it to exit and releases the run
        directory before its task ends; `cause` goes to the attempts ledger (not counted)."""
        stopping = [w for w in [*self._jobs.values(), *self._commands] if w.hold.partition in partitions]
        for work in stopping:
            if work.state is not None:
                work.state.stop_cause = cause
            work.task.cancel()
        if stopping:
            log.warning("stopping %d job(s) and command(s): %s", len(stopping), cause)
            await asyncio.gather(*(w.task for w in stopping), return_exceptions=True)

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Before the group moves these partitions (aiokafka awaits this before rejoining):

        1. stop their jobs and commands and wait for their job processes to be gone, so the
           next owner never starts a job while our process still drives its run directory;
        2. commit what is done on them (a stopped request's offset stays held: redelivered);
        3. forget them: a record of theirs still in hand is no longer acted on."""
        await self._stop_work(partitions, REVOKED)  # 1
        await self._commit(self.offsets.due(partitions))  # 2
        self.offsets.revoke(partitions)  # 3

    # -- status ------------------------------------------------------------------------------

    def assignment(self) -> list[str]:
        """The partitions this process's optimizer group member owns now, as "topic/partition"."""
        assigned = self._consumer.assignment() if self._consumer is not None else set()
        return sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)

    def status(self) -> dict[str, Any]:
        """Jobs this process runs now: the stage their process reports, the attempt, what the
        job waits for (the run directory, a slot, MLflow after an outage, MLflow's client
        retries), and GEPA's metric calls of the budget, best score so far and start time."""
        jobs = {}
        for request_id, work in self._jobs.items():
            run = RunDir(self.jobs_dir / request_id)
            progress, spec = run.progress(), run.spec_if_frozen()
            state = work.state
            budget = spec.policy.budget if spec is not None else None
            jobs[request_id] = {
                "prompt": spec.prompt if spec is not None else None,
                "stage": progress.stage if progress is not None else "queued",
                "detail": progress.detail if progress is not None else "",
                "attempt": state.attempt if state else 0,
                "max_attempts": state.max_attempts if state else None,
                "state": state.describe(
                    progress.waiting if progress is not None and progress.pid == state.pid else ""
                )
                if state
                else "queued",
                "metric_calls": progress.metric_calls if progress is not None else None,
                "best_score": progress.best_score if progress is not None else None,
                "max_metric_calls": budget.max_metric_calls if budget else None,
                "max_wall_time_s": budget.max_wall_time.total_seconds() if budget else None,
                "started_at": state.started_at if state else None,
            }
        return jobs


class _Rebalance(ConsumerRebalanceListener):
    """The optimizer group's rebalances, told to the runner."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.runner.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.runner.offsets.assign(assigned)
