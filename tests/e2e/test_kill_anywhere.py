"""A job killed at any moment resumes: its process SIGKILLed at moments spread evenly over its
life, from spawn to result, each run resumed by the daemon to exactly what one uninterrupted job
leaves (see `tests/e2e/kill_sweep.py`). `KILLS` points, ~1.5-2 s apart over a ~9-12 s life (most of
it the process starting); `bench/kill_anywhere.py` runs the fine sweep (0.2 s apart), which
also lands inside the scratch store's build.

The reference jobs run one after the other, alone; the killed jobs two at a time (`CONCURRENCY`
job slots), so a killed job's resumed attempt runs beside the next one killed instead of after
them all: each kill is still timed from its own job's spawn or first stage report."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.kill_sweep import problems, run_sweep

pytestmark = pytest.mark.e2e

KILLS = 5
CONCURRENCY = 2


def test_a_job_killed_at_any_moment_resumes_to_one_version_one_announcement_one_promotion(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    lines: list[str] = []
    sweep = run_sweep(kafka_bootstrap, tmp_path, KILLS, concurrency=CONCURRENCY, report=lines.append)
    killed = [k for k in sweep.kills if k.pid is not None]
    assert len(killed) >= KILLS - 1, lines  # the last point may come after a job that ran faster
    assert problems(sweep) == [], lines
