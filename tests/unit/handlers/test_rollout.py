"""The staged rollout: its state (spec, votes, per-arm tallies, transactions), its rule (abort,
advance, promote, time-out; manual mode), following the registry (`apply`), the look schedule and status."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from itertools import count

import numpy as np
import pytest

from bench.rollout import run
from handlers import guard as g
from handlers import rollout as r
from handlers.guard import Vote, compare, difference_bounds
from handlers.rollout import Rollout, RolloutSpec, Verdict, apply, look, status
from schemas.config import PromotionPolicy, RolloutPolicy

POLICY = RolloutPolicy()
CANARY, PRODUCTION = 3, 2
START = 1_000.0
_ids = count()


def _rollout(mode: str = "auto", stages: list[float] | None = None) -> Rollout:
    rollout_policy = RolloutPolicy(stages=stages) if stages is not None else POLICY
    policy = PromotionPolicy(mode=mode, rollout=rollout_policy)
    return Rollout(RolloutSpec.start("promo-1", START, CANARY, PRODUCTION, policy))


def _feed(rollout: Rollout, canary: dict[float, int], production: dict[float, int]) -> None:
    """Add fresh votes: `canary` / `production` map a score to how many votes of it."""
    for version, scores in ((CANARY, canary), (PRODUCTION, production)):
        for score, n in scores.items():
            for _ in range(n):
                rollout.add(Vote(f"t{next(_ids)}", "user", version, score))


def _apply(rollout: Rollout, verdict: Verdict, now: float) -> bool:
    """The verdict as the registry's promotion event announces it back."""
    return apply(rollout, verdict.decision, verdict.traffic_share, verdict.reason, now)


def _worse(rollout: Rollout) -> None:
    _feed(rollout, {0.0: 40}, {1.0: 40})


# -- state -----------------------------------------------------------------------------------


def test_the_spec_round_trips_and_keeps_its_own_stages() -> None:
    policy = PromotionPolicy(mode="manual")
    spec = RolloutSpec.start("promo-1", START, CANARY, PRODUCTION, policy)
    policy.rollout.stages.append(0.9)  # a policy edit does not reach a running rollout
    assert spec.stages == [0.05, 0.25, 0.5] and spec.mode == "manual" and spec.stage_started_at == START
    spec.stage, spec.decision, spec.decided_at, spec.reason = 2, "promoted", START + 5, "why"
    assert RolloutSpec.decode(spec.encode()) == spec
    assert RolloutSpec.decode(RolloutSpec("p", 1.0, 2, 1, "auto", [0.1]).encode()).decision is None


def test_watched_votes_are_of_either_arm_and_of_traces_since_the_start() -> None:
    rollout = _rollout()
    assert rollout.watches(CANARY, START) and rollout.watches(PRODUCTION, START + 1)
    assert not rollout.watches(CANARY, START - 0.001)  # a trace from before the canary
    assert not rollout.watches(1, START + 1) and not rollout.watches(None, START + 1)
    rollout.spec.decision = "canary_aborted"
    assert not rollout.watches(CANARY, START + 1)


def test_votes_are_tallied_per_arm_once_and_follow_an_edited_score() -> None:
    rollout = _rollout()
    assert rollout.add(Vote("t1", "ann", CANARY, 0.75))
    assert not rollout.add(Vote("t1", "ann", CANARY, 0.75))  # redelivered: not counted twice
    assert rollout.add(Vote("t1", "bob", CANARY, 0.5))
    assert rollout.add(Vote("t2", "ann", PRODUCTION, 1.0))
    assert rollout.counts() == (2, 1)
    assert rollout.add(Vote("t1", "ann", CANARY, 1.0))  # the rater changed their mind
    assert rollout.canary == Counter({1.0: 1, 0.5: 1}) and rollout.production == Counter({1.0: 1})
    restored = Rollout(rollout.spec, dict(rollout.votes))  # after a restart: tallies from the votes
    assert (restored.canary, restored.production) == (rollout.canary, rollout.production)
    interval = rollout.interval(POLICY.confidence)
    expected = compare(Counter({1.0: 1, 0.5: 1}), Counter({1.0: 1}), POLICY.confidence, r.MARGINAL_WEIGHT)
    assert interval == expected


def test_a_failed_transaction_restores_votes_tallies_spec_and_schedule() -> None:
    rollout = _rollout()
    _feed(rollout, {0.75: 3}, {0.75: 5})
    rollout.add(Vote("edited", "ann", CANARY, 0.5))
    rollout.take_look(POLICY.min_live_examples)
    before = (dict(rollout.votes), Counter(rollout.canary), Counter(rollout.production), rollout.spec.stage)
    with pytest.raises(RuntimeError), rollout.transaction():
        _feed(rollout, {0.0: 30}, {})
        rollout.add(Vote("edited", "ann", CANARY, 1.0))
        assert rollout.take_look(POLICY.min_live_examples)
        rollout.spec.stage = 1
        raise RuntimeError("handler bug")
    assert (dict(rollout.votes), rollout.canary, rollout.production, rollout.spec.stage) == before
    assert not rollout.take_look(POLICY.min_live_examples)  # the look taken inside was undone too


# -- the statistic: the guard's sequence with marginal terms ---------------------------------

FIVE_POINT = np.array([0.0, 0.5, 0.75, 1.0])


def _brute_force(counts_new: np.ndarray, counts_old: np.ndarray, w: float) -> tuple[float, float]:
    """The bounds straight from the definition: every pair of candidate means whose
    e-process (1 - w) K_new K_old + (w/2) (K_new + K_old) stays below 1/alpha."""
    threshold = np.log(1 / (1 - POLICY.confidence))
    spread = g.GRID[:, None] - g.GRID[None, :]

    def kept(new_above: bool) -> np.ndarray:
        new = g.log_wealth(FIVE_POINT, counts_new, above=new_above)[:, None]
        old = g.log_wealth(FIVE_POINT, counts_old, above=not new_above)[None, :]
        mixture = np.logaddexp(np.log1p(-w) + new + old, np.log(w / 2) + np.logaddexp(new, old))
        return mixture < threshold

    upper = np.where(kept(False), spread, -np.inf).max() + g.STEP
    lower = np.where(kept(True), spread, np.inf).min() - g.STEP
    return max(-1.0, lower), min(1.0, upper)


def test_the_rollouts_bounds_are_the_extremes_of_its_confidence_set() -> None:
    rng = np.random.default_rng(7)
    for _ in range(25):
        counts_new = rng.multinomial(rng.integers(1, 300), rng.dirichlet([1, 1, 1, 1])).astype(float)
        counts_old = rng.multinomial(rng.integers(1, 6000), rng.dirichlet([1, 1, 1, 1])).astype(float)
        lower, upper = difference_bounds(
            FIVE_POINT, counts_new, counts_old, POLICY.confidence, r.MARGINAL_WEIGHT
        )
        expected = _brute_force(counts_new, counts_old, r.MARGINAL_WEIGHT)
        assert (float(lower), float(upper)) == pytest.approx(expected)


def test_a_large_production_arm_no_longer_widens_the_canarys_side() -> None:
    """5,000 canary votes against 95,000, equal means .85: the guard's product leaves the lower
    bound below -margin, the mixture does not; balanced samples get the same bounds."""
    p = np.array([0.024, 0.119, 0.266, 0.591])
    product = difference_bounds(FIVE_POINT, 5000 * p, 95000 * p, POLICY.confidence)
    mixture = difference_bounds(FIVE_POINT, 5000 * p, 95000 * p, POLICY.confidence, r.MARGINAL_WEIGHT)
    assert product[0] < -POLICY.margin < mixture[0]
    balanced = [difference_bounds(FIVE_POINT, 500 * p, 500 * p, POLICY.confidence, w) for w in (0.0, 0.2)]
    assert balanced[0] == balanced[1]


# -- the rule --------------------------------------------------------------------------------


def _advance_through(rollout: Rollout, stages: int) -> list[Verdict]:
    """Each stage: 250 new votes per arm of equal means (lower bound > -margin), then the rule."""
    verdicts = []
    for i in range(stages):
        _feed(rollout, {0.75: 250}, {0.75: 250})
        verdict = look(rollout, POLICY, START + 10 * (i + 1))
        assert verdict is not None
        assert _apply(rollout, verdict, START + 10 * (i + 1))
        verdicts.append(verdict)
    return verdicts


def test_advance_stage_by_stage_then_promote() -> None:
    rollout = _rollout()
    first, second, third = _advance_through(rollout, 3)
    assert (first.action, first.decision, first.from_stage, first.stage) == (
        "advance",
        "canary_advanced",
        0,
        1,
    )
    assert first.traffic_share == 0.25 and second.traffic_share == 0.5
    assert (third.action, third.decision, third.traffic_share) == ("promote", "promoted", 1.0)
    assert first.interval.lower > -POLICY.margin and "advanced" in first.reason and "[" in first.reason
    spec = rollout.spec
    assert (spec.stage, spec.decision, spec.decided_at, spec.reason) == (
        2,
        "promoted",
        START + 30,
        third.reason,
    )
    assert (spec.stage_started_at, spec.stage_canary_votes, spec.stage_production_votes) == (
        START + 20,
        500,
        500,
    )
    assert look(rollout, POLICY, START + 40) is None  # decided: nothing more


def test_a_stage_needs_its_own_minimum_of_new_votes_per_arm() -> None:
    rollout = _rollout()
    _advance_through(rollout, 1)
    _feed(rollout, {0.75: 100}, {0.75: POLICY.min_live_examples - 1})
    assert look(rollout, POLICY, START + 20) is None  # 1,000 votes in all, 49 new of production
    assert rollout.stage_counts() == (100, 49)
    _feed(rollout, {}, {0.75: 1})
    verdict = look(rollout, POLICY, START + 21)  # the 50th is a scheduled look
    assert verdict is not None and verdict.action == "advance" and verdict.stage == 2


def test_not_ready_while_the_lower_bound_is_below_minus_margin() -> None:
    rollout = _rollout()
    _feed(rollout, {0.75: 60}, {0.75: 60})
    assert look(rollout, POLICY, START + 1) is None
    assert status(rollout, POLICY, START + 1)["lower_above_margin"] < 0


def test_abort_when_worse_beyond_doubt_in_both_modes() -> None:
    for mode in ("auto", "manual"):
        rollout = _rollout(mode)
        _worse(rollout)
        verdict = look(rollout, POLICY, START + 1)
        assert verdict is not None and verdict.interval.upper < 0
        assert (verdict.action, verdict.decision, verdict.traffic_share) == ("abort", "canary_aborted", 0.0)
        assert "worse beyond doubt" in verdict.reason
        assert _apply(rollout, verdict, START + 1) and rollout.spec.decision == "canary_aborted"
        assert not rollout.watching


def test_no_abort_without_votes_of_both_arms() -> None:
    rollout = _rollout()
    _feed(rollout, {0.0: 200}, {})
    assert look(rollout, POLICY, START + 1) is None


def test_the_stage_duration_limit_aborts_an_undecided_stage() -> None:
    limit = POLICY.max_stage_duration.total_seconds()
    for mode in ("auto", "manual"):
        rollout = _rollout(mode)
        _feed(rollout, {0.75: 10}, {0.75: 10})
        assert look(rollout, POLICY, START + 1) is None
        assert look(rollout, POLICY, START + limit - 1) is None  # no new votes, time left: no look
        verdict = look(rollout, POLICY, START + limit)  # no new votes, but the time is up
        assert verdict is not None and verdict.action == "abort" and "max_stage_duration" in verdict.reason
    # the limit counts from the stage's start, not the rollout's
    rollout = _rollout()
    _advance_through(rollout, 1)
    assert look(rollout, POLICY, START + limit + 1) is None


def test_manual_mode_never_advances_by_itself_but_says_it_is_ready() -> None:
    rollout = _rollout("manual")
    _feed(rollout, {0.75: 250}, {0.75: 250})
    assert look(rollout, POLICY, START + 1) is None
    for extra in range(60):
        _feed(rollout, {0.75: 5}, {0.75: 5})
        assert look(rollout, POLICY, START + 2 + extra) is None
    shown = status(rollout, POLICY, START + 100)
    assert shown["ready_to_advance"] and shown["state"] == "canary" and shown["next_step"] == "advance"
    assert rollout.spec.stage == 0


# -- apply: following the registry's promotion events -----------------------------------------


def test_apply_follows_advances_by_share_and_ignores_stale_or_late_events() -> None:
    rollout = _rollout("manual", stages=[0.1, 0.5])
    rollout.spec.pending = "advance@0"
    assert apply(rollout, "canary_advanced", 0.5, "advanced by alice", START + 5)
    assert (rollout.spec.stage, rollout.spec.stage_started_at, rollout.spec.pending) == (1, START + 5, None)
    assert not apply(rollout, "canary_advanced", 0.5, "redelivered", START + 6)  # at that stage already
    assert not apply(rollout, "canary_advanced", 0.1, "older", START + 6)
    assert apply(rollout, "canary_aborted", None, "aborted by bob", START + 7)
    assert (rollout.spec.decision, rollout.spec.reason) == ("canary_aborted", "aborted by bob")
    assert not apply(rollout, "promoted", 1.0, "late", START + 8)  # decided: a late event changes nothing
    assert rollout.spec.decision == "canary_aborted"


# -- the look schedule and the thresholds ----------------------------------------------------


def test_looks_follow_the_schedule_of_the_smaller_arm() -> None:
    rollout = _rollout()
    _feed(rollout, {}, {0.75: 500})
    taken = []
    for n in range(1, 201):
        _feed(rollout, {0.75: 1}, {0.75: 5})
        if rollout.take_look(POLICY.min_live_examples):
            taken.append(n)
    assert taken[:20] == list(range(1, 21))  # every canary vote at first
    scheduled = {p for p in r.SCHEDULE.tolist() if p <= 200} | {POLICY.min_live_examples}  # 67 of 200
    assert taken == sorted(scheduled)
    gaps = np.diff(taken[20:])
    assert (gaps <= np.ceil(np.array(taken[20:-1]) * (r.LOOK_RATIO - 1)) + 1).all()  # at most ~5 % apart


def test_the_thresholds_on_scalars_and_arrays_agree() -> None:
    lower = np.array([-0.04, -0.06, -0.3, -0.04])
    upper = np.array([0.1, 0.1, -0.01, -0.01])
    n_canary, n_production = np.array([60, 60, 60, 0]), np.array([60, 60, 60, 60])
    new = np.array([50, 50, 50, 49])
    worse, ready = r.signals(lower, upper, n_canary, n_production, new, new, POLICY)
    assert worse.tolist() == [False, False, True, False] and ready.tolist() == [True, False, False, False]
    for i in range(4):
        one = r.signals(
            lower[i], upper[i], int(n_canary[i]), int(n_production[i]), int(new[i]), int(new[i]), POLICY
        )
        assert (bool(one[0]), bool(one[1])) == (worse[i], ready[i])
    keys = r.look_key(n_canary, n_production, new, new, 50)
    assert keys.tolist() == [
        r.look_key(int(a), int(b), int(c), int(c), 50) for a, b, c in zip(n_canary, n_production, new)
    ]


# -- status ----------------------------------------------------------------------------------


def test_status_shows_stage_arms_interval_and_distance_to_the_next_decision() -> None:
    rollout = _rollout()
    _feed(rollout, {0.75: 20, 1.0: 10}, {0.75: 30})
    shown = status(rollout, POLICY, START + 3600)
    assert shown["state"] == "canary" and shown["stage"] == 0 and shown["traffic_share"] == 0.05
    assert shown["canary"] == {"version": CANARY, "n": 30, "mean": pytest.approx(5 / 6), "n_stage": 30}
    assert shown["production"]["n"] == 30 and shown["production"]["mean"] == 0.75
    assert (shown["needed_canary"], shown["needed_production"]) == (20, 20)
    assert shown["lower"] < shown["difference"] < shown["upper"]
    assert shown["lower_above_margin"] == pytest.approx(shown["lower"] + POLICY.margin)
    assert not shown["ready_to_advance"] and not shown["worse_beyond_doubt"]
    assert shown["stage_time_left_s"] == timedelta(days=2).total_seconds() - 3600
    _worse(rollout)
    verdict = look(rollout, POLICY, START + 3601)
    assert verdict is not None and _apply(rollout, verdict, START + 3601)
    done = status(rollout, POLICY, START + 4000)
    assert (
        done["state"] == "canary_aborted"
        and done["traffic_share"] == 0.0
        and done["stage_time_left_s"] is None
    )


# -- the simulation bench on the rule's code (the full runs are bench/rollout.py) -------------


def test_a_small_simulation_aborts_a_worse_canary_at_its_first_stages() -> None:
    outcome = run(0.75, 0.85, 20, 3000, POLICY, seed=5)
    assert outcome.aborted_by_25 >= 0.9 and outcome.promoted == 0.0
