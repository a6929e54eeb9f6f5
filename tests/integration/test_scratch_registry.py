"""The scratch store a job's optimize stage registers trial versions in: a process SIGKILLed while
it builds the store (MLflow's schema migration, then the seeded baseline) leaves nothing a later
attempt trips over — the next opening finds a complete store, built again if need be."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.jobs.run_dir import RunDir

pytestmark = pytest.mark.integration

# Once imported (it prints "ready"), for each store path read on stdin: open the store (building it
# if it is not there) and print what it holds. The imports come before any path is given, so every
# process starts at once and a build is timed (and killed) alone, on an otherwise idle process.
OPEN_SCRATCH = """
import json, sys
from pathlib import Path
import mlflow
from daemon import prompt_versions
baseline = prompt_versions.Version("router", 3, "Route {{ticket}}", {})
print("ready", flush=True)
for line in sys.stdin:
    with prompt_versions.scratch_registry(Path(line.strip()), baseline):
        production = prompt_versions.production("router")
        print(json.dumps([[v.version for v in prompt_versions.versions("router")], production.version, production.template]), flush=True)
"""
KILLS = 6
OPENERS = 3
HOLDS = [[1, 2, 3], 3, "Route {{ticket}}"]


@dataclass(frozen=True)
class Scratch:
    """A process running `OPEN_SCRATCH`, and the log its stderr goes to."""

    process: subprocess.Popen[str]
    log: Path

    def stderr(self) -> str:
        """The end of what it wrote on stderr."""
        return self.log.read_text()[-3000:]


def _scratch_process(log: Path) -> Scratch:
    """A process running `OPEN_SCRATCH`, its stderr to `log` (not yet waited ready: see `_ready`)."""
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", OPEN_SCRATCH],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=Path(__file__).parents[2],
        )
    return Scratch(process, log)


def _ready(scratch: Scratch) -> None:
    assert scratch.process.stdout is not None
    line = scratch.process.stdout.readline()
    assert line.strip() == "ready", (line, scratch.stderr())


def _open(scratch: Scratch, db: Path) -> None:
    """Have the process open (or build) the store `db`."""
    assert scratch.process.stdin is not None
    scratch.process.stdin.write(f"{db}\n")
    scratch.process.stdin.flush()


def _into_build(scratch: Scratch, db: Path, kill_after_s: float | None) -> float:
    """Have an idle `OPEN_SCRATCH` process build the store `db`; SIGKILL it `kill_after_s` after the
    store's first file appears (None: let it finish, and check what it opened). Returns the seconds
    from that file to the build's end (what it opened printed, or the kill)."""
    db.parent.mkdir()
    _open(scratch, db)
    process = scratch.process
    files = (db, db.with_name(db.name + ".partial"))
    while process.poll() is None and not any(f.exists() for f in files):
        time.sleep(0.002)
    appeared = time.monotonic()
    if kill_after_s is None:
        _opened(scratch, db)
    else:
        time.sleep(kill_after_s)
        process.kill()
        process.communicate(timeout=120)
    return time.monotonic() - appeared


def _opened(scratch: Scratch, db: Path) -> None:
    """The process's answer for `db`: the baseline's versions and `production` on it."""
    assert scratch.process.stdout is not None
    line = scratch.process.stdout.readline()
    assert line, f"opening {db} failed: {scratch.stderr()}"
    assert json.loads(line) == HOLDS, line


def test_a_kill_anywhere_in_the_scratch_store_build_leaves_a_store_the_next_attempt_opens(
    tmp_path: Path,
) -> None:
    """A reference build measures the build (~2 s here: MLflow's migration, then the seeded
    baseline); `KILLS` kills spread evenly over it, each in its own process; then other processes
    (`OPENERS`, one of them the reference's builder) open each killed store, as a job's next attempt
    would: a build again, if the kill left none complete."""
    victims = [_scratch_process(tmp_path / f"victim-{i}.log") for i in range(KILLS)]
    openers = [_scratch_process(tmp_path / f"opener-{i}.log") for i in range(OPENERS)]
    try:
        for scratch in [*openers, *victims]:
            _ready(scratch)
        build_s = _into_build(openers[0], RunDir(tmp_path / "reference").scratch_db, None)
        killed = []
        for i, victim in enumerate(victims, 1):
            at = build_s * i / (KILLS + 1)
            db = RunDir(tmp_path / f"kill-{i}").scratch_db
            _into_build(victim, db, at)
            killed.append((at, db, openers[i % OPENERS]))
        for _, db, opener in killed:  # each opener takes its stores in turn; the openers at once
            _open(opener, db)
        for at, db, opener in killed:
            try:
                _opened(opener, db)
            except AssertionError as exc:
                raise AssertionError(f"killed {at:.2f} s into a {build_s:.2f} s build, then: {exc}") from None
    finally:
        for scratch in [*openers, *victims]:
            if scratch.process.poll() is None:
                scratch.process.kill()
            scratch.process.communicate(timeout=120)
