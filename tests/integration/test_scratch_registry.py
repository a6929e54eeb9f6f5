"""The scratch store a job's optimize stage registers trial versions in: a process SIGKILLed while
it builds the store (MLflow's schema migration, then the seeded baseline) leaves nothing a later
attempt trips over — the next opening finds a complete store, built again if need be."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.jobs.run_dir import RunDir

pytestmark = pytest.mark.integration

# open the scratch store (building it if it is not there) and print what it holds
OPEN_SCRATCH = """
import json, sys
from pathlib import Path
import mlflow
from daemon import prompt_versions
baseline = prompt_versions.Version("router", 3, "Route {{ticket}}", {})
with prompt_versions.scratch_registry(Path(sys.argv[1]), baseline):
    production = prompt_versions.production("router")
    print(json.dumps([[v.version for v in prompt_versions.versions("router")], production.version, production.template]))
"""
KILLS = 6


def _open_scratch(db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", OPEN_SCRATCH, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )


def _into_build(db: Path, kill_after_s: float | None) -> float:
    """Open the store in a process; SIGKILL it `kill_after_s` after the store's first file appears
    (None: let it finish). Returns the seconds from that file to the process's end."""
    db.parent.mkdir()
    process = _open_scratch(db)
    files = (db, db.with_name(db.name + ".partial"))
    while process.poll() is None and not any(f.exists() for f in files):
        time.sleep(0.002)
    appeared = time.monotonic()
    if kill_after_s is not None:
        time.sleep(kill_after_s)
        process.kill()
    process.communicate(timeout=120)
    return time.monotonic() - appeared


def test_a_kill_anywhere_in_the_scratch_store_build_leaves_a_store_the_next_attempt_opens(
    tmp_path: Path,
) -> None:
    """A reference build measures the build (~2 s here: MLflow's migration, then the seeded
    baseline); `KILLS` kills spread evenly over it, each followed by a clean opening."""
    build_s = _into_build(RunDir(tmp_path / "reference").scratch_db, None)
    for i in range(1, KILLS + 1):
        at = build_s * i / (KILLS + 1)
        db = RunDir(tmp_path / f"kill-{i}").scratch_db
        _into_build(db, at)
        reopened = _open_scratch(db)
        out, err = reopened.communicate(timeout=120)
        assert reopened.returncode == 0, (
            f"killed {at:.2f} s into a {build_s:.2f} s build, then: {err[-3000:]}"
        )
        assert json.loads(out.splitlines()[-1]) == [[1, 2, 3], 3, "Route {{ticket}}"], out
