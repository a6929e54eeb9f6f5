"""Each trigger rule, in isolation and through `Ingest`."""

from __future__ import annotations

from datetime import timedelta

import pytest

from handlers.ingest import Ingest, UnknownPrompt
from handlers.trigger import Fire, Skip, TriggerState, evaluate
from handlers.window import WindowFigures
from schemas import OptimizationData, OptimizationEvent, PromotionData, PromotionEvent
from schemas.config import TriggerPolicy
from tests.unit.handlers.helpers import NOW, command, policies, rating, trace


def figures(n: int, new: int | None = None, score: float | None = None) -> WindowFigures:
    return WindowFigures(n_examples=n, n_new=n if new is None else new, rolling_score=score)


POLICY = TriggerPolicy(min_examples=10, min_new_examples=5, cooldown=timedelta(minutes=10))


def test_nothing_below_min_examples() -> None:
    assert evaluate(POLICY, TriggerState(), figures(9), NOW) is None


def test_first_optimization_at_min_examples() -> None:
    decision = evaluate(POLICY, TriggerState(), figures(10), NOW)
    assert decision == Fire("min_examples", {"n_examples": 10, "min_examples": 10})


def test_at_most_one_in_flight() -> None:
    assert evaluate(POLICY, TriggerState(generation=1, in_flight="r1"), figures(100), NOW) is None
    assert isinstance(
        evaluate(POLICY, TriggerState(generation=1, in_flight="r1"), figures(100), NOW, manual=True), Skip
    )


def test_cooldown_counts_from_the_last_fire_or_finish() -> None:
    state = TriggerState(generation=1, last_fired_at=NOW - 3600, last_finished_at=NOW - 60)
    assert evaluate(POLICY, state, figures(50, new=20), NOW) is None
    assert evaluate(POLICY, state, figures(50, new=20), NOW + 600)


def test_min_new_examples() -> None:
    state = TriggerState(generation=1, last_finished_at=NOW - 3600)
    assert evaluate(POLICY, state, figures(50, new=4), NOW) is None
    assert evaluate(POLICY, state, figures(50, new=5), NOW) == Fire(
        "min_new_examples", {"n_new": 5, "min_new_examples": 5}
    )


def test_score_drop_fires_before_enough_new_examples() -> None:
    policy = POLICY.model_copy(update={"score_drop": 0.1})
    state = TriggerState(generation=1, last_finished_at=NOW - 3600, baseline_score=0.8)
    assert evaluate(policy, state, figures(50, new=1, score=0.73), NOW) is None  # above 0.72
    decision = evaluate(policy, state, figures(50, new=1, score=0.71), NOW)
    assert isinstance(decision, Fire) and decision.rule == "score_drop"
    assert decision.values["threshold"] == pytest.approx(0.72)


def test_max_interval_fires_with_any_new_data() -> None:
    policy = POLICY.model_copy(update={"max_interval": timedelta(hours=1)})
    state = TriggerState(generation=1, last_finished_at=NOW - 3599)
    assert evaluate(policy, state, figures(50, new=1), NOW) is None
    decision = evaluate(policy, state, figures(50, new=1), NOW + 1)
    assert isinstance(decision, Fire) and decision.rule == "max_interval"
    assert evaluate(policy, state, figures(50, new=0), NOW + 1) is None


def test_manual_fires_regardless_of_thresholds_but_not_on_an_empty_window() -> None:
    assert evaluate(POLICY, TriggerState(), figures(1), NOW, manual=True) == Fire(
        "manual", {"n_examples": 1, "n_new": 1}
    )
    assert isinstance(evaluate(POLICY, TriggerState(), figures(0), NOW, manual=True), Skip)


def test_ingest_fires_once_then_waits_for_the_job() -> None:
    ingest = Ingest(policies(), "app")
    fired = []
    for i in range(6):
        step = ingest.handle(trace(f"t{i}", t=i, scores={"s": 0.5}), NOW + i)
        assert step.puts, "a new fact is stored"
        if step.request:
            fired.append((i, step.request))
    [(at_event, request)] = fired
    assert at_event == 2  # min_examples = 3
    assert [e.trace_id for e in request.examples] == ["t0", "t1", "t2"]
    assert request.fire.rule == "min_examples"
    assert step.trigger_state is None
    done = OptimizationEvent.build(
        OptimizationData(request_id=request.request_id, prompt="p", status="completed", baseline_score=0.5)
    )
    assert ingest.handle(done, NOW + 10).trigger_state.in_flight is None
    # t3..t5 are new since the snapshot: min_new_examples = 2 fires on the next event
    step = ingest.handle(trace("t6", t=6, scores={"s": 0.5}), NOW + 11)
    assert step.request and step.request.fire.rule == "min_new_examples"
    assert step.request.request_id != request.request_id


def test_ingest_ignores_status_of_other_requests_and_promotions_set_the_baseline() -> None:
    ingest = Ingest(policies(), "app")
    other = OptimizationEvent.build(OptimizationData(request_id="nope", prompt="p", status="completed"))
    assert ingest.handle(other, NOW).trigger_state is None
    promoted = PromotionEvent.build(
        PromotionData(prompt="p", decision="promoted", candidate_score=0.9, reason="x")
    )
    assert ingest.handle(promoted, NOW).trigger_state.baseline_score == 0.9


def test_manual_optimize_command() -> None:
    ingest = Ingest(policies(), "app")
    assert ingest.handle(command("optimize"), NOW).skipped == ("p", "the window holds no labeled examples")
    ingest.handle(trace("t1", expectations={"expected_response": "x"}), NOW)
    step = ingest.handle(command("optimize"), NOW)
    assert step.request and step.request.fire.rule == "manual"


def test_unknown_prompts_are_refused() -> None:
    ingest = Ingest(policies(), "app")
    with pytest.raises(UnknownPrompt, match="'q' is not in the policy file"):
        ingest.handle(trace("t1", prompt="q"), NOW)
    with pytest.raises(UnknownPrompt):
        ingest.handle(rating("t1", prompt="q"), NOW)
    with pytest.raises(UnknownPrompt):
        ingest.handle(command("optimize", prompt="q"), NOW)


def test_evictions_become_deletes() -> None:
    ingest = Ingest(policies(window={"max_examples": 3}), "app")
    deletes = []
    for i in range(5):
        deletes += ingest.handle(trace(f"t{i}", t=i, scores={"s": 1.0}), NOW).deletes
    assert len(deletes) == 2


def test_outlook_says_what_fires_next() -> None:
    from handlers.trigger import outlook

    first = outlook(POLICY, TriggerState(), figures(4), NOW)
    assert (first.status, [r.rule for r in first.rules], first.rules[0].fraction) == (
        "waiting",
        ["min_examples"],
        0.4,
    )
    assert "4 of 10 examples" in first.text
    assert outlook(POLICY, TriggerState(), figures(10), NOW).status == "ready"
    assert outlook(POLICY, TriggerState(generation=1, in_flight="r1"), figures(50), NOW).status == "in_flight"
    cooling = outlook(POLICY, TriggerState(generation=1, last_finished_at=NOW - 60), figures(50, new=20), NOW)
    assert (cooling.status, cooling.text) == ("cooldown", "cooldown: 9m left")
    drop = TriggerPolicy(
        min_examples=10,
        min_new_examples=5,
        cooldown=timedelta(0),
        score_drop=0.1,
        max_interval=timedelta(hours=2),
    )
    later = outlook(
        drop,
        TriggerState(generation=1, last_finished_at=NOW - 3600, baseline_score=0.8),
        figures(50, new=2, score=0.76),
        NOW,
    )
    assert later.status == "waiting"
    assert [r.rule for r in later.rules] == ["min_new_examples", "score_drop", "max_interval"]
    assert [round(r.fraction, 2) for r in later.rules] == [0.4, 0.5, 0.5]
    assert later.rules[1].text == "rolling 0.76; fires below 0.72"


def test_a_job_decision_with_costs_is_remembered_for_status() -> None:
    from schemas.events import VersionCost

    ingest = Ingest(policies(), "test")
    baseline = VersionCost(template_tokens=42, calls=17, tokens_per_call=51.2)
    candidate = VersionCost(template_tokens=434, calls=17, tokens_per_call=443.2)
    plain = PromotionEvent.build(PromotionData(prompt="p", decision="rejected", to_version=2, reason="r"))
    assert ingest.handle(plain, NOW).trigger_state is None and ingest.trigger_state("p").last_gate is None
    event = PromotionEvent.build(
        PromotionData(
            prompt="p",
            decision="rejected",
            from_version=1,
            to_version=2,
            baseline_cost=baseline,
            candidate_cost=candidate,
            reason="beyond the limit(s)",
        )
    )
    step = ingest.handle(event, NOW)
    assert step.trigger_state is not None
    assert step.trigger_state.last_gate == {
        "decision": "rejected",
        "to_version": 2,
        "baseline": baseline.model_dump(),
        "candidate": candidate.model_dump(),
    }
    assert TriggerState.decode(step.trigger_state.encode()) == step.trigger_state
