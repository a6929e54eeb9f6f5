"""The kill-anywhere sweep: one job per kill point, its process SIGKILLed that long after it was
spawned, each resumed by the daemon to completion; `problems` lists what any run ended with
that a resumed job must not (used by `tests/e2e/test_kill_anywhere.py` and `bench/kill_anywhere.py`).

1. two reference jobs (never killed), one after the other, measure the life of a job process in
   its two phases: the process starting (spawn to its first stage report, `plan`: mostly imports)
   and its work (to `result.json`); each phase is the shorter of the two, since the first job
   after a fresh install can start several times slower (cold disk and import caches: 30 s
   against 5 s measured) and a point past a job's real life kills nothing;
2. the kill points are spread evenly over that life: point i of n at life * i / (n + 1);
3. every kill prompt is fed at once; each job's first process is killed at its point, timed from
   its spawn (seen within `POLL_S`) if the point falls in the start — or at its first stage
   report if its start ended sooner — else from its own first stage report (scaled by
   `WORK_SCALE`), so the start's jitter (5-12 s on a loaded 2-core machine) does not push the work
   phase's points elsewhere; the stage it stood at and the scratch store's state are noted;
4. once every job has ended, each must hold what one uninterrupted job would have left.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from daemon.jobs.run_dir import RunDir
from tests.daemon_harness import QUICK_JOIN_ENV, Daemon, job_processes, produce, read_topic
from tests.e2e.loop_helpers import register_seed, sme_feed, wait_for_events, write_policies

POLL_S = 0.01
WORK_SCALE = 0.8
"""A work-phase point is timed at this share of its offset from the first stage report: a warm job
works faster than the references (3.7 and 3.2 s measured, then ~1.5 s for a later job)."""
REFERENCES = ("sweep_reference_a", "sweep_reference_b")
# small windows and budgets: a job's life is mostly its process starting and GEPA's first rounds
SWEEP_POLICY: dict[str, Any] = {"n": 40, "calls": 40}


@dataclass
class Kill:
    """One kill point and where it landed."""

    prompt: str
    offset_s: float
    pid: int | None = None
    stage: str = ""  # the job's stage when it was killed ("" if it ended first)
    scratch: str = ""  # the scratch store then: absent, partial (being built) or complete


@dataclass(frozen=True)
class Life:
    """A job process's life in its two phases (seconds)."""

    start_s: float  # spawn to its first stage report
    work_s: float  # first stage report to `result.json`

    @property
    def total_s(self) -> float:
        return self.start_s + self.work_s


@dataclass
class Sweep:
    life: Life
    kills: list[Kill]
    optimizations: list[Any] = field(default_factory=list)
    registered: list[Any] = field(default_factory=list)
    promotions: list[Any] = field(default_factory=list)
    state_dir: Path = Path()
    tracking_uri: str = ""


def kill_points(life_s: float, n: int) -> list[float]:
    """n moments spread evenly over a job's life, neither at its spawn nor at its end."""
    return [round(life_s * i / (n + 1), 3) for i in range(1, n + 1)]


def run_sweep(
    bootstrap: str,
    workdir: Path,
    n: int,
    *,
    concurrency: int = 1,
    report: Callable[[str], None] = lambda line: None,
) -> Sweep:
    """Steps 1–3 of the module docstring with one daemon (`--role all`, `concurrency` job slots)."""
    names = [f"sweep_{i:03d}" for i in range(n)]
    daemon = Daemon(
        bootstrap,
        write_policies(workdir / "policy.yaml", {name: SWEEP_POLICY for name in [*REFERENCES, *names]}),
        workdir,
        env={**QUICK_JOIN_ENV, "GEPA_STREAM_MAX_CONCURRENT_JOBS": str(concurrency)},
    )
    tracking = daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"]
    for name in [*REFERENCES, *names]:
        register_seed(tracking, name)
    state = workdir / "state"
    daemon.start()
    try:
        lives = []
        for reference in REFERENCES:
            produce(bootstrap, sme_feed(daemon.topics, reference, SWEEP_POLICY["n"]))
            lives.append(_reference_life(daemon, state, reference))
            report(f"{reference}: {lives[-1].start_s:.2f} s starting, then {lives[-1].work_s:.2f} s of work")
        life = Life(min(x.start_s for x in lives), min(x.work_s for x in lives))
        kills = [Kill(name, offset) for name, offset in zip(names, kill_points(life.total_s, n), strict=True)]
        produce(bootstrap, [r for name in names for r in sme_feed(daemon.topics, name, SWEEP_POLICY["n"])])
        _kill_each(daemon, state, kills, life, report)
        optimizations = wait_for_events(
            daemon,
            daemon.topics.optimizations,
            lambda evs: (
                {e.data.prompt for e in evs if e.data.status in ("completed", "failed")}
                >= {*REFERENCES, *names}
            ),
            timeout=120.0 + 4 * life.total_s * n / concurrency,
            fail_on_failed_job=False,
        )
        return Sweep(
            life,
            kills,
            optimizations,
            read_topic(bootstrap, daemon.topics.prompts),
            read_topic(bootstrap, daemon.topics.promotions),
            state,
            tracking,
        )
    finally:
        daemon.stop()


class _RunDirFinder:
    """Each call: the run directories under `state`, by prompt. A loop polling every `POLL_S` calls
    it; each `job.json` is read once (a run directory's prompt never changes), so the poll leaves
    the CPU to the job it times."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.found: dict[str, Path] = {}
        self._read: set[Path] = set()

    def __call__(self) -> dict[str, Path]:
        for spec in (self.state / "jobs").glob("*/job.json"):
            if spec.parent not in self._read:
                self.found[json.loads(spec.read_text())["prompt"]] = spec.parent
                self._read.add(spec.parent)
        return self.found


def _ledger(run_dir: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((run_dir / "attempts.json").read_text())["attempts"])
    except (OSError, ValueError, KeyError):
        return []


def _reference_life(daemon: Daemon, state: Path, reference: str) -> Life:
    """A reference job's phases: spawn (first seen in the ledger), first stage report, `result.json`."""
    deadline = time.monotonic() + 300
    spawned: float | None = None
    working: float | None = None
    run_dirs = _RunDirFinder(state)
    while time.monotonic() < deadline:
        run_dir = run_dirs().get(reference)
        if run_dir is not None:
            ledger = _ledger(run_dir)
            if spawned is None and ledger and ledger[0].get("pid"):
                spawned = time.monotonic()
            if spawned is not None and working is None and (run_dir / "progress.json").exists():
                working = time.monotonic()
            if spawned is not None and working is not None and (run_dir / "result.json").exists():
                return Life(working - spawned, time.monotonic() - working)
        assert daemon.process is not None and daemon.process.poll() is None, daemon.log.read_text()[-4000:]
        time.sleep(POLL_S)
    raise AssertionError(f"the reference job {reference} did not end within 300 s")


def _kill_each(
    daemon: Daemon, state: Path, kills: list[Kill], life: Life, report: Callable[[str], None]
) -> None:
    """SIGKILL each job's first process at its point (step 3 of the module docstring)."""
    pending = {k.prompt: k for k in kills}
    spawned: dict[str, float] = {}
    working: dict[str, float] = {}
    deadline = time.monotonic() + 300 + sum(k.offset_s for k in kills) * 4
    run_dirs = _RunDirFinder(state)
    while pending:
        assert time.monotonic() < deadline, f"jobs never spawned: {sorted(pending)}"
        assert daemon.process is not None and daemon.process.poll() is None, daemon.log.read_text()[-4000:]
        dirs = run_dirs()
        for prompt, kill in list(pending.items()):
            run_dir = dirs.get(prompt)
            ledger = _ledger(run_dir) if run_dir is not None else []
            if run_dir is None or not ledger or not ledger[0].get("pid"):
                continue
            now = time.monotonic()
            spawned.setdefault(prompt, now)
            if prompt not in working and (run_dir / "progress.json").exists():
                working[prompt] = now
            if kill.offset_s < life.start_s:  # or at once when its start ended sooner than the reference's
                due = now - spawned[prompt] >= kill.offset_s or prompt in working
            else:
                due = prompt in working and now - working[prompt] >= WORK_SCALE * (
                    kill.offset_s - life.start_s
                )
            if (run_dir / "result.json").exists() or ledger[0].get("ended"):
                report(f"{prompt}: ended before its kill point {kill.offset_s:.2f} s")
                del pending[prompt]
            elif due:
                kill.pid, kill.stage, kill.scratch = ledger[0]["pid"], _stage(run_dir), _scratch(run_dir)
                os.kill(kill.pid, signal.SIGKILL)
                report(
                    f"{prompt}: killed at {kill.offset_s:.2f} s, stage {kill.stage}, scratch {kill.scratch}"
                )
                del pending[prompt]
        time.sleep(POLL_S)


def _stage(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / "progress.json").read_text())["stage"])
    except (OSError, ValueError, KeyError):
        return "spawned"  # before the process reported its first stage


def _scratch(run_dir: Path) -> str:
    db = RunDir(run_dir).scratch_db
    if db.with_name(f"{db.name}.partial").exists():
        return "partial"
    return "complete" if db.exists() else "absent"


def problems(sweep: Sweep) -> list[str]:
    """What the sweep's runs ended with that one uninterrupted job would not have: for each
    prompt exactly one `completed` (no `failed`), one version tagged with its request id (v2),
    one `prompt.registered` (v2, parent 1), one promotion decision 1 -> 2 with `production` on 2
    if it is `promoted` (else still on 1: the gate may find a small held-out set inconclusive,
    killed or not), one `started`, a `retrying` for its kill, and no job process left."""
    mlflow.set_tracking_uri(sweep.tracking_uri)
    client = MlflowClient()
    found = []
    dirs = _RunDirFinder(sweep.state_dir)()
    for kill in sweep.kills:
        prompt = kill.prompt
        where = f"{prompt} (killed at {kill.offset_s:.2f} s, stage {kill.stage or '-'}, scratch {kill.scratch or '-'})"
        mine = [e.data for e in sweep.optimizations if e.data.prompt == prompt]
        ends = [d for d in mine if d.status in ("completed", "failed")]
        if [d.status for d in ends] != ["completed"]:
            found.append(f"{where}: ended {[(d.status, d.error) for d in ends]}")
            continue
        request_id = ends[0].request_id
        started = [d for d in mine if d.status == "started"]
        retrying = [d for d in mine if d.status == "retrying"]
        if len(started) != 1 or (kill.pid is not None and len(retrying) != 1):
            found.append(f"{where}: {len(started)} started, {len(retrying)} retrying events")
        tagged = [
            int(v.version)
            for v in client.search_prompt_versions(prompt)
            if v.tags.get("gepa_stream.request_id") == request_id
        ]
        announced = [
            (e.data.version, e.data.parent_version) for e in sweep.registered if e.data.prompt == prompt
        ]
        decided = [
            (e.data.decision, e.data.from_version, e.data.to_version)
            for e in sweep.promotions
            if e.data.prompt == prompt
        ]
        production = int(
            mlflow.genai.load_prompt(f"prompts:/{prompt}@production", cache_ttl_seconds=0).version
        )
        promoted = [d for d in decided if d[0] == "promoted"]
        if (tagged, announced, len(decided), decided[0][1:] if decided else None, production) != (
            [2],
            [(2, 1)],
            1,
            (1, 2),
            2 if promoted else 1,
        ):
            found.append(
                f"{where}: versions tagged {tagged}, registered {announced}, promotions {decided}, production v{production}"
            )
        left = job_processes(dirs[prompt])
        if left:
            found.append(f"{where}: job processes left running: {left}")
    return found
