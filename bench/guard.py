"""Error rates of the live guard (handlers/guard.py), simulated on its real code.

Each run: the replaced version's last window (`--reference` rated traces, default 500 = the
default window) is the reference; the new version's ratings then arrive one at a time and
the guard computes its bounds after every one, as the daemon does. The run is not stopped by
a decision, so "rolled back" is the anytime error over every look up to `--ratings`.

Rating models (a version is described by its mean rating only):
- `five_point`: SME labels poor/fair/good/excellent = 0/.5/.75/1 with the maximum-entropy
  distribution of that mean (the least-assuming one; sd ~0.22 at mean .85, ~0.29 at .75);
- `thumbs`: up/down = 1/0 (sd ~0.4-0.5: the noisiest ratings there are).

Acceptance targets: equal -> rolled back in <= 5 % of 400 runs x 2,000 ratings; 10 points
worse -> rolled back within 200 ratings in >= 90 %; 10 points better -> confirmed, never
rolled back.

    python bench/guard.py                                  # 400 x 2,000, five-point, mean .85
    python bench/guard.py --old-mean 0.75 --model thumbs   # other scenarios
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import brentq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handlers.guard import difference_bounds  # noqa: E402
from schemas.config import GuardPolicy  # noqa: E402

MODELS = {"five_point": np.array([0.0, 0.5, 0.75, 1.0]), "thumbs": np.array([0.0, 1.0])}


def rating_probabilities(values: np.ndarray, mean: float) -> np.ndarray:
    """The maximum-entropy distribution on `values` with this mean (exponential tilting)."""
    tilt = brentq(
        lambda t: float(values @ np.exp(t * values) / np.exp(t * values).sum()) - mean, -200.0, 200.0
    )
    weights = np.exp(tilt * values)
    return weights / weights.sum()


@dataclass(frozen=True, slots=True)
class Rates:
    ever_rolled_back: float
    rolled_back_within_200: float
    confirmed: float
    confirmed_before_any_rollback: float
    median_first_decision: float | None


def simulate(
    shift: float,
    runs: int,
    ratings: int,
    policy: GuardPolicy,
    *,
    old_mean: float = 0.85,
    model: str = "five_point",
    reference: int = 500,
    seed: int = 0,
    batch: int = 100,
) -> Rates:
    """Watch `runs` new versions whose mean is old_mean + shift; the guard's bounds after every rating."""
    rng = np.random.default_rng(seed)
    values = MODELS[model]
    p_old, p_new = rating_probabilities(values, old_mean), rating_probabilities(values, old_mean + shift)
    rollback_at = np.full(runs, -1)
    confirm_at = np.full(runs, -1)
    for start in range(0, runs, batch):
        size = min(batch, runs - start)
        counts_old = rng.multinomial(reference, p_old, size=size).astype(float)
        draws = rng.choice(len(values), size=(size, ratings), p=p_new)
        counts_new = np.zeros((size, len(values)))
        rb, cf = rollback_at[start : start + size], confirm_at[start : start + size]
        for n in range(1, ratings + 1):
            counts_new[np.arange(size), draws[:, n - 1]] += 1
            lower, upper = difference_bounds(values, counts_new, counts_old, policy.confidence)
            rb[(rb < 0) & (upper < 0)] = n
            if n >= policy.min_live_examples:
                cf[(cf < 0) & (lower > -policy.margin)] = n
    first = np.where(rollback_at > 0, rollback_at, np.where(confirm_at > 0, confirm_at, np.inf))
    decided = first[np.isfinite(first)]
    return Rates(
        ever_rolled_back=float(np.mean(rollback_at > 0)),
        rolled_back_within_200=float(np.mean((rollback_at > 0) & (rollback_at <= 200))),
        confirmed=float(np.mean(confirm_at > 0)),
        confirmed_before_any_rollback=float(
            np.mean((confirm_at > 0) & ((rollback_at < 0) | (confirm_at < rollback_at)))
        ),
        median_first_decision=float(np.median(decided)) if decided.size else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--ratings", type=int, default=2000)
    parser.add_argument(
        "--reference", type=int, default=500, help="rated traces of the replaced version (its window)"
    )
    parser.add_argument("--old-mean", type=float, default=0.85, help="mean rating of the replaced version")
    parser.add_argument("--model", choices=sorted(MODELS), default="five_point")
    parser.add_argument("--shifts", default="-0.10,0.0,0.10")
    args = parser.parse_args()
    policy = GuardPolicy()
    print(
        f"guard: confidence {policy.confidence}, margin {policy.margin}, min_live_examples {policy.min_live_examples}; "
        f"{args.runs} runs x {args.ratings} ratings; {args.model} ratings, replaced version's mean {args.old_mean}, "
        f"reference window {args.reference} ratings"
    )
    print(
        f"{'shift':>6} {'rolled back':>12} {'  within 200':>12} {'confirmed':>10} {'first decision (median n)':>26} {'time':>7}"
    )
    for shift in (float(s) for s in args.shifts.split(",")):
        started = time.perf_counter()
        rates = simulate(
            shift,
            args.runs,
            args.ratings,
            policy,
            old_mean=args.old_mean,
            model=args.model,
            reference=args.reference,
        )
        print(
            f"{shift:+6.2f} {rates.ever_rolled_back:12.1%} {rates.rolled_back_within_200:12.1%} {rates.confirmed:10.1%} "
            f"{rates.median_first_decision!s:>26} {time.perf_counter() - started:6.0f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
