"""`python bench/ingest.py` (the README's ingest benchmark) runs every section but the GEPA job's
end to end at toy sizes, as its own process on its own embedded broker, and prints each
acceptance line: the bench is checked for breakage here, never for its figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_the_ingest_bench_runs_every_section_at_toy_sizes() -> None:
    command = [sys.executable, "bench/ingest.py", "--sections", "abcdfghij", "--repeat", "1"]
    command += ["--events", "3000", "--restart-facts", "2000", "--rss-events", "4000"]
    command += ["--latency-prompts", "4", "--latency-load", "200"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    acceptance = result.stdout.split("\nacceptance\n", 1)[1]
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
        assert line in acceptance, result.stdout
    assert "(2,000 recovered)" in result.stdout  # f) read back every fact it wrote
