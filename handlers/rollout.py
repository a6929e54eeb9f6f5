"""The staged rollout (canary): the rule that moves a promoted candidate through its traffic
stages, aborts it, or promotes it, judged on live ratings of the canary and of production
gathered over the same period. Pure (numpy only), so the daemon, the tests and the simulation
bench (bench/rollout.py) run the very same code.

Why concurrent: the live guard (handlers/guard.py) compares a promoted version with the
replaced version's *earlier* window, so a drift of the ratings right after a promotion is
blamed on the new version. Here the canary serves a share of the traffic while production
serves the rest, and the two arms are compared on ratings of traces that arrived since the
canary started: a drift that moves both arms moves both sides of the difference.

The statistics are the guard's: the anytime-valid confidence sequence for the difference of
two bounded means (`guard.difference_bounds`, betting e-processes and Ville's inequality), with
one change, `MARGINAL_WEIGHT`: the guard rejects a pair of means (a, b) when the product of the
two samples' wealths K_X(a) K_Y(b) reaches 1/alpha; here the e-process is
0.8 K_X K_Y + 0.1 K_X + 0.1 K_Y (still a nonnegative supermartingale, so still valid). At a 5 %
share production has ~19x the canary's votes, its wealth at its true mean decays slowly (the
larger bets lose a fair game), and in the product that decay excuses any canary deficit: with
the guard's product, an equal canary's lower bound stayed below -0.05 with 5,000 canary votes
against 95,000 ([-0.065, +0.015]; with the mixture [-0.015, +0.015]) and 97 % of equal canaries
were undecided after 100,000 rated traces. With the mixture 99 % are rolled out (median ~7,500
rated traces, bench/rollout.py); balanced samples get the same bounds on the 0.005 grid.

Design:
- ONE confidence sequence over the whole rollout, on the cumulative votes of each arm since
  the canary started. Its guarantee holds at every look, whenever and however often one looks,
  so the probability of ever wrongly aborting an equal canary is <= 1 - confidence over all
  stages together. Restarting a sequence per stage would spend the error once per stage
  (3 stages: up to 3 x 5 %); the stages only change how fast each arm's votes arrive.
- abort when the upper bound of (canary - production) < 0: worse beyond doubt (both arms
  need a vote). In manual mode too: stopping a worse canary is the safe direction.
- advance from stage i when each arm has >= `min_live_examples` votes gathered *during stage i*
  (fresh evidence at the current share, not only what an earlier, smaller share gathered) and
  the lower bound > -margin (not worse beyond the margin); after the last stage: promote.
- `max_stage_duration` passed undecided: abort (the canary does not linger at a share).
- manual mode: the rule never advances or promotes; it reports `ready_to_advance` (status)
  and a person sends `canary_advance` or `canary_abort`.
- the rule's verdicts and a person's commands take one path: a command on `gepa.commands`
  (the rule's with `requested_by: rollout`, the share it was decided at and `pending` set, so
  it is sent once), judged and made in the registry by the optimizer role
  (handlers/promotion.py `judge_command`), announced as a promotion event, which `apply`
  follows here. The registry is the one truth of where a canary stands.

Cost per rating: end-user thumbs arrive at hundreds a second and a look (`difference_bounds`)
costs ~130 us. (1) Each arm keeps its count per rating value incrementally (`Rollout._put`),
so a look never recounts votes; (2) the per-value log-factors of the bets are cached per value
set (`guard.log_factors`); (3) the rule looks only on a sparse schedule: when the smaller
arm's cumulative count reaches a point of `SCHEDULE` (every count up to ~20, then geometric,
5 % apart), when both arms reach the stage's minimum of new votes, and when the stage's time is
up; between looks a rating costs a dict update and a bisect.
Looking less often keeps the sequence valid: its guarantee holds simultaneously at *all* times,
so it holds at any subset of them, including one chosen from the counts. The price is a delay
of at most 5 % more votes before a decision. bench/rollout.py prints the measured cost.

Limitation: if the ratings drift *during* the rollout, the canary's votes come more from later
periods than production's (its share grows), so a drift then is not fully cancelled; a drift
at or before the start (the guard's failure) is.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from handlers.guard import Interval, Vote, VoteBook, compare
from handlers.stored_json import stored_json
from schemas.config import PromotionPolicy, RolloutPolicy

LOOK_RATIO = 1.05
# counts at which a look is due: 1, 2, ..., ~20, then 5 % apart (up to ~4e10 votes)
SCHEDULE = np.unique(np.ceil(LOOK_RATIO ** np.arange(500))).astype(np.int64)
_SCHEDULE = SCHEDULE.tolist()
MARGINAL_WEIGHT = 0.2  # the weight of K_X + K_Y beside K_X K_Y (see the module docstring)
RULE = "rollout"  # `requested_by` of the rule's own verdicts (handlers/promotion.py WATCHERS)

Action = Literal["advance", "promote", "abort"]
RolloutDecision = Literal["promoted", "canary_aborted"]
_DECISIONS: dict[Action, Literal["canary_advanced", "promoted", "canary_aborted"]] = {
    "advance": "canary_advanced",
    "promote": "promoted",
    "abort": "canary_aborted",
}


# -- state -----------------------------------------------------------------------------------


@dataclass(slots=True)
class RolloutSpec:
    """One prompt's staged rollout: which canary, against which production, at which stage, and
    once decided its verdict. One table value per prompt; a newer rollout replaces it."""

    promotion_id: str  # the `canary_started` promotion event that began it
    started_at: float  # epoch s; traces from then on are compared
    canary_version: int
    production_version: int
    mode: str  # "auto" | "manual"
    stages: list[float]  # copied from the policy at start: a policy edit leaves it alone
    stage: int = 0
    stage_started_at: float = 0.0
    stage_canary_votes: int = 0  # the arms' cumulative vote counts when the stage began
    stage_production_votes: int = 0
    decision: str | None = None  # RolloutDecision
    decided_at: float | None = None
    reason: str | None = None
    pending: str | None = None  # the verdict sent to the optimizer role and not yet announced back

    @classmethod
    def start(
        cls,
        promotion_id: str,
        started_at: float,
        canary_version: int,
        production_version: int,
        policy: PromotionPolicy,
    ) -> RolloutSpec:
        """A rollout at its first stage, with the policy's mode and stages."""
        return cls(
            promotion_id,
            started_at,
            canary_version,
            production_version,
            policy.mode,
            list(policy.rollout.stages),
            stage_started_at=started_at,
        )

    def encode(self) -> bytes:
        return stored_json(self)  # orjson writes the same bytes as from asdict(), without its deep copy

    @classmethod
    def decode(cls, raw: bytes) -> RolloutSpec:
        return cls(**orjson.loads(raw))


def schedule_step(n: Any) -> Any:
    """How many points of SCHEDULE a count has reached (an int, or an array of them)."""
    if isinstance(n, np.ndarray):
        return np.searchsorted(SCHEDULE, n, side="right")
    return bisect_right(_SCHEDULE, n)


def look_key(
    n_canary: Any, n_production: Any, new_canary: Any, new_production: Any, min_live_examples: int
) -> Any:
    """Which scheduled look the counts have reached (ints, or arrays of them): a look is due when
    it changes, i.e. the smaller arm's cumulative count reached a point of SCHEDULE or both arms
    reached the stage's minimum of new votes. The smaller arm sets the pace: within a stage both
    arms grow in proportion, and its few votes bound what the interval can know."""
    smaller = (
        np.minimum(n_canary, n_production)
        if isinstance(n_canary, np.ndarray)
        else min(n_canary, n_production)
    )
    ready = (new_canary >= min_live_examples) & (new_production >= min_live_examples)
    return schedule_step(smaller) * 2 + ready


@dataclass(slots=True)
class Rollout(VoteBook[RolloutSpec]):
    """A rollout's spec and the votes of both arms, with each arm's count per rating value kept
    in step with the votes (including a transaction's rollback). Add votes with `add`."""

    canary: Counter[float] = field(init=False, default_factory=Counter)
    production: Counter[float] = field(init=False, default_factory=Counter)
    _looked: int | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for vote in self.votes.values():
            self._count(vote, 1)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing, as `VoteBook.transaction`, for the look schedule too."""
        looked = self._looked
        try:
            with VoteBook.transaction(self):
                yield
        except BaseException:
            self._looked = looked
            raise

    @property
    def watching(self) -> bool:
        return self.spec.decision is None

    def watches(self, version: int | None, trace_time: float) -> bool:
        """Whether a vote on a trace of `version` that arrived at `trace_time` belongs here:
        an undecided rollout, either arm's version, a trace from the canary's start on."""
        return (
            self.watching
            and version in (self.spec.canary_version, self.spec.production_version)
            and trace_time >= self.spec.started_at
        )

    def _arm(self, version: int) -> Counter[float] | None:
        if version == self.spec.canary_version:
            return self.canary
        if version == self.spec.production_version:
            return self.production
        return None

    def _count(self, vote: Vote, delta: int) -> None:
        arm = self._arm(vote.version)
        if arm is not None:
            arm[vote.score] += delta
            if not arm[vote.score]:
                del arm[vote.score]

    def _put(self, key: tuple[str, str], vote: Vote | None) -> None:
        previous = self.votes.get(key)
        if previous is not None:
            self._count(previous, -1)
        VoteBook._put(self, key, vote)
        if vote is not None:
            self._count(vote, 1)

    def counts(self) -> tuple[int, int]:
        """(canary, production) votes since the canary started."""
        return sum(self.canary.values()), sum(self.production.values())

    def stage_counts(self) -> tuple[int, int]:
        """(canary, production) votes gathered during the current stage."""
        n_canary, n_production = self.counts()
        return n_canary - self.spec.stage_canary_votes, n_production - self.spec.stage_production_votes

    def interval(self, confidence: float) -> Interval:
        """canary (`new`) against production (`old`) on all votes since the start."""
        return compare(self.canary, self.production, confidence, MARGINAL_WEIGHT)

    def take_look(self, min_live_examples: int) -> bool:
        """True when a scheduled look is due (and records it as taken)."""
        key = int(look_key(*self.counts(), *self.stage_counts(), min_live_examples))
        if key == self._looked:
            return False
        self._looked = key
        return True


# -- the rule --------------------------------------------------------------------------------


def signals(
    lower: Any,
    upper: Any,
    n_canary: Any,
    n_production: Any,
    new_canary: Any,
    new_production: Any,
    policy: RolloutPolicy,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """The rule's thresholds, on scalars or on arrays of runs (the bench): (worse, ready).
    worse: both arms have votes and the upper bound of canary - production is < 0;
    ready: each arm has >= min_live_examples votes of this stage and the lower bound > -margin."""
    worse = np.logical_and(np.minimum(n_canary, n_production) >= 1, np.less(upper, 0.0))
    ready = np.logical_and(
        np.minimum(new_canary, new_production) >= policy.min_live_examples,
        np.greater(lower, -policy.margin),
    )
    return np.asarray(worse), np.asarray(ready)


@dataclass(frozen=True, slots=True)
class Assessment:
    """Where a rollout stands at one look."""

    interval: Interval
    stage_canary: int
    stage_production: int
    worse: bool
    ready: bool
    stage_elapsed_s: float
    timed_out: bool


def assess(rollout: Rollout, policy: RolloutPolicy, now: float) -> Assessment:
    """The interval over all votes since the start and the rule's signals (one full look)."""
    interval = rollout.interval(policy.confidence)
    new_canary, new_production = rollout.stage_counts()
    worse, ready = signals(
        interval.lower,
        interval.upper,
        interval.n_new,
        interval.n_old,
        new_canary,
        new_production,
        policy,
    )
    elapsed = now - rollout.spec.stage_started_at
    return Assessment(
        interval,
        new_canary,
        new_production,
        bool(worse),
        bool(ready),
        elapsed,
        elapsed >= policy.max_stage_duration.total_seconds(),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """A step of the rollout the rule decided, sent as a command (the registry moves first)."""

    action: Action
    decision: Literal["canary_advanced", "promoted", "canary_aborted"]  # the promotion event's
    from_stage: int
    stage: int  # the stage after it (advance: from_stage + 1)
    traffic_share: float  # the canary's share after it: the new stage's, 1.0 promoted, 0.0 aborted
    reason: str
    interval: Interval


def describe(rollout: Rollout, interval: Interval, policy: RolloutPolicy, verdict: str) -> str:
    """One line for the promotion event's reason and the logs."""
    spec = rollout.spec
    new_canary, new_production = rollout.stage_counts()
    where = (
        f"stage {spec.stage + 1}/{len(spec.stages)} ({spec.stages[spec.stage]:.0%}), "
        f"new votes {new_canary}/{new_production} of {policy.min_live_examples}"
    )
    if interval.difference is None:
        figures = (
            f"{interval.n_new} votes of canary version {spec.canary_version}, "
            f"{interval.n_old} of production version {spec.production_version}"
        )
    else:
        figures = (
            f"canary version {spec.canary_version} {interval.mean_new:.3f} (n={interval.n_new}) vs "
            f"production version {spec.production_version} {interval.mean_old:.3f} (n={interval.n_old}): "
            f"difference {interval.difference:+.3f}, anytime {policy.confidence:.0%} bounds "
            f"[{interval.lower:+.3f}, {interval.upper:+.3f}]"
        )
    return f"staged rollout: {figures}; {where}; {verdict}"


def _verdict(
    rollout: Rollout, action: Literal["forward", "abort"], interval: Interval, reason: str
) -> Verdict:
    spec = rollout.spec
    last = spec.stage + 1 >= len(spec.stages)
    if action == "abort":
        step: Action = "abort"
        stage, share = spec.stage, 0.0
    elif last:
        step, stage, share = "promote", spec.stage, 1.0
    else:
        step, stage, share = "advance", spec.stage + 1, spec.stages[spec.stage + 1]
    return Verdict(step, _DECISIONS[step], spec.stage, stage, share, reason, interval)


def look(rollout: Rollout, policy: RolloutPolicy, now: float) -> Verdict | None:
    """The rule, after new votes or on a timer:
    1. decided, or no scheduled look due and the stage's time not up: nothing (no statistics);
    2. worse beyond doubt: abort (both modes);
    3. ready (auto mode): advance, or promote after the last stage;
    4. `max_stage_duration` passed undecided: abort;
    else None (manual mode waits for a person even when ready; `status` says so)."""
    if not rollout.watching:
        return None
    due = rollout.take_look(policy.min_live_examples)
    if not due and now - rollout.spec.stage_started_at < policy.max_stage_duration.total_seconds():
        return None
    state = assess(rollout, policy, now)
    if state.worse:
        reason = describe(rollout, state.interval, policy, "canary worse beyond doubt; aborted")
        return _verdict(rollout, "abort", state.interval, reason)
    if state.ready and rollout.spec.mode == "auto":
        last = rollout.spec.stage + 1 >= len(rollout.spec.stages)
        verdict = f"not worse than {policy.margin:.2f}; " + ("promoted" if last else "advanced")
        return _verdict(
            rollout, "forward", state.interval, describe(rollout, state.interval, policy, verdict)
        )
    if state.timed_out:
        verdict = f"max_stage_duration ({policy.max_stage_duration}) passed undecided; aborted"
        return _verdict(rollout, "abort", state.interval, describe(rollout, state.interval, policy, verdict))
    return None


def apply(rollout: Rollout, decision: str, traffic_share: float | None, reason: str, now: float) -> bool:
    """Follow the registry (a promotion event the optimizer role announced after it moved the
    alias or the share): `canary_advanced` -> the stage of its share, its start time and the
    arms' counts then; `promoted` / `canary_aborted` -> decided. False, and nothing changed, when
    the event is stale: the rollout is decided or already at (or past) that stage."""
    spec = rollout.spec
    if not rollout.watching:
        return False
    if decision == "canary_advanced":
        stage = sum(1 for share in spec.stages if share <= (traffic_share or 0.0) + 1e-9) - 1
        if stage <= spec.stage:
            return False
        spec.stage, spec.stage_started_at, spec.pending = stage, now, None
        spec.stage_canary_votes, spec.stage_production_votes = rollout.counts()
        return True
    spec.decision, spec.decided_at, spec.reason, spec.pending = decision, now, reason, None
    return True


# -- status ----------------------------------------------------------------------------------


def status(rollout: Rollout, policy: RolloutPolicy, now: float) -> dict[str, Any]:
    """A rollout for /status and the ops page: stage and share, each arm's n and mean, the
    interval, and the distance to the next decision (votes still needed per arm this stage, the
    lower bound's distance from -margin, time left in the stage)."""
    spec = rollout.spec
    state = assess(rollout, policy, now)
    interval = state.interval
    if spec.decision is None:
        share = spec.stages[spec.stage]
    else:
        share = 1.0 if spec.decision == "promoted" else 0.0
    last = spec.stage + 1 >= len(spec.stages)
    return {
        **asdict(spec),
        "state": spec.decision or "canary",
        "traffic_share": share,
        "canary": {
            "version": spec.canary_version,
            "n": interval.n_new,
            "mean": interval.mean_new,
            "n_stage": state.stage_canary,
        },
        "production": {
            "version": spec.production_version,
            "n": interval.n_old,
            "mean": interval.mean_old,
            "n_stage": state.stage_production,
        },
        "difference": interval.difference,
        "lower": interval.lower,
        "upper": interval.upper,
        "confidence": policy.confidence,
        "needed_canary": max(0, policy.min_live_examples - state.stage_canary),
        "needed_production": max(0, policy.min_live_examples - state.stage_production),
        "lower_above_margin": interval.lower + policy.margin,  # > 0: not worse beyond the margin
        "worse_beyond_doubt": state.worse,
        "ready_to_advance": spec.decision is None and state.ready and not state.worse,
        "next_step": "promote" if last else "advance",
        "stage_time_left_s": max(0.0, policy.max_stage_duration.total_seconds() - state.stage_elapsed_s)
        if spec.decision is None
        else None,
    }
