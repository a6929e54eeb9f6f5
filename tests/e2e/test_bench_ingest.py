"""`python bench/ingest.py` (the README's ingest benchmark) runs every section but the GEPA job's
end to end at toy sizes, as its own process on its own embedded broker, and prints each
acceptance line: the bench is checked for breakage here, never for its figures.

Its sections run in two bench processes side by side (each with its own broker): most of a
section's time is its workers' start-up (imports, group join), not CPU. The bench's workers
read `GEPA_STREAM_*` settings like the daemon, so a shorter session timeout shortens each
worker's group join on the embedded broker (it holds a join for half of it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_harness import QUICK_JOIN_ENV

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TOY_SIZES = ["--repeat", "1", "--events", "3000", "--restart-facts", "2000", "--rss-events", "4000"]
TOY_SIZES += ["--latency-prompts", "4", "--latency-load", "200"]
SECTIONS = ("abcdfg", "hij")  # every section but e, split about evenly by time


def test_the_ingest_bench_runs_every_section_at_toy_sizes() -> None:
    benches = [
        subprocess.Popen(
            [sys.executable, "bench/ingest.py", "--sections", sections, *TOY_SIZES],
            cwd=ROOT,
            env={**os.environ, **QUICK_JOIN_ENV},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for sections in SECTIONS
    ]
    outputs = []
    try:
        for bench in benches:
            stdout, stderr = bench.communicate(timeout=600)
            assert bench.returncode == 0, stderr[-3000:]
            outputs.append(stdout)
    finally:
        for bench in benches:
            if bench.poll() is None:
                bench.kill()
                bench.wait()
    stdout = "\n".join(outputs)
    acceptance = "\n".join(output.split("\nacceptance\n", 1)[1] for output in outputs)
    for line in (
        "c / b = ",
        "d / c = ",
        "b / a = ",
        "restart to ready, 2,000 facts = ",
        "RSS 4,000 / 400 events = ",
        "trigger latency p99, idle = ",
        "trigger latency p99, beside ",
        "two workers / one = ",
        "rollout watched / unwatched = ",
    ):
        assert line in acceptance, stdout
    assert "(2,000 recovered)" in stdout  # f) read back every fact it wrote
