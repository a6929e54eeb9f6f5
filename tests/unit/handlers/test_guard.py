"""The live guard: its confidence sequence, its decisions, its error rates on simulated
streams, and its state in the ingest handler (promotion -> votes -> decision -> rollback)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import numpy as np
import orjson
import pytest

from bench.guard import rating_probabilities, simulate
from handlers import guard as g
from handlers.guard import Interval, decide, difference_bounds
from handlers.ingest import Ingest, Step
from handlers.watches import vote_key
from schemas import CommandEvent, PromotionData, PromotionEvent
from schemas.config import GuardPolicy
from tests.unit.handlers.helpers import NOW, at, policies, rating, trace

FIVE_POINT = np.array([0.0, 0.5, 0.75, 1.0])


# -- the confidence sequence ------------------------------------------------------------------


def _brute_force(counts_new: np.ndarray, counts_old: np.ndarray, confidence: float) -> tuple[float, float]:
    """The bounds straight from the definition: every pair of candidate means."""
    threshold = np.log(1 / (1 - confidence))
    spread = g.GRID[:, None] - g.GRID[None, :]
    joint_up = (
        g.log_wealth(FIVE_POINT, counts_new, above=False)[:, None]
        + g.log_wealth(FIVE_POINT, counts_old, above=True)[None, :]
    )
    joint_down = (
        g.log_wealth(FIVE_POINT, counts_new, above=True)[:, None]
        + g.log_wealth(FIVE_POINT, counts_old, above=False)[None, :]
    )
    upper = np.where(joint_up < threshold, spread, -np.inf).max() + g.STEP
    lower = np.where(joint_down < threshold, spread, np.inf).min() - g.STEP
    return max(-1.0, lower), min(1.0, upper)


def test_bounds_are_the_extremes_of_the_joint_confidence_set() -> None:
    rng = np.random.default_rng(7)
    for _ in range(25):
        counts_new = rng.multinomial(rng.integers(1, 300), rng.dirichlet([1, 1, 1, 1])).astype(float)
        counts_old = rng.multinomial(rng.integers(1, 600), rng.dirichlet([1, 1, 1, 1])).astype(float)
        lower, upper = difference_bounds(FIVE_POINT, counts_new, counts_old, 0.95)
        assert (float(lower), float(upper)) == pytest.approx(_brute_force(counts_new, counts_old, 0.95))


def test_batched_bounds_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(3)
    counts_new = rng.multinomial(150, [0.1, 0.2, 0.3, 0.4], size=8).astype(float)
    counts_old = rng.multinomial(500, [0.1, 0.2, 0.3, 0.4], size=8).astype(float)
    lower, upper = difference_bounds(FIVE_POINT, counts_new, counts_old, 0.9)
    for i in range(8):
        assert (lower[i], upper[i]) == difference_bounds(FIVE_POINT, counts_new[i], counts_old[i], 0.9)


def test_the_interval_contains_the_observed_difference_and_narrows() -> None:
    old = Counter({0.0: 10, 0.5: 20, 0.75: 30, 1.0: 40})
    narrow = g.compare(
        Counter({0.0: 40, 0.5: 80, 0.75: 120, 1.0: 160}), Counter({v: 4 * n for v, n in old.items()}), 0.95
    )
    wide = g.compare(Counter({0.0: 1, 0.5: 2, 0.75: 3, 1.0: 4}), old, 0.95)
    for interval in (narrow, wide):
        assert interval.difference == pytest.approx(0.0)
        assert interval.lower < 0 < interval.upper
    assert narrow.upper - narrow.lower < wide.upper - wide.lower
    assert g.compare(Counter(), Counter(), 0.95) == Interval(0, 0, None, None, None, -1.0, 1.0)


# -- error rates (the full 400 x 2,000 run is bench/guard.py) ---------------------------------


def test_error_rates_on_simulated_rating_streams() -> None:
    """Reduced runs of bench/guard.py on the guard's code (five-point ratings, replaced version's
    mean .85, its window of 500 ratings as the reference): an equal version is rarely rolled back
    over 500 looks, a 10-point regression is caught within 200 ratings, a 10-point gain is
    confirmed and never rolled back."""
    policy = GuardPolicy()
    equal = simulate(0.0, 100, 500, policy, seed=11)
    worse = simulate(-0.10, 100, 200, policy, seed=12)
    better = simulate(+0.10, 100, 300, policy, seed=13)
    print(
        f"\nequal: rolled back {equal.ever_rolled_back:.1%}, confirmed {equal.confirmed:.1%} (100 runs x 500)"
    )
    print(
        f"10 worse: rolled back within 200 {worse.rolled_back_within_200:.1%} (median n {worse.median_first_decision})"
    )
    print(f"10 better: confirmed {better.confirmed:.1%}, rolled back {better.ever_rolled_back:.1%}")
    assert equal.ever_rolled_back <= 0.05
    assert worse.rolled_back_within_200 >= 0.90
    assert better.confirmed_before_any_rollback == better.confirmed >= 0.95
    assert better.ever_rolled_back == 0.0


def test_the_rating_model_has_the_asked_mean() -> None:
    for mean in (0.65, 0.75, 0.85, 0.95):
        assert rating_probabilities(FIVE_POINT, mean) @ FIVE_POINT == pytest.approx(mean)


# -- decisions -------------------------------------------------------------------------------


def _interval(n_new: int, lower: float, upper: float, n_old: int = 500) -> Interval:
    return Interval(n_new, n_old, 0.7, 0.75, -0.05, lower, upper)


@pytest.mark.parametrize(
    ("interval", "mode", "watched_s", "expected"),
    [
        (_interval(30, -0.4, -0.01), "auto", 0, "rolled_back"),
        (_interval(30, -0.4, -0.01), "manual", 0, "regression_suspected"),
        (_interval(30, -0.4, -0.01, n_old=0), "auto", 0, None),  # nothing to compare with
        (_interval(49, -0.04, 0.2), "auto", 0, None),  # below min_live_examples
        (_interval(50, -0.04, 0.2), "auto", 0, "confirmed"),
        (_interval(50, -0.06, 0.2), "auto", 0, None),
        (_interval(2000, -0.06, 0.2), "auto", 0, "watch_ended"),
        (_interval(60, -0.06, 0.2), "auto", timedelta(days=7).total_seconds(), "watch_ended"),
    ],
)
def test_decisions(interval: Interval, mode: str, watched_s: float, expected: str | None) -> None:
    assert decide(interval, GuardPolicy(), mode, watched_s) == expected


# -- the guard in the ingest handler ---------------------------------------------------------


def _promotion(
    to_version: int = 2,
    from_version: int | None = 1,
    t: float = 100.0,
    prompt: str = "p",
    decision: str = "promoted",
    **data,
) -> PromotionEvent:
    event = PromotionEvent.build(
        PromotionData(
            prompt=prompt,
            decision=decision,
            from_version=from_version,
            to_version=to_version,
            reason="gate",
            **data,
        )
    )
    return event.model_copy(update={"time": at(t)})


def _feed(ingest: Ingest, version: int, ratings: list[str], start: int, t: float) -> list[Step]:
    steps = []
    for i, value in enumerate(ratings, start):
        steps.append(ingest.handle(trace(f"t{i}", t, prompt_version=version), NOW + t))
        steps.append(ingest.handle(rating(f"t{i}", value, t), NOW + t))
    return steps


def _ingest(**promotion) -> Ingest:
    return Ingest(
        policies(window={"max_examples": 500}, triggers={"min_examples": 400}, promotion=promotion), "app"
    )


def test_a_promotion_starts_a_guard_with_the_replaced_versions_window_as_reference() -> None:
    ingest = _ingest()
    _feed(ingest, 1, ["excellent", "good"] * 20, 0, 10)
    _feed(ingest, 3, ["poor"] * 5, 100, 20)  # another version's traces are not the reference
    step = ingest.handle(_promotion(), NOW + 100)
    assert step.guard is not None and step.guard.spec.new_version == 2 and step.guard.spec.decision is None
    assert len(step.guard.puts) == 40 and not step.guard.events
    status = ingest.guard_status("p")
    assert status is not None and (status["n_old"], status["n_new"], status["state"]) == (40, 0, "watching")
    assert status["mean_old"] == pytest.approx(0.875)


def test_live_ratings_count_once_and_a_clear_regression_asks_for_a_rollback() -> None:
    ingest = _ingest()
    _feed(ingest, 1, ["excellent", "good"] * 40, 0, 10)
    ingest.handle(_promotion(), NOW + 100)
    steps = _feed(ingest, 2, ["poor", "fair"] * 5, 1000, 200)
    repeat = ingest.handle(rating("t1000", "poor", 200), NOW + 201)
    assert repeat.guard is None  # the same verdict again changes nothing
    decided = [s.guard for s in steps if s.guard is not None and s.guard.events]
    assert len(decided) == 1
    [command] = decided[0].events
    assert isinstance(command, CommandEvent)
    assert (command.data.action, command.data.version, command.data.requested_by) == ("rollback", 2, "guard")
    assert "worse beyond doubt" in command.data.reason
    assert command.id == f"{decided[0].spec.promotion_id}:guard:rolled_back"
    status = ingest.guard_status("p")
    assert status is not None and status["state"] == "rolled_back" and status["upper"] < 0
    # decided: further ratings are not recorded
    assert all(s.guard is None for s in _feed(ingest, 2, ["poor"] * 3, 2000, 300))


def test_manual_mode_flags_the_regression_as_a_promotion_event() -> None:
    ingest = _ingest(mode="manual")
    _feed(ingest, 1, ["excellent"] * 60, 0, 10)
    ingest.handle(_promotion(), NOW + 100)
    steps = _feed(ingest, 2, ["poor"] * 20, 1000, 200)
    [event] = [e for s in steps if s.guard is not None for e in s.guard.events]
    assert isinstance(event, PromotionEvent)
    data = event.data
    assert (data.decision, data.from_version, data.to_version) == ("regression_suspected", 1, 2)
    assert data.ci_high is not None and data.ci_high < 0 and data.improvement == pytest.approx(-1.0)
    assert data.n_eval is not None and data.n_eval < 20


def test_an_equal_version_is_confirmed_after_min_live_examples() -> None:
    ingest = _ingest(guard={"min_live_examples": 100, "margin": 0.2})
    _feed(ingest, 1, ["excellent", "good", "fair", "good"] * 100, 0, 10)
    ingest.handle(_promotion(), NOW + 100)
    steps = _feed(ingest, 2, ["excellent", "good", "fair", "good"] * 30, 1000, 200)
    events = [(i, e) for i, s in enumerate(steps) if s.guard is not None for e in s.guard.events]
    [(index, event)] = events
    assert event.data.decision == "confirmed" and event.data.n_eval >= 100
    assert index >= 2 * 100 - 1


def test_replays_and_older_promotions_do_not_restart_the_guard_and_a_newer_one_replaces_it() -> None:
    ingest = _ingest()
    _feed(ingest, 1, ["good"] * 10, 0, 10)
    promotion = _promotion()
    ingest.handle(promotion, NOW + 100)
    _feed(ingest, 2, ["good"] * 3, 1000, 200)
    assert ingest.handle(promotion, NOW + 300).guard is None  # redelivered
    assert ingest.handle(_promotion(t=50), NOW + 300).guard is None  # older than the guard's
    assert (
        ingest.handle(_promotion(prompt="p", t=150), NOW + 300).guard is None
    )  # same versions, still watching
    newer = ingest.handle(_promotion(to_version=3, from_version=2, t=400), NOW + 400)
    assert newer.guard is not None
    assert sorted(newer.guard.deletes) == sorted(
        vote_key("p", f"t{i}", "sme") for i in [*range(10), 1000, 1001, 1002]
    )
    assert len(newer.guard.puts) == 3  # the replaced version 2's rated traces are the new reference


def test_the_guard_restores_from_its_stored_facts() -> None:
    ingest = _ingest()
    stored: dict[bytes, bytes] = {}
    specs: dict[str, bytes] = {}

    def keep(step: Step) -> None:
        if step.guard is not None:
            for key in step.guard.deletes:
                stored.pop(key, None)
            stored.update(step.guard.puts)
            specs[step.guard.prompt] = step.guard.spec.encode()

    for step in _feed(ingest, 1, ["good", "poor", "excellent"] * 10, 0, 10):
        keep(step)
    keep(ingest.handle(_promotion(), NOW + 100))
    for step in _feed(ingest, 2, ["good", "fair"] * 10, 1000, 200):
        keep(step)
    before = ingest.guard_status("p")
    restored = _ingest()
    for prompt, raw in specs.items():
        restored.watches.restore("guard", prompt, raw)
    for key, raw in stored.items():
        restored.watches.restore_vote("guard", key, raw)
    assert restored.guard_status("p") == before
    assert {orjson.loads(k)[0] for k in stored} == {"p"}


def test_a_rollback_ends_the_guard_and_rearms_the_trigger_on_the_restored_version() -> None:
    ingest = _ingest(mode="manual")
    _feed(ingest, 1, ["excellent", "good"] * 20, 0, 10)
    ingest.handle(_promotion(candidate_score=0.9), NOW + 100)
    assert ingest.trigger_state("p").baseline_score == 0.9
    _feed(ingest, 2, ["poor"] * 3, 1000, 200)
    step = ingest.handle(_promotion(to_version=1, from_version=2, t=300, decision="rolled_back"), NOW + 300)
    assert step.guard is not None and step.guard.spec.decision == "rolled_back"
    assert ingest.trigger_state("p").baseline_score == pytest.approx(0.875)
    assert step.trigger_state is ingest.trigger_state("p")


def test_a_disabled_guard_never_starts() -> None:
    ingest = _ingest(guard={"enabled": False})
    _feed(ingest, 1, ["good"] * 5, 0, 10)
    assert ingest.handle(_promotion(), NOW + 100).guard is None
    assert ingest.guard_status("p") is None


def test_dspy_predictor_promotions_guard_their_program() -> None:
    ingest = Ingest(
        policies(
            backend="dspy", program="examples.router_program:make_program", triggers={"min_examples": 50}
        ),
        "app",
    )
    _feed(ingest, 1, ["good"] * 5, 0, 10)
    step = ingest.handle(_promotion(prompt="p_route"), NOW + 100)
    assert step.prompt == "p" and step.guard is not None and step.guard.prompt == "p"
    assert (
        ingest.handle(_promotion(prompt="p_other", t=101), NOW + 101).guard is None
    )  # same job, next predictor
    assert ingest.policy_prompt("q_route") is None


def test_an_event_that_fails_midway_leaves_the_guard_as_it_was(monkeypatch) -> None:
    """`Ingest.handle` is all or nothing for the guard too: votes merged and a verdict reached
    before a failure are undone, so memory keeps agreeing with the tables."""
    ingest = _ingest()
    _feed(ingest, 1, ["excellent", "good"] * 40, 0, 10)
    ingest.handle(_promotion(), NOW + 100)
    steps = _feed(ingest, 2, ["poor"] * 30, 1000, 200)
    decided = next(i for i, s in enumerate(steps) if s.guard is not None and s.guard.events)
    ingest = _ingest()
    _feed(ingest, 1, ["excellent", "good"] * 40, 0, 10)
    ingest.handle(_promotion(), NOW + 100)
    _feed(ingest, 2, ["poor"] * (decided // 2), 1000, 200)  # all but the deciding rating
    ingest.handle(trace("t-last", 300, prompt_version=2), NOW + 300)
    before = ingest.guard_status("p")
    assert before is not None and before["state"] == "watching"

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("after the guard decided")

    monkeypatch.setattr(Ingest, "_consider", boom)  # runs after the guard merged the vote and decided
    with pytest.raises(RuntimeError):
        ingest.handle(rating("t-last", "poor", 300), NOW + 300)
    assert ingest.guard_status("p") == before
    monkeypatch.undo()
    step = ingest.handle(rating("t-last", "poor", 300), NOW + 300)
    assert step.guard is not None and step.guard.spec.decision == "rolled_back"
