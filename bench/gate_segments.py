"""Error rates of the promotion gate's segment rule (handlers/promotion.py `gate`, its real code).

Held-out examples in four equal segments, binary per-example scores, the baseline right on 70 %
of every segment. Each run draws the candidate's scores from the baseline's:
- `harm`: +10 points on average, but it breaks a quarter of one segment's examples (-25 points
  there) and fixes failures elsewhere (+21.7 points in the other three);
- `a/a`: the candidate fixes 10 % of the failures and breaks 4.3 % of the successes (same mean);
- `better`: +10 points in every segment (fixes a third of the failures, breaks nothing).
Targets at 400 held-out examples (200 runs a case): `harm` rejected >= 95 %, naming the harmed
segment; `a/a` promoted <= 5 % (segments must not raise it: printed beside the gate without
segments); `better` promoted >= 90 %. The same cases at 100 and 200 examples show how large a
harm a smaller window can catch.

    python bench/gate_segments.py [--runs 200] [--sizes 100,200,400]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handlers.promotion import gate  # noqa: E402
from schemas.config import PromotionPolicy, SegmentPolicy  # noqa: E402

SEGMENTS = ("de", "en", "fr", "es")
HARMED = "de"
BASE_RATE = 0.7
WITH_SEGMENTS = PromotionPolicy(segments=SegmentPolicy(by="attributes.language"))
WITHOUT = PromotionPolicy()


def draw(rng: np.random.Generator, n: int, case: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(baseline, candidate, segment labels) of one run: n examples, n/4 per segment."""
    labels = [SEGMENTS[i * len(SEGMENTS) // n] for i in range(n)]
    baseline = (rng.random(n) < BASE_RATE).astype(float)
    flips = rng.random(n)
    fix, brk = {"a/a": (0.1, 0.1 * 0.3 / 0.7), "better": (0.1 / 0.3, 0.0), "harm": (0.0, 0.0)}[case]
    if case == "harm":
        harmed = np.array([label == HARMED for label in labels])
        fix = np.where(harmed, 0.0, 0.2167 / 0.3)
        brk = np.where(harmed, 0.25 / 0.7, 0.0)
    candidate = np.where(baseline == 0, (flips < fix).astype(float), (flips >= brk).astype(float))
    return baseline, candidate, labels


def rates(case: str, n: int, runs: int, policy: PromotionPolicy) -> tuple[float, float]:
    """(promoted, rejected naming the harmed segment) over `runs` runs."""
    rng = np.random.default_rng(20261204 + n)
    promoted = named = 0
    for run in range(runs):
        baseline, candidate, labels = draw(rng, n, case)
        result = gate(baseline.tolist(), candidate.tolist(), policy, seed=run, segments=labels)
        promoted += result.decision == "promoted"
        named += result.decision == "rejected" and any(
            s.harmed and s.segment == HARMED for s in result.segments
        )
    return promoted / runs, named / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--sizes", default="100,200,400")
    args = parser.parse_args()
    print(
        f"gate: confidence {WITH_SEGMENTS.confidence}, min_improvement {WITH_SEGMENTS.min_improvement}, "
        f"segments of {SEGMENTS} (min_examples {WITH_SEGMENTS.segments.min_examples}); {args.runs} runs a case"
    )  # type: ignore[union-attr]
    print(f"{'n':>4} {'case':<7} {'promoted':>9} {'harm named':>11} {'w/o segments: promoted':>23}  target")
    for n in (int(x) for x in args.sizes.split(",")):
        for case, target in (
            ("harm", lambda p, named: named >= 0.95),
            ("a/a", lambda p, named: p <= 0.05),
            ("better", lambda p, named: p >= 0.90),
        ):
            started = time.perf_counter()
            promoted, named = rates(case, n, args.runs, WITH_SEGMENTS)
            plain, _ = rates(case, n, args.runs, WITHOUT)
            verdict = ("PASS" if target(promoted, named) else "FAIL") if n == 400 else "-"
            print(
                f"{n:>4} {case:<7} {promoted:9.1%} {named:11.1%} {plain:23.1%}  {verdict}  ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
