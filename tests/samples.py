"""One fully populated event of every type, for round-trip and schema tests."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas import (
    Budget,
    CloudEvent,
    CommandData,
    CommandEvent,
    DeadLetterData,
    DeadLetterEvent,
    Example,
    OptimizationData,
    OptimizationEvent,
    PromotionData,
    PromotionEvent,
    PromptRegisteredData,
    PromptRegisteredEvent,
    RatingData,
    RatingEvent,
    SnapshotChunkData,
    SnapshotChunkEvent,
    SnapshotRef,
    TraceData,
    TraceEvent,
    TriggerInfo,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def sample_events() -> list[CloudEvent]:
    return [
        TraceEvent.build(
            TraceData(
                prompt="support_router",
                prompt_version=3,
                trace_id="tr-1",
                inputs={"ticket": "I was charged twice"},
                outputs="billing",
                expectations={"expected_response": "billing"},
                scores={"exact_match": 1.0},
                feedback="right team",
                model="openai/gpt-4.1-mini",
                latency_ms=812.5,
            )
        ),
        TraceEvent.build(
            TraceData(
                prompt="agent.v2", trace_id="tr-2", inputs={"q": "hi"}, outputs={"answer": "hello", "n": 1}
            )
        ),
        RatingEvent.build(
            RatingData(
                prompt="support_router", trace_id="tr-1", rating="excellent", comment="spot on", rater="ana"
            )
        ),
        RatingEvent.build(RatingData(prompt="support_router", trace_id="tr-1", rating=4, rater="bo")),
        RatingEvent.build(
            RatingData(
                prompt="support_router", trace_id="tr-1", rating=0.25, scale="unit", correction="billing"
            )
        ),
        CommandEvent.build(
            CommandData(prompt="support_router", action="rollback", version=2, requested_by="ops")
        ),
        OptimizationEvent.build(
            OptimizationData(
                request_id="req-1",
                prompt="support_router",
                status="requested",
                trigger=TriggerInfo(rule="min_new_examples", values={"new_examples": 20, "threshold": 20}),
                snapshot=SnapshotRef(
                    topic="gepa.snapshots", partition=1, offsets=[10, 11], n_examples=60, sha256="0" * 64
                ),
                n_train=42,
                n_val=18,
                budget=Budget(max_metric_calls=150, max_wall_time_s=1800),
            )
        ),
        OptimizationEvent.build(
            OptimizationData(
                request_id="req-1",
                prompt="support_router",
                status="completed",
                metric_calls=151,
                baseline_score=0.4,
                candidate_score=0.9,
                version=4,
            )
        ),
        SnapshotChunkEvent.build(
            SnapshotChunkData(
                request_id="req-1",
                prompt="support_router",
                chunk=0,
                n_chunks=2,
                examples=[
                    Example(
                        trace_id="tr-1",
                        inputs={"ticket": "I was charged twice"},
                        outputs="billing",
                        rating=1.0,
                        comments=["spot on"],
                        time=T0,
                    )
                ],
            )
        ),
        PromptRegisteredEvent.build(
            PromptRegisteredData(
                prompt="support_router",
                version=4,
                uri="prompts:/support_router/4",
                parent_version=3,
                request_id="req-1",
                optimizer="mlflow_gepa",
                baseline_score=0.4,
                candidate_score=0.9,
                n_train=42,
                n_val=18,
            )
        ),
        PromotionEvent.build(
            PromotionData(
                prompt="support_router",
                decision="promoted",
                from_version=3,
                to_version=4,
                baseline_score=0.4,
                candidate_score=0.9,
                improvement=1.25,
                ci_low=0.3,
                ci_high=0.7,
                n_eval=18,
                request_id="req-1",
                reason="mean +0.50 (125%), 95% CI [0.30, 0.70] excludes 0",
            )
        ),
        DeadLetterEvent.build(
            DeadLetterData(
                source_topic="gepa.traces",
                partition=0,
                offset=17,
                key="support_router",
                payload="{not json",
                reason="not_json",
                error="not valid JSON",
                stage="parse",
            ),
            subject="gepa.traces",
        ),
    ]
