"""Error rates and cost of the staged rollout's rule (handlers/rollout.py), simulated on its real code.

Each run: a stream of rated traces; each is served by the canary with probability = the current
stage's share (5 %, 25 %, 50 %), else by production, and rated from that arm's five-point
distribution (bench/guard.py's `rating_probabilities`: poor/fair/good/excellent = 0/.5/.75/1,
maximum-entropy at the arm's mean). After every rating the rule's look schedule
(`rollout.look_key`) says whether a look is due; a due look computes the bounds over all votes
since the start (`guard.difference_bounds`, batched over runs) and applies the rule's thresholds
(`rollout.signals`): abort when worse beyond doubt, else advance (promote after the last stage)
when ready. The run ends at a decision or at `--cap` rated traces (undecided). The clock is not
simulated: `max_stage_duration` never fires here (tests/unit/handlers/test_rollout.py covers it).

Scenarios (production's mean .85) and acceptance targets:
- equal versions                                -> aborted <= 5 %
- canary 10 points worse                        -> aborted before passing the 25 % share >= 90 %
- canary 10 points better                       -> fully rolled out >= 95 %
- equal, both arms 5 points down from the start -> aborted <= 5 %; beside it the live guard's
  rollback rate on the same drift (bench/guard.py `simulate`: the replaced version's window at
  .85, the new version's ratings at .80).

The cost: a real `Rollout` fed votes one at a time (`add` then `look`, manual mode at the first
stage so it never decides), microseconds per rating against one `guard.compare`.

    python bench/rollout.py                 # 400 runs a scenario, cap 20,000 rated traces

Measured (400 runs, cap 20,000; 2 shared cores; ~40 s in all):

    scenario                  aborted  rolled out  aborted <=25%  undecided  median n   time  target
    equal                        1.0%       99.0%           1.0%       0.0%      7488     4s  aborted <= 5%: PASS
    canary 10 worse            100.0%        0.0%         100.0%       0.0%       912     1s  aborted <=25% >= 90%: PASS
    canary 10 better             0.0%      100.0%           0.0%       0.0%      2284     2s  rolled out >= 95%: PASS
    equal, both drift -5         1.8%       92.5%           1.8%       5.8%      9783     4s  aborted <= 5%: PASS
      live guard, same drift    82.2% rolled back (window at .85, new version at .80; 400 runs x 2,000 ratings)    27s
    cost over 1,000 ratings (add + look, 38 looks): 12.2 us a rating; guard.compare 170 us: ratio 0.071
    cost over 20,000 ratings (add + look, 101 looks): 5.0 us a rating; guard.compare 184 us: ratio 0.027

With the guard's product alone (marginal_weight 0, the commit before handlers/rollout.py's
MARGINAL_WEIGHT) equal canaries were as rarely aborted but almost never rolled out: at a 5 %
share production's ~19x larger sample, its wealth decaying at its true mean, widened the
canary's side of the interval (97 % of 100 equal canaries still undecided at 100,000 rated traces):

    scenario                  aborted  rolled out  aborted <=25%  undecided  median n   time  target
    equal                        1.0%        0.2%           1.0%      98.8%      3513     6s  aborted <= 5%: PASS
    canary 10 worse            100.0%        0.0%         100.0%       0.0%       894     1s  aborted <=25% >= 90%: PASS
    canary 10 better             0.0%      100.0%           0.0%       0.0%      3560     5s  rolled out >= 95%: PASS
    equal, both drift -5         2.0%       21.0%           2.0%      77.0%     12199     9s  aborted <= 5%: PASS

Cost: the daemon ingests ~11,100 events/s (README), ~90 us an event, so staying >= 0.8x as fast
on a rated event under rollout leaves ~22 us for the rollout's share (besides its vote's table
write, which the live guard pays too). A rating costs ~5-6 us in steady state and ~12-13 us averaged
over a rollout's first 1,000 ratings (the schedule is dense at first), against ~130-270 us for
one full look (`guard.compare`; the spread is the shared machine's).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.guard import MODELS, rating_probabilities, simulate  # noqa: E402
from handlers.guard import Vote, compare, difference_bounds  # noqa: E402
from handlers.rollout import MARGINAL_WEIGHT, Rollout, RolloutSpec, look, look_key, signals  # noqa: E402
from schemas.config import GuardPolicy, PromotionPolicy, RolloutPolicy  # noqa: E402

VALUES = MODELS["five_point"]
PRODUCTION_MEAN = 0.85
UNDECIDED, PROMOTED, ABORTED = 0, 1, -1


@dataclass(frozen=True, slots=True)
class Outcome:
    aborted: float
    promoted: float
    aborted_by_25: float  # aborted before the canary passed the 25 % share
    undecided: float
    median_ratings: float | None  # rated traces (both arms) to the decision, decided runs


def run(
    canary_mean: float,
    production_mean: float,
    runs: int,
    cap: int,
    policy: RolloutPolicy,
    *,
    seed: int = 0,
    chunk: int = 500,
) -> Outcome:
    """`runs` rollouts in lockstep, one rated trace a step, the rule at its look schedule."""
    rng = np.random.default_rng(seed)
    p_canary = rating_probabilities(VALUES, canary_mean)
    p_production = rating_probabilities(VALUES, production_mean)
    shares = np.array(policy.stages)
    passed_25 = int(np.searchsorted(shares, 0.25, side="right"))  # stages at or below 25 %
    stage = np.zeros(runs, dtype=int)
    outcome = np.full(runs, UNDECIDED)
    decided_at = np.zeros(runs, dtype=int)
    aborted_stage = np.full(runs, -1)
    counts = np.zeros((runs, 2, VALUES.size))  # arm 0 canary, 1 production
    n = np.zeros((runs, 2), dtype=int)
    stage_start = np.zeros((runs, 2), dtype=int)
    looked = np.full(runs, -1)
    for first in range(0, cap, chunk):
        if not (outcome == UNDECIDED).any():
            break
        steps = min(chunk, cap - first)
        serve = rng.random((runs, steps))
        draw_canary = rng.choice(VALUES.size, size=(runs, steps), p=p_canary)
        draw_production = rng.choice(VALUES.size, size=(runs, steps), p=p_production)
        for t in range(steps):
            live = np.flatnonzero(outcome == UNDECIDED)
            if live.size == 0:
                break
            canary = serve[live, t] < shares[stage[live]]
            arm = np.where(canary, 0, 1)
            value = np.where(canary, draw_canary[live, t], draw_production[live, t])
            counts[live, arm, value] += 1
            n[live, arm] += 1
            new = n[live] - stage_start[live]
            key = look_key(n[live, 0], n[live, 1], new[:, 0], new[:, 1], policy.min_live_examples)
            due = key != looked[live]
            looked[live] = key
            if not due.any():
                continue
            at = live[due]
            lower, upper = difference_bounds(
                VALUES, counts[at, 0], counts[at, 1], policy.confidence, MARGINAL_WEIGHT
            )
            worse, ready = signals(lower, upper, n[at, 0], n[at, 1], new[due, 0], new[due, 1], policy)
            abort = at[worse]
            outcome[abort], decided_at[abort], aborted_stage[abort] = ABORTED, first + t + 1, stage[abort]
            forward = at[~worse & ready]
            last = stage[forward] + 1 >= shares.size
            promote, advance = forward[last], forward[~last]
            outcome[promote], decided_at[promote] = PROMOTED, first + t + 1
            stage[advance] += 1
            stage_start[advance] = n[advance]
    decided = decided_at[outcome != UNDECIDED]
    return Outcome(
        aborted=float(np.mean(outcome == ABORTED)),
        promoted=float(np.mean(outcome == PROMOTED)),
        aborted_by_25=float(np.mean((outcome == ABORTED) & (aborted_stage < passed_25))),
        undecided=float(np.mean(outcome == UNDECIDED)),
        median_ratings=float(np.median(decided)) if decided.size else None,
    )


def cost(ratings: int, policy: RolloutPolicy, seed: int = 0) -> tuple[float, int, float]:
    """(us per rating for `add` + `look`, looks taken, us per `guard.compare`) on a real Rollout:
    equal arms at the first stage's share, manual mode so the rule never decides."""
    rng = np.random.default_rng(seed)
    p = rating_probabilities(VALUES, PRODUCTION_MEAN)
    promotion = PromotionPolicy(mode="manual", rollout=policy)
    rollout = Rollout(RolloutSpec.start("bench", 0.0, 2, 1, promotion))
    share = policy.stages[0]
    versions = np.where(rng.random(ratings) < share, 2, 1).tolist()
    scores = VALUES[rng.choice(VALUES.size, size=ratings, p=p)].tolist()
    looks = 0
    started = time.perf_counter()
    for i, (version, score) in enumerate(zip(versions, scores)):
        rollout.add(Vote(f"t{i}", "user", version, score))
        before = rollout._looked
        look(rollout, policy, 1.0)
        looks += rollout._looked != before
    per_rating = (time.perf_counter() - started) / ratings * 1e6
    canary, production = Counter(rollout.canary), Counter(rollout.production)
    repeats = 300
    started = time.perf_counter()
    for _ in range(repeats):
        compare(canary, production, policy.confidence, MARGINAL_WEIGHT)
    return per_rating, looks, (time.perf_counter() - started) / repeats * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument(
        "--cap", type=int, default=20_000, help="rated traces per run before it counts undecided"
    )
    parser.add_argument("--guard-runs", type=int, default=400, help="runs of the live guard on the drift")
    parser.add_argument("--guard-ratings", type=int, default=2000, help="ratings per guard run")
    args = parser.parse_args()
    policy = RolloutPolicy()
    print(
        f"rollout: stages {[f'{s:.0%}' for s in policy.stages]}, confidence {policy.confidence}, margin "
        f"{policy.margin}, min_live_examples {policy.min_live_examples} per arm per stage; {args.runs} runs, "
        f"cap {args.cap:,} rated traces; five-point ratings, production's mean {PRODUCTION_MEAN}"
    )
    print(
        f"{'scenario':<24} {'aborted':>8} {'rolled out':>11} {'aborted <=25%':>14} {'undecided':>10} "
        f"{'median n':>9} {'time':>6}  target"
    )
    scenarios = [
        ("equal", 0.85, 0.85, "aborted <= 5%", lambda o: o.aborted <= 0.05),
        ("canary 10 worse", 0.75, 0.85, "aborted <=25% >= 90%", lambda o: o.aborted_by_25 >= 0.90),
        ("canary 10 better", 0.95, 0.85, "rolled out >= 95%", lambda o: o.promoted >= 0.95),
        ("equal, both drift -5", 0.80, 0.80, "aborted <= 5%", lambda o: o.aborted <= 0.05),
    ]
    for seed, (name, canary_mean, production_mean, target, passes) in enumerate(scenarios):
        started = time.perf_counter()
        o = run(canary_mean, production_mean, args.runs, args.cap, policy, seed=seed)
        median = f"{o.median_ratings:.0f}" if o.median_ratings is not None else "-"
        print(
            f"{name:<24} {o.aborted:8.1%} {o.promoted:11.1%} {o.aborted_by_25:14.1%} {o.undecided:10.1%} "
            f"{median:>9} {time.perf_counter() - started:5.0f}s  {target}: {'PASS' if passes(o) else 'FAIL'}",
            flush=True,
        )
    started = time.perf_counter()
    guard = simulate(-0.05, args.guard_runs, args.guard_ratings, GuardPolicy(), old_mean=PRODUCTION_MEAN)
    print(
        f"{'  live guard, same drift':<24} {guard.ever_rolled_back:8.1%} rolled back (window at .85, new version "
        f"at .80; {args.guard_runs} runs x {args.guard_ratings:,} ratings) {time.perf_counter() - started:5.0f}s",
        flush=True,
    )
    for ratings in (1_000, 20_000):
        per_rating, looks, per_compare = cost(ratings, policy)
        print(
            f"cost over {ratings:,} ratings (add + look, {looks} looks): {per_rating:.1f} us a rating; "
            f"guard.compare {per_compare:.0f} us: ratio {per_rating / per_compare:.3f}"
        )


if __name__ == "__main__":
    main()
