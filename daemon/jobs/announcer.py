"""What the optimizer role emits: job status, registered versions and promotion decisions.

Every event id is deterministic (request id, status, prompt name), so a job resumed or
redelivered after a crash re-announces what it did rather than adding to it.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaProducer

from daemon import prometheus_metrics
from daemon.jobs.spec import JobResult
from handlers.job_status import status_event
from handlers.promotion import promotion_event
from schemas import event_ids
from schemas.events import (
    CloudEvent,
    OptimizationEvent,
    OptimizationStatus,
    PromotionEvent,
    PromptRegisteredData,
    PromptRegisteredEvent,
)
from schemas.topics import Topics

log = logging.getLogger("gepa_stream.jobs")


class Announcer:
    """Sends the optimizer role's events, each acknowledged by the broker before the call returns."""

    def __init__(self, producer: AIOKafkaProducer, topics: Topics, source: str) -> None:
        self.producer = producer
        self.topics = topics
        self.source = source

    async def result(self, request: OptimizationEvent, result: JobResult) -> None:
        """A job's final result, in this order: registered -> promotion -> completed | failed."""
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
                    id=event_ids.registered(data.request_id, version.name),
                    source=self.source,
                ),
            )
        for decision in result.decisions:
            await self.promotion(
                promotion_event(
                    decision.name,
                    decision.decision,
                    decision.reason,
                    source=self.source,
                    event_id=event_ids.job_promotion(data.request_id, decision.name),
                    from_version=decision.from_version,
                    to_version=decision.to_version,
                    baseline_score=result.baseline_score,
                    candidate_score=result.candidate_score,
                    improvement=decision.improvement,
                    ci_low=decision.ci_low,
                    ci_high=decision.ci_high,
                    n_eval=result.n_val,
                    request_id=data.request_id,
                    traffic_share=decision.traffic_share,
                    segments=decision.segments,
                    baseline_cost=decision.baseline_cost,
                    candidate_cost=decision.candidate_cost,
                ),
                program=data.prompt,
            )
        await self.status(
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

    async def promotion(self, event: PromotionEvent, *, program: str) -> None:
        """Keyed by the policy prompt (`program`): a dspy predictor prompt's promotion lands on its
        program's partition, where the ingest role keeps the program's live guard."""
        await self._send(self.topics.promotions, event, key=program.encode())
        prometheus_metrics.PROMOTIONS.labels(event.data.prompt, event.data.decision).inc()

    async def status(
        self,
        prompt: str,
        request_id: str,
        status: OptimizationStatus,
        event_id: str | None = None,
        **fields: Any,
    ) -> None:
        """A job's status event (`started`, `retrying`, ...); its id is `<request id>:<status>` by default."""
        event = status_event(prompt, request_id, status, source=self.source, event_id=event_id, **fields)
        await self._send(self.topics.optimizations, event)

    async def _send(self, topic: str, event: CloudEvent, key: bytes | None = None) -> None:
        await self.producer.send_and_wait(topic, event.to_json(), key=key or event.key)


def _count_usage(prompt: str, result: JobResult) -> None:
    """Add a finished job's model calls, tokens and estimated USD to the per-prompt, per-role counters."""
    for role, usage in (result.usage.roles if result.usage else {}).items():
        prometheus_metrics.MODEL_CALLS.labels(prompt, role).inc(usage.calls)
        prometheus_metrics.MODEL_TOKENS.labels(prompt, role, "prompt").inc(usage.prompt_tokens)
        prometheus_metrics.MODEL_TOKENS.labels(prompt, role, "completion").inc(usage.completion_tokens)
        prometheus_metrics.MODEL_COST.labels(prompt, role).inc(usage.cost_usd)
