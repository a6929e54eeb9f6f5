"""The Faust application: topics, tables, the ingest agent and the web views.

Wiring only: every decision is made in `handlers/`; this module moves bytes
between Kafka and `handlers.ingest.Ingest` and applies the returned `Step`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

import faust

from daemon import prometheus_metrics
from daemon.settings import Settings
from handlers.deadletter import dead_letter
from handlers.guard import GuardSpec
from handlers.ingest import GuardStep, Ingest, Request, Step, UnknownPrompt
from handlers.snapshot import snapshot_chunks
from handlers.trigger import TriggerState, outlook
from schemas.config import PolicyFile
from schemas.events import (
    CloudEvent,
    CommandEvent,
    DeadLetterReason,
    OptimizationData,
    OptimizationEvent,
    PromotionEvent,
    RatingEvent,
    SnapshotRef,
    TraceEvent,
    TriggerInfo,
)
from schemas.parse import InvalidEvent, parse_event

log = logging.getLogger("gepa_stream.ingest")

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


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
        self._expected_type = {
            self.topics.traces: TraceEvent,
            self.topics.ratings: RatingEvent,
            self.topics.commands: CommandEvent,
            self.topics.optimizations: OptimizationEvent,
            self.topics.promotions: PromotionEvent,
        }
        options = {**RAW, "partitions": settings.partitions}
        self.source = faust_app.topic(*self._expected_type, **options)
        self.snapshots = faust_app.topic(self.topics.snapshots, **options)
        self.optimizations = faust_app.topic(self.topics.optimizations, **options)
        self.dlq = faust_app.topic(self.topics.dlq, **options)
        self.outputs = {
            PromotionEvent: faust_app.topic(self.topics.promotions, **options),
            CommandEvent: faust_app.topic(self.topics.commands, **options),
        }
        table_options = {
            "partitions": settings.partitions,
            "key_type": bytes,
            "value_type": bytes,
        }  # raw codec
        self.facts = faust_app.Table("facts", **table_options)
        self.triggers = faust_app.Table("triggers", **table_options)
        self.guards = faust_app.Table("guards", **table_options)  # prompt -> GuardSpec
        self.guard_votes = faust_app.Table("guard_votes", **table_options)  # (prompt, trace, rater) -> Vote
        self.facts.on_recover(self._rebuild)
        faust_app.agent(self.source, name="ingest")(self._consume)

    # -- recovery ------------------------------------------------------------------------

    async def _rebuild(self) -> None:
        """After (re)assignment: rebuild the in-memory windows from the recovered tables."""
        now = time.time()
        self.ingest.reset()
        for prompt, raw in self.triggers.items():
            self.ingest.restore_trigger(prompt.decode(), TriggerState.decode(raw))
        for raw in self.facts.values():
            self.ingest.restore_record(raw, now)
        for prompt, raw in self.guards.items():
            self.ingest.restore_guard(prompt.decode(), GuardSpec.decode(raw))
        for key, raw in self.guard_votes.items():
            self.ingest.restore_vote(key, raw)
        self.ready = True
        if not self.recovered["rebuilds"]:
            self.recovered.update(facts=len(self.facts), triggers=len(self.triggers))
        self.recovered["rebuilds"] += 1
        self._refresh_gauges()
        log.info("recovered %d trace records for %d prompts", len(self.facts), len(self.ingest.windows))

    # -- the agent -----------------------------------------------------------------------

    async def _consume(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            started = time.perf_counter()
            await self.process(message.topic, message.partition, message.offset, message.key, message.value)
            prometheus_metrics.PROCESSING_SECONDS.labels(message.topic).observe(time.perf_counter() - started)

    async def process(
        self, topic: str, partition: int, offset: int, key: bytes | None, raw: bytes | None
    ) -> None:
        """1. parse, 2. check topic and prompt, 3. handle, 4. apply the step; failures -> DLQ.

        This agent dead-letters every bad record of the topics it reads, `gepa.optimizations`
        and `gepa.commands` included (the job runner reads those too, and only skips them), so
        one bad record is one dead letter whatever the roles. Nothing is touched before 3, and
        a failing 3 leaves the windows as the tables hold them (`Ingest.handle`)."""
        try:
            event = parse_event(raw, max_bytes=self.settings.max_event_bytes)
        except InvalidEvent as exc:
            await self._dead_letter(raw, topic, partition, offset, key, exc.reason, str(exc))
            return
        expected = self._expected_type.get(topic)
        if expected is not None and not isinstance(event, expected):
            await self._dead_letter(
                raw,
                topic,
                partition,
                offset,
                key,
                "wrong_topic",
                f"a {event.type} event does not belong on {topic}",
            )
            return
        try:
            step = self.ingest.handle(event, time.time())
        except UnknownPrompt as exc:
            await self._dead_letter(raw, topic, partition, offset, key, "unknown_prompt", str(exc))
            return
        except Exception as exc:  # a bug must not stop the stream; the record is kept in the DLQ
            log.exception("handler failed on %s/%d@%d", topic, partition, offset)
            await self._dead_letter(
                raw, topic, partition, offset, key, "handler_error", f"{type(exc).__name__}: {exc}"
            )
            return
        prometheus_metrics.EVENTS.labels(event.type, topic).inc()
        await self._apply(event, step)

    async def _apply(self, event: CloudEvent, step: Step) -> None:
        """Events first (awaiting acks), then table writes (see handlers.ingest)."""
        if step.request is not None:
            await self._announce(step.request)
        if step.skipped is not None:
            prompt, reason = step.skipped
            await self._emit_status(prompt, f"skipped:{event.id}", "skipped", error=reason)
        if step.guard is not None:
            for decision in step.guard.events:
                sent = await self.outputs[type(decision)].send(key=decision.key, value=decision.to_json())
                await sent
        if not step.puts and isinstance(event, (TraceEvent, RatingEvent)):
            prometheus_metrics.DUPLICATES.labels(event.type).inc()
        for key, value in step.puts:
            self.facts[key] = value
        for key in step.deletes:
            if key in self.facts:
                del self.facts[key]
        if step.trigger_state is not None:
            self.triggers[(step.prompt or event.subject).encode()] = step.trigger_state.encode()
        if step.guard is not None:
            self._store_guard(step.guard)
        if event.subject in self.ingest.windows:
            self._refresh_gauge(event.subject)

    def _store_guard(self, change: GuardStep) -> None:
        """The guard's votes and spec (after its events were acknowledged), then its gauges."""
        for key in change.deletes:
            if key in self.guard_votes:
                del self.guard_votes[key]
        for key, value in change.puts:
            self.guard_votes[key] = value
        self.guards[change.prompt.encode()] = change.spec.encode()
        self._refresh_guard_gauges(change.prompt)
        if change.spec.decision is not None:
            log.info("%s", change.spec.reason)

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
        await self._emit_status(
            request.prompt,
            f"{request.request_id}:requested",
            "requested",
            request_id=request.request_id,
            trigger=TriggerInfo(rule=request.fire.rule, values=request.fire.values),
            snapshot=snapshot,
            budget=request.budget,
        )
        prometheus_metrics.TRIGGERS.labels(request.prompt, request.fire.rule).inc()
        log.info(
            "fired %s for %s (%s): %d examples",
            request.request_id,
            request.prompt,
            request.fire.rule,
            len(request.examples),
        )

    async def _emit_status(
        self, prompt: str, event_id: str, status: str, request_id: str | None = None, **fields: Any
    ) -> None:
        event = OptimizationEvent.build(
            OptimizationData(request_id=request_id or event_id, prompt=prompt, status=status, **fields),
            id=event_id,
            source=self._source,
        )
        sent = await self.optimizations.send(key=event.key, value=event.to_json())
        await sent

    async def _dead_letter(
        self,
        raw: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        reason: DeadLetterReason,
        error: str,
    ) -> None:
        record = dead_letter(
            raw,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            reason=reason,
            error=error,
            source=self._source,
        )
        await self.dlq.send(key=key, value=record.to_json())
        prometheus_metrics.DEAD_LETTERS.labels(reason).inc()
        log.warning("dead letter %s/%d@%d: %s: %s", topic, partition, offset, reason, error)

    # -- status ----------------------------------------------------------------------------

    def _refresh_gauge(self, prompt: str) -> None:
        figures = self.ingest.figures(prompt)
        prometheus_metrics.WINDOW_EXAMPLES.labels(prompt).set(figures.n_examples)
        prometheus_metrics.WINDOW_NEW_EXAMPLES.labels(prompt).set(figures.n_new)
        if figures.rolling_score is not None:
            prometheus_metrics.ROLLING_SCORE.labels(prompt).set(figures.rolling_score)

    def _refresh_guard_gauges(self, prompt: str) -> None:
        status = self.ingest.guard_status(prompt)
        for gauge in prometheus_metrics.GUARD_GAUGES:
            for labels in [
                s.labels for m in gauge.collect() for s in m.samples if s.labels.get("prompt") == prompt
            ]:
                gauge.remove(*labels.values())
        if status is None:
            return
        prometheus_metrics.GUARD_RATINGS.labels(prompt, "new").set(status["n_new"])
        prometheus_metrics.GUARD_RATINGS.labels(prompt, "old").set(status["n_old"])
        if status["difference"] is not None:
            prometheus_metrics.GUARD_DIFFERENCE.labels(prompt).set(status["difference"])
        prometheus_metrics.GUARD_BOUND.labels(prompt, "lower").set(status["lower"])
        prometheus_metrics.GUARD_BOUND.labels(prompt, "upper").set(status["upper"])
        prometheus_metrics.GUARD_STATE.labels(prompt, status["state"]).set(1)

    def _refresh_gauges(self) -> None:
        """After (re)assignment: the gauges of this worker's prompts only; a prompt whose partition
        moved to another worker must not keep reporting its last figures from here."""
        for gauge in (
            prometheus_metrics.WINDOW_EXAMPLES,
            prometheus_metrics.WINDOW_NEW_EXAMPLES,
            prometheus_metrics.ROLLING_SCORE,
            *prometheus_metrics.GUARD_GAUGES,
        ):
            gauge.clear()
        for prompt in self.ingest.windows:
            self._refresh_gauge(prompt)
        for prompt in self.ingest.guards:
            self._refresh_guard_gauges(prompt)

    def status(self) -> dict[str, Any]:
        """Per prompt: window figures and age, join buffers, trigger state and what fires next
        (this worker's partitions)."""
        prompts = {}
        now = time.time()
        for prompt, window in sorted(self.ingest.windows.items()):
            window.expire(now)
            figures = window.figures()
            waiting_traces, waiting_ratings = window.buffer_sizes()
            oldest, newest = window.oldest_labeled_at(), window.newest_labeled_at()
            state = self.ingest.trigger_state(prompt)
            prompts[prompt] = {
                **asdict(figures),
                "max_examples": window.policy.max_examples,
                "oldest_example_age_s": None if oldest is None else now - oldest,
                "newest_example_age_s": None if newest is None else now - newest,
                "waiting_traces": waiting_traces,
                "waiting_ratings": waiting_ratings,
                "trigger": asdict(state),
                "next_trigger": asdict(outlook(self.ingest.policy(prompt).triggers, state, figures, now)),
                "guard": self.ingest.guard_status(prompt),
            }
        return {"ready": self.ready, "prompts": prompts, "recovered": self.recovered}
