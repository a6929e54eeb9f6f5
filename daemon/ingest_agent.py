"""The ingest agent: topics, tables, the batched agent over the input topics, and /status (each
prompt's entry read by `handlers.ingest_status`; its gauges set by `daemon.ingest_gauges`).

Wiring only: every decision is made in `handlers/`; this module moves bytes between Kafka and
`handlers.ingest.Ingest`, a batch of records at a time, and applies the returned `Step`s.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import faust
from faust.types import EventT, StreamT, TableT, TopicT

from daemon import ingest_gauges, prometheus_metrics
from daemon.faust_ext.table_batch import TableBatch
from daemon.settings import Settings
from handlers.deadletter import dead_letter
from handlers.guard import GuardSpec
from handlers.ingest import Ingest, Request, Step, UnknownPrompt
from handlers.ingest_status import prompt_status
from handlers.job_status import status_event
from handlers.rollout import RolloutSpec
from handlers.snapshot import snapshot_chunks
from handlers.trigger import TriggerState
from handlers.watches import WatchKind, WatchStep
from schemas import event_ids
from schemas.config import PolicyFile
from schemas.events import (
    CloudEvent,
    CommandEvent,
    DeadLetterReason,
    OptimizationEvent,
    PromotionEvent,
    RatingEvent,
    SnapshotRef,
    TraceEvent,
    TriggerInfo,
)
from schemas.parse import InvalidEvent, parse_event

log = logging.getLogger("gepa_stream.ingest")

BATCH_MAX_RECORDS = 2000
"""Records per batch at most: a full batch is processed at once, before its interval is up."""


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record, as the agent reads it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @classmethod
    def of(cls, event: EventT[Any]) -> Record:
        message = event.message
        return cls(message.topic, message.partition, message.offset, message.key, message.value)


def raw_topic(app: faust.App, *names: str, partitions: int) -> TopicT:
    """A topic of raw bytes keys and values (the agent parses and validates them itself)."""
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )


class IngestAgent:
    """One worker's ingest side: consumes the input topics, keeps the tables, fires triggers."""

    def __init__(self, settings: Settings, policies: PolicyFile, faust_app: faust.App) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.app = faust_app
        self.ingest = Ingest(policies, settings.app_id)
        self.ready = False
        self._source = f"gepa-stream/{settings.app_id}/ingest"
        self.recovered: dict[str, int] = {"rebuilds": 0}  # table records at this process's first recovery
        self._expected_type: dict[str, type[CloudEvent[Any]]] = {
            self.topics.traces: TraceEvent,
            self.topics.ratings: RatingEvent,
            self.topics.commands: CommandEvent,
            self.topics.optimizations: OptimizationEvent,
            self.topics.promotions: PromotionEvent,
        }
        partitions = settings.partitions
        self.source = raw_topic(faust_app, *self._expected_type, partitions=partitions)
        self.snapshots = raw_topic(faust_app, self.topics.snapshots, partitions=partitions)
        self.optimizations = raw_topic(faust_app, self.topics.optimizations, partitions=partitions)
        self.dlq = raw_topic(faust_app, self.topics.dlq, partitions=partitions)
        self.outputs = {
            PromotionEvent: raw_topic(faust_app, self.topics.promotions, partitions=partitions),
            CommandEvent: raw_topic(faust_app, self.topics.commands, partitions=partitions),
        }
        self.facts = self._table("facts")  # (prompt, trace) -> the trace's record
        self.triggers = self._table("triggers")  # prompt -> TriggerState
        # per live watch: prompt -> its spec, and (prompt, trace, rater) -> Vote
        self.watch_tables: dict[WatchKind, tuple[TableT[bytes, bytes], TableT[bytes, bytes]]] = {
            "guard": (self._table("guards"), self._table("guard_votes")),
            "rollout": (self._table("rollouts"), self._table("rollout_votes")),
        }
        self.writes = TableBatch(faust_app)
        self._touched: set[str] = set()  # prompts whose gauges the current batch changed
        self._watched: set[str] = set()  # prompts whose watch gauges the current batch changed
        # each watch's spec as last staged: a step that leaves it alone writes only its votes
        self._staged_specs: dict[tuple[WatchKind, str], GuardSpec | RolloutSpec] = {}
        self.facts.on_recover(self._rebuild)
        faust_app.agent(self.source, name="ingest")(self._consume)

    def _table(self, name: str) -> TableT[bytes, bytes]:
        """A table of raw bytes, co-partitioned with the input topics."""
        return self.app.Table(name, partitions=self.settings.partitions, key_type=bytes, value_type=bytes)

    def reload(self, policies: PolicyFile) -> None:
        """A reloaded policy file (daemon/policy_watch.py): without a rebalance, see `Ingest.reload`."""
        self.ingest.reload(policies, time.time())

    # -- recovery ------------------------------------------------------------------------

    async def _rebuild(self) -> None:
        """After (re)assignment: rebuild the in-memory windows from the recovered tables."""
        now = time.time()
        self.ingest.reset()
        self._staged_specs.clear()
        for prompt, raw in self.triggers.items():
            self.ingest.restore_trigger(prompt.decode(), TriggerState.decode(raw))
        for raw in self.facts.values():
            self.ingest.restore_record(raw, now)
        for kind, (specs, votes) in self.watch_tables.items():
            for prompt, raw in specs.items():
                if prompt.decode() in self.ingest.policies:
                    self.ingest.watches.restore(kind, prompt.decode(), raw)
            for key, raw in votes.items():
                self.ingest.watches.restore_vote(kind, key, raw)
        self.ready = True
        if not self.recovered["rebuilds"]:
            self.recovered.update(facts=len(self.facts), triggers=len(self.triggers))
        self.recovered["rebuilds"] += 1
        ingest_gauges.refresh_all(self.ingest)
        log.info("recovered %d trace records for %d prompts", len(self.facts), len(self.ingest.windows))

    # -- the agent -----------------------------------------------------------------------

    async def _consume(self, stream: StreamT[bytes]) -> None:
        """Batches of at most `BATCH_MAX_RECORDS`, each as soon as it is full or its interval
        (`GEPA_STREAM_INGEST_BATCH_INTERVAL_S`) is up. A batch's records are acknowledged only
        after `process_batch` returned (its table writes acknowledged by the broker), so their
        offsets are committed only then; a batch cut short (a crash, a cancelled task at
        shutdown) is never acknowledged and is read again."""
        interval = self.settings.ingest_batch_interval_s
        batches = stream.noack_take(BATCH_MAX_RECORDS, within=interval)  # type: ignore[attr-defined]  # on Stream, not StreamT
        async for events in batches:
            await self.process_batch([Record.of(event) for event in events])
            for event in events:
                await stream.ack(event)

    async def process_batch(self, records: Sequence[Record]) -> None:
        """Handle records in order, staging their table writes (each key once), then write them.

        A record whose step emits events (a trigger's snapshot and `requested`, a skipped
        request, a guard's decision) cuts the batch: 1. the writes staged before it are made
        durable, 2. its events are sent and acknowledged, 3. its own writes are made durable.
        So the tables never hold a fact newer than an announced request without the trigger
        state that announced it, and a replay after a crash re-announces the same request id."""
        started = time.perf_counter()
        for record in records:
            handled = await self._handle(record)
            if handled is None:
                continue
            event, step = handled
            if step.request is None and step.skipped is None and not any(w.events for w in step.watch_steps):
                self._stage(record.partition, event, step)
                continue
            await self.writes.flush()
            await self._emit(event, step)
            self._stage(record.partition, event, step)
            await self.writes.flush()
        await self.writes.flush()
        for prompt in {p for p in self.ingest.windows if p in self._touched}:
            ingest_gauges.refresh_window(self.ingest, prompt)
        self._touched.clear()
        for prompt in self._watched:  # once a batch: the rollout's status is a full look (~0.5 ms)
            ingest_gauges.refresh_watches(self.ingest, prompt)
        self._watched.clear()
        per_record = (time.perf_counter() - started) / max(len(records), 1)
        for topic, n in Counter(record.topic for record in records).items():
            histogram = prometheus_metrics.PROCESSING_SECONDS.labels(topic)
            for _ in range(n):
                histogram.observe(per_record)

    async def _handle(self, record: Record) -> tuple[CloudEvent[Any], Step] | None:
        """1. parse, 2. check topic and prompt, 3. handle; failures -> DLQ (and None).

        This agent dead-letters every bad record of the topics it reads, `gepa.optimizations`
        and `gepa.commands` included (the job runner reads those too, and only skips them), so
        one bad record is one dead letter whatever the roles. Nothing is touched before 3, and
        a failing 3 leaves the windows as the tables hold them (`Ingest.handle`)."""
        try:
            event = parse_event(record.value, max_bytes=self.settings.max_event_bytes)
        except InvalidEvent as exc:
            await self._dead_letter(record, exc.reason, str(exc))
            return None
        expected = self._expected_type.get(record.topic)
        if expected is not None and not isinstance(event, expected):
            await self._dead_letter(
                record, "wrong_topic", f"a {event.type} event does not belong on {record.topic}"
            )
            return None
        try:
            step = self.ingest.handle(event, time.time())
        except UnknownPrompt as exc:
            await self._dead_letter(record, "unknown_prompt", str(exc))
            return None
        except Exception as exc:  # a bug must not stop the stream; the record is kept in the DLQ
            log.exception("handler failed on %s/%d@%d", record.topic, record.partition, record.offset)
            await self._dead_letter(record, "handler_error", f"{type(exc).__name__}: {exc}")
            return None
        prometheus_metrics.EVENTS.labels(event.type, record.topic).inc()
        return event, step

    async def _emit(self, event: CloudEvent[Any], step: Step) -> None:
        """A step's events, each acknowledged before the next (and before its table writes)."""
        if step.request is not None:
            await self._announce(step.request)
        if step.skipped is not None:
            prompt, reason = step.skipped
            skipped = event_ids.command_skipped(event.id)
            await self._send_status(
                status_event(prompt, skipped, "skipped", source=self._source, event_id=skipped, error=reason)
            )
        for watch in step.watch_steps:
            for decision in watch.events:
                sent = await self.outputs[type(decision)].send(key=decision.key, value=decision.to_json())
                await sent

    def _stage(self, partition: int, event: CloudEvent[Any], step: Step) -> None:
        """A step's table writes into the batch, on the partition of the record that caused them."""
        if not step.puts and isinstance(event, (TraceEvent, RatingEvent)):
            prometheus_metrics.DUPLICATES.labels(event.type).inc()
        for key, value in step.puts:
            self.writes.put(self.facts, partition, key, value)
        for key in step.deletes:
            self.writes.delete(self.facts, partition, key)
        prompt = step.prompt or event.subject
        if prompt is None:  # every input event names its prompt (the parser checks subject == data.prompt)
            return
        if step.trigger_state is not None:
            self.writes.put(self.triggers, partition, prompt.encode(), step.trigger_state.encode())
        for watch in step.watch_steps:
            self._stage_watch(partition, watch)
        self._touched.add(prompt)

    def _stage_watch(self, partition: int, change: WatchStep) -> None:
        """A watch's votes, and its spec if it changed since it was last staged (after its events
        were acknowledged); its gauges at the end of the batch. Most steps are one rated trace's
        votes: re-encoding the unchanged spec and a full look for the gauges on each of them cost
        a watched prompt ~4/5 of its ingest rate (bench/ingest.py, section j)."""
        specs, votes = self.watch_tables[change.kind]
        for key in change.deletes:
            self.writes.delete(votes, partition, key)
        for key, value in change.puts:
            self.writes.put(votes, partition, key, value)
        staged = (change.kind, change.prompt)
        if self._staged_specs.get(staged) != change.spec:
            self.writes.put(specs, partition, change.prompt.encode(), change.spec.encode())
            self._staged_specs[staged] = replace(change.spec)
        self._watched.add(change.prompt)
        for event in change.events:
            log.info("%s %s: %s", change.kind, change.prompt, getattr(event.data, "reason", ""))

    async def _announce(self, request: Request) -> None:
        """Freeze the window on the snapshots topic, then emit `requested` pointing at it."""
        chunks = snapshot_chunks(request.request_id, request.prompt, request.examples)
        offsets, partition = [], 0
        for chunk in chunks:
            sent = await self.snapshots.send(key=chunk.key, value=chunk.to_json())
            record = await sent
            offsets.append(record.offset)
            partition = record.topic_partition.partition
        snapshot = SnapshotRef(
            topic=self.topics.snapshots,
            partition=partition,
            offsets=offsets,
            n_examples=len(request.examples),
            sha256=request.sha256,
        )
        await self._send_status(
            status_event(
                request.prompt,
                request.request_id,
                "requested",
                source=self._source,
                trigger=TriggerInfo(rule=request.fire.rule, values=request.fire.values),
                snapshot=snapshot,
                budget=request.budget,
            )
        )
        prometheus_metrics.TRIGGERS.labels(request.prompt, request.fire.rule).inc()
        log.info(
            "fired %s for %s (%s): %d examples",
            request.request_id,
            request.prompt,
            request.fire.rule,
            len(request.examples),
        )

    async def _send_status(self, event: OptimizationEvent) -> None:
        sent = await self.optimizations.send(key=event.key, value=event.to_json())
        await sent

    async def _dead_letter(self, record: Record, reason: DeadLetterReason, error: str) -> None:
        letter = dead_letter(
            record.value,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            reason=reason,
            error=error,
            source=self._source,
        )
        await self.dlq.send(key=record.key, value=letter.to_json())
        prometheus_metrics.DEAD_LETTERS.labels(reason).inc()
        log.warning(
            "dead letter %s/%d@%d: %s: %s", record.topic, record.partition, record.offset, reason, error
        )

    # -- status ----------------------------------------------------------------------------

    def prompt_names(self) -> list[str]:
        """The managed prompts with a window on this worker's partitions, sorted."""
        return sorted(p for p in self.ingest.windows if p in self.ingest.policies)

    def status(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """`/status` of this worker's partitions: an entry per prompt (`names`, else all of
        `prompt_names`; `handlers.ingest_status`), readiness and what recovery restored."""
        now = time.time()
        prompts = {}
        for prompt in self.prompt_names() if names is None else names:
            entry = prompt_status(self.ingest, prompt, now)
            if entry is not None:
                prompts[prompt] = entry
        return {"ready": self.ready, "prompts": prompts, "recovered": self.recovered}
