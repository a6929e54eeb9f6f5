"""Benchmark: the kill-anywhere sweep, fine-grained. One job per kill point, its process
SIGKILLed at moments spread evenly over a job's life (spawn to result, measured by a reference
job in the same run; see `tests/e2e/kill_sweep.py` for how the points are timed), each resumed
by the daemon. Prints where each kill landed (stage, the scratch store's state) and how each run
ended, then the error rate: runs that did not end as one uninterrupted job would (one version,
one announcement, one promotion decision 1 -> 2 with `production` where it says, one `started`,
a `retrying`, no process left).

    .venv/bin/python bench/kill_anywhere.py [--kills 45]

45 kills over a ~9 s life are ~0.2 s apart: a stage that lasts longer than that is hit (the
process start, the plan, the backend and its scratch store build of ~1 s, GEPA, the held-out
evaluation); stages of a few ms (register, gate, promote) are hit by the held-stage drills of
`tests/e2e/test_job_resume.py` instead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from schemas.third_parties import quiet_third_parties  # noqa: E402

quiet_third_parties()

from daemon.broker import EmbeddedBroker  # noqa: E402
from tests.e2e.kill_sweep import problems, run_sweep  # noqa: E402

START = time.monotonic()


def say(line: str) -> None:
    print(f"[{time.monotonic() - START:6.0f}s] {line}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=45)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-kill-anywhere-"))
    with EmbeddedBroker() as broker:
        sweep = run_sweep(broker.bootstrap_servers, workdir, args.kills, report=say)
    found = problems(sweep)
    killed = [k for k in sweep.kills if k.pid is not None]
    stages = Counter(f"{k.stage} (scratch {k.scratch})" for k in killed)
    life = sweep.life
    say(
        f"job life {life.total_s:.2f} s ({life.start_s:.2f} s starting, {life.work_s:.2f} s working): "
        f"a kill every {life.total_s / (args.kills + 1):.2f} s; {len(killed)} of {args.kills} landed before the job ended"
    )
    for stage, count in sorted(stages.items(), key=lambda item: -item[1]):
        say(f"  {count:3d} kills at {stage}")
    for line in found:
        say(f"  WRONG: {line}")
    decisions = Counter(e.data.decision for e in sweep.promotions if e.data.prompt != "sweep_reference")
    say(f"decisions: {dict(decisions)}")
    say(
        f"error rate: {len(found)} of {len(killed)} killed runs did not resume to one version, one announcement, one decision"
    )
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
