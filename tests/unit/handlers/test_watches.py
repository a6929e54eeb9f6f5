"""The staged rollout in the ingest handler (handlers/watches.py): `canary_started` starts it on
the traces of both arms since the canary's start, the rule's verdict goes out once as a canary
command, the announced outcome moves or ends it, a full rollout starts no guard, an abort
re-arms the trigger, and its state restores from the stored facts."""

from __future__ import annotations

import pytest

from handlers.ingest import Ingest, Step
from schemas import CommandEvent, PromotionData, PromotionEvent
from tests.unit.handlers.helpers import NOW, at, policies, rating, trace

CANARY, PRODUCTION = 2, 1
ROLLOUT = {"enabled": True, "stages": [0.1, 0.5], "min_live_examples": 20}


def _ingest(**rollout: object) -> Ingest:
    return Ingest(
        policies(
            window={"max_examples": 2000},
            triggers={"min_examples": 1500},
            promotion={"rollout": {**ROLLOUT, **rollout}},
        ),
        "app",
    )


def _event(decision: str, t: float, share: float | None = None, **versions: int) -> PromotionEvent:
    data = PromotionData(
        prompt="p",
        decision=decision,  # type: ignore[arg-type]
        from_version=versions.get("from_version", PRODUCTION),
        to_version=versions.get("to_version", CANARY),
        traffic_share=share,
        reason=decision,
    )
    return PromotionEvent.build(data).model_copy(update={"time": at(t)})


def _feed(ingest: Ingest, version: int, ratings: list[str], start: int, t: float) -> list[Step]:
    steps = []
    for i, value in enumerate(ratings, start):
        steps.append(ingest.handle(trace(f"t{i}", t, prompt_version=version), NOW + t))
        steps.append(ingest.handle(rating(f"t{i}", value, t), NOW + t))
    return steps


def _commands(steps: list[Step]) -> list[CommandEvent]:
    return [
        e for s in steps if s.rollout is not None for e in s.rollout.events if isinstance(e, CommandEvent)
    ]


def test_a_canary_compares_only_traces_of_either_arm_since_its_start() -> None:
    ingest = _ingest()
    _feed(ingest, PRODUCTION, ["good"] * 10, 0, 10)  # before the canary: not compared
    _feed(ingest, PRODUCTION, ["good"] * 4, 100, 200)
    _feed(ingest, 3, ["poor"] * 4, 200, 200)  # another version
    step = ingest.handle(_event("canary_started", 150, 0.1), NOW + 300)
    assert step.rollout is not None and len(step.rollout.puts) == 4 and not step.rollout.events
    status = ingest.rollout_status("p", NOW + 300)
    assert status is not None and status["state"] == "canary" and status["traffic_share"] == 0.1
    assert (status["canary"]["n"], status["production"]["n"]) == (0, 4)
    assert ingest.guard_status("p") is None  # a canary moves no production: no guard


def test_a_worse_canary_is_aborted_by_one_command_at_its_share() -> None:
    ingest = _ingest()
    ingest.handle(_event("canary_started", 100, 0.1), NOW + 100)
    steps = _feed(ingest, PRODUCTION, ["excellent"] * 40, 0, 200) + _feed(
        ingest, CANARY, ["poor"] * 30, 100, 200
    )
    [command] = _commands(steps)
    data = command.data
    assert (data.action, data.version, data.traffic_share, data.requested_by) == (
        "canary_abort",
        CANARY,
        0.1,
        "rollout",
    )
    assert "worse beyond doubt" in (data.reason or "")
    assert command.id.endswith(":rollout:0:abort")
    assert _commands(_feed(ingest, CANARY, ["poor"] * 10, 200, 300)) == []  # sent once (pending)
    state = ingest.trigger_state("p")
    step = ingest.handle(
        _event("canary_aborted", 400, 0.1, from_version=CANARY, to_version=PRODUCTION), NOW + 400
    )
    assert step.rollout is not None and step.rollout.spec.decision == "canary_aborted"
    assert step.trigger_state is state and state.baseline_score == pytest.approx(
        1.0
    )  # production's live mean
    assert ingest.rollout_status("p", NOW + 400)["state"] == "canary_aborted"  # type: ignore[index]


def test_an_equal_canary_advances_on_the_announced_share_then_takes_production_without_a_guard() -> None:
    ingest = _ingest()
    ingest.handle(_event("canary_started", 100, 0.1), NOW + 100)
    steps = _feed(ingest, PRODUCTION, ["good"] * 300, 0, 200) + _feed(
        ingest, CANARY, ["good"] * 300, 1000, 200
    )
    [advance] = _commands(steps)
    assert (advance.data.action, advance.data.traffic_share) == ("canary_advance", 0.1)
    ingest.handle(_event("canary_advanced", 300, 0.5), NOW + 300)
    status = ingest.rollout_status("p", NOW + 300)
    assert status is not None and (status["stage"], status["traffic_share"], status["needed_canary"]) == (
        1,
        0.5,
        20,
    )
    assert ingest.handle(_event("canary_advanced", 301, 0.5), NOW + 301).rollout is None  # redelivered
    steps = _feed(ingest, PRODUCTION, ["good"] * 30, 2000, 400) + _feed(
        ingest, CANARY, ["good"] * 30, 3000, 400
    )
    [promote] = _commands(steps)
    assert (promote.data.action, promote.data.traffic_share) == ("canary_advance", 0.5)
    step = ingest.handle(_event("promoted", 500, 1.0), NOW + 500)
    assert step.rollout is not None and step.rollout.spec.decision == "promoted"
    assert step.guard is None and ingest.guard_status("p") is None


def test_a_newer_canary_replaces_the_running_one_and_replays_change_nothing() -> None:
    ingest = _ingest()
    first = _event("canary_started", 100, 0.1)
    ingest.handle(first, NOW + 100)
    _feed(ingest, CANARY, ["good"] * 3, 0, 200)
    assert ingest.handle(first, NOW + 200).rollout is None
    newer = ingest.handle(_event("canary_started", 300, 0.1, to_version=3), NOW + 300)
    assert newer.rollout is not None and len(newer.rollout.deletes) == 3
    assert ingest.rollout_status("p", NOW + 300)["canary"]["version"] == 3  # type: ignore[index]


def test_the_rollout_restores_from_its_stored_facts_and_fails_all_or_nothing(monkeypatch) -> None:
    ingest = _ingest()
    specs: dict[str, bytes] = {}
    votes: dict[bytes, bytes] = {}

    def keep(step: Step) -> None:
        if step.rollout is not None:
            for key in step.rollout.deletes:
                votes.pop(key, None)
            votes.update(step.rollout.puts)
            specs[step.rollout.prompt] = step.rollout.spec.encode()

    keep(ingest.handle(_event("canary_started", 100, 0.1), NOW + 100))
    for step in _feed(ingest, PRODUCTION, ["good", "fair"] * 10, 0, 200) + _feed(
        ingest, CANARY, ["good"] * 5, 100, 200
    ):
        keep(step)
    before = ingest.rollout_status("p", NOW + 250)
    restored = _ingest()
    for prompt, raw in specs.items():
        restored.watches.restore("rollout", prompt, raw)
    for key, raw in votes.items():
        restored.watches.restore_vote("rollout", key, raw)
    assert restored.rollout_status("p", NOW + 250) == before

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("after the rollout counted the vote")

    ingest.handle(trace("t-last", 300, prompt_version=CANARY), NOW + 300)
    monkeypatch.setattr(Ingest, "_consider", boom)
    with pytest.raises(RuntimeError):
        ingest.handle(rating("t-last", "poor", 300), NOW + 300)
    assert ingest.rollout_status("p", NOW + 250) == before
