"""The ops page's memory of the output topics: bounded, deduplicated, newest first."""

from __future__ import annotations

from handlers.ops_history import OpsHistory
from schemas.events import (
    Budget,
    DeadLetterData,
    DeadLetterEvent,
    OptimizationData,
    OptimizationEvent,
    PromotionData,
    PromotionEvent,
    SegmentScore,
    TriggerInfo,
)


def _decision(i: int, prompt: str = "p", decision: str = "promoted") -> PromotionEvent:
    return PromotionEvent.build(
        PromotionData(
            prompt=prompt,
            decision=decision,
            from_version=i + 1,
            to_version=i + 2,
            baseline_score=0.4,
            candidate_score=0.6,
            reason=f"d{i}",
        ),
        id=f"id-{prompt}-{i}",
    )


def test_decisions_are_bounded_deduplicated_and_newest_first() -> None:
    history = OpsHistory(decisions_per_prompt=100)
    for i in range(1000):
        assert history.add(_decision(i)) == "p"
    assert history.add(_decision(999)) is None  # redelivered: same id, nothing changes
    page, total = history.decisions("p", limit=10)
    assert total == 100
    assert [d.reason for d in page] == [f"d{i}" for i in range(999, 989, -1)]
    older, _ = history.decisions("p", limit=10, offset=95)
    assert [d.reason for d in older] == [f"d{i}" for i in range(904, 899, -1)]
    assert history.add(_decision(5)) == "p"  # evicted long ago: it counts again, the cap still holds
    assert history.decisions("p", limit=0)[1] == 100


def test_score_of_a_version_comes_from_the_newest_decision_naming_it() -> None:
    history = OpsHistory()
    history.add(_decision(1))
    assert history.score_of("p", 3) == 0.6
    assert history.score_of("p", 2) == 0.4
    assert history.score_of("p", 7) is None


def test_a_request_merges_its_lifecycle_and_never_moves_back() -> None:
    history = OpsHistory(requests_per_prompt=2)

    def event(request: str, status: str, **fields: object) -> OptimizationEvent:
        return OptimizationEvent.build(
            OptimizationData(request_id=request, prompt="p", status=status, **fields),
            id=f"{request}:{status}",
        )

    history.add(
        event(
            "r1",
            "requested",
            trigger=TriggerInfo(rule="min_examples"),
            budget=Budget(max_metric_calls=80, max_wall_time_s=300),
        )
    )
    history.add(event("r1", "started"))
    history.add(
        OptimizationEvent.build(
            OptimizationData(request_id="r1", prompt="p", status="retrying", attempt=1, max_attempts=3),
            id="r1:retrying:1",
        )
    )
    record = history.latest_request("p")
    assert record is not None and (record.status, record.finished_at) == ("retrying", None), (
        "a retrying job has not finished"
    )
    history.add(event("r1", "completed", metric_calls=77, baseline_score=0.4, candidate_score=0.9, version=2))
    history.add(event("r1", "started"))  # a late duplicate
    record = history.latest_request("p")
    assert record is not None
    assert (record.status, record.trigger, record.budget, record.metric_calls, record.version) == (
        "completed",
        "min_examples",
        {"max_metric_calls": 80, "max_wall_time_s": 300.0},
        77,
        2,
    )
    history.add(event("r2", "requested"))
    history.add(event("r3", "requested"))
    assert history.latest_request("p").request_id == "r3"
    assert len(history._requests["p"]) == 2


def test_dead_letters_count_by_reason_once_per_record() -> None:
    history = OpsHistory(recent_dead_letters=3)
    for offset in range(5):
        for _ in range(2):  # a redelivered bad record has the same dead-letter id
            history.add(
                DeadLetterEvent.build(
                    DeadLetterData(
                        source_topic="gepa.traces",
                        partition=0,
                        offset=offset,
                        payload="x",
                        reason="not_json" if offset % 2 else "invalid_data",
                        error="bad",
                        stage="parse",
                    ),
                    id=f"dlq:gepa.traces:0:{offset}",
                )
            )
    summary = history.dead_letters()
    assert summary["by_reason"] == {"invalid_data": 3, "not_json": 2}
    assert summary["total"] == 5
    assert [r["offset"] for r in summary["recent"]] == [4, 3, 2]


def test_every_optimization_status_has_a_rank() -> None:
    from typing import get_args

    from handlers.ops_history import _STATUS_RANK
    from schemas.events import OptimizationStatus

    assert set(_STATUS_RANK) == set(get_args(OptimizationStatus))


def test_a_rollout_decision_keeps_the_canarys_share() -> None:
    history = OpsHistory()
    started = PromotionData(
        prompt="p", decision="canary_started", from_version=1, to_version=2, traffic_share=0.05, reason="r"
    )
    history.add(PromotionEvent.build(started, id="c1"))
    assert history.add(_decision(0)) == "p"
    records, _ = history.decisions("p")
    assert [(d.decision, d.traffic_share) for d in records] == [("promoted", None), ("canary_started", 0.05)]


def test_a_gate_decision_keeps_its_segments() -> None:
    history = OpsHistory()
    harmed = SegmentScore(
        segment="de",
        n=100,
        baseline_score=0.7,
        candidate_score=0.45,
        difference=-0.25,
        upper=-0.16,
        harmed=True,
    )
    data = PromotionData(
        prompt="p", decision="rejected", from_version=1, to_version=2, segments=[harmed], reason="r"
    )
    history.add(PromotionEvent.build(data, id="g1"))
    [record], _ = history.decisions("p")
    assert record.segments == (harmed.model_dump(),)


def test_a_gate_decision_keeps_both_versions_costs() -> None:
    from schemas.events import VersionCost

    history = OpsHistory()
    baseline = VersionCost(
        template_tokens=42, calls=25, tokens_per_call=51.3, cost_per_call_usd=0.0, cost_unknown=True
    )
    candidate = VersionCost(
        template_tokens=336, calls=25, tokens_per_call=345.3, cost_per_call_usd=0.0, cost_unknown=True
    )
    data = PromotionData(
        prompt="p",
        decision="promoted",
        from_version=1,
        to_version=2,
        baseline_cost=baseline,
        candidate_cost=candidate,
        reason="r",
    )
    history.add(PromotionEvent.build(data, id="c1"))
    history.add(_decision(5))  # a decision without costs
    records, _ = history.decisions("p")
    by_id = {r.id: r for r in records}
    assert by_id["c1"].baseline_cost == baseline.model_dump()
    assert by_id["c1"].candidate_cost == candidate.model_dump()
    assert by_id["id-p-5"].candidate_cost is None
