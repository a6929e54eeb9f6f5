"""A job's run directory (`<state dir>/jobs/<request id>/`): the one module that knows the names
of its files and how each is read and written. The runner and its job process share it, and a
resumed job (also one an older version started) reads what earlier ones wrote, so names and formats
never change. Who writes which file: docs/architecture.md, section 5.2."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, TypeAdapter

from daemon.jobs.spec import (
    Baseline,
    CandidateCheckpoint,
    HeldOut,
    JobResult,
    JobSpec,
    Ledger,
    Progress,
    SideEffects,
)
from handlers.jobs import JobPlan
from optimization.comparison import Comparison
from schemas.events import Example, ModelUsage

# every name in the directory (tests/unit/daemon/test_run_dir.py reads these strings)
JOB = "job.json"
EXAMPLES = "examples.json"
ATTEMPTS = "attempts.json"
PROGRESS = "progress.json"
PLAN = "plan.json"
BASELINE = "baseline.json"
CANDIDATE = "candidate.json"
SCORES = "scores.json"
GATE = "gate.json"
SIDE_EFFECTS = "side_effects.json"
USAGE = "usage.json"
RESULT = "result.json"
JOB_LOG = "job.log"
LOCK = "run.lock"
HOLDERS = "holders.log"
GEPA_DIR = "gepa"  # GEPA's own state (`gepa_state.bin`): a resumed optimize stage goes on from it
SCRATCH_DB = "scratch-mlflow.db"  # the MLflow store `optimize_prompts` registers its trial versions in
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class RunDir:
    """One job's run directory. A file that is missing or half-written reads as None; every JSON
    file is written atomically (write, then rename), so a crash never leaves half a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # -- the job's inputs: written by the runner on first start --------------------------------

    def inputs_frozen(self) -> bool:
        """Whether `freeze_inputs` has finished here."""
        return (self.path / EXAMPLES).exists()

    def freeze_inputs(self, spec: JobSpec, examples: list[Example]) -> None:
        """1. the spec (`job.json`); 2. the window (`examples.json`), whose presence marks both
        frozen: a crash in between leaves them to be frozen again."""
        self._write(JOB, spec)
        _write_atomically(
            self.path / EXAMPLES, json.dumps([e.model_dump(mode="json") for e in examples]).encode()
        )

    def spec(self) -> JobSpec:
        """The job's spec; raises if the inputs were never frozen."""
        return JobSpec.model_validate_json((self.path / JOB).read_bytes())

    def spec_if_frozen(self) -> JobSpec | None:
        """The job's spec, or None before the runner froze it."""
        return self._read(JOB, JobSpec)

    def examples(self) -> list[Example]:
        """The frozen window the job optimizes on."""
        return [Example.model_validate(e) for e in json.loads((self.path / EXAMPLES).read_bytes())]

    # -- the attempts ledger (runner) and the job process's progress ----------------------------

    def ledger(self) -> Ledger | None:
        return self._read(ATTEMPTS, Ledger)

    def write_ledger(self, ledger: Ledger) -> None:
        self._write(ATTEMPTS, ledger)

    def progress(self) -> Progress | None:
        return self._read(PROGRESS, Progress)

    def write_progress(self, progress: Progress) -> None:
        self._write(PROGRESS, progress)

    # -- the stages' checkpoints (job process): computed once, frozen, read back on a resume -----

    def checkpoint_plan(self, compute: Callable[[], JobPlan]) -> JobPlan:
        return self._checkpoint(PLAN, JobPlan, compute)

    def frozen_baseline(self) -> Baseline | None:
        """The baseline an earlier attempt froze, or None if none did."""
        found: Baseline | None = self._frozen(BASELINE, Baseline)
        return found

    def checkpoint_baseline(self, compute: Callable[[], Baseline]) -> Baseline:
        return self._checkpoint(BASELINE, Baseline, compute)

    def checkpoint_candidate(self, compute: Callable[[], CandidateCheckpoint]) -> CandidateCheckpoint:
        return self._checkpoint(CANDIDATE, CandidateCheckpoint, compute)

    def checkpoint_scores(self, compute: Callable[[], HeldOut]) -> HeldOut:
        return self._checkpoint(SCORES, HeldOut, compute)

    def checkpoint_gate(self, compute: Callable[[], Comparison]) -> Comparison:
        return self._checkpoint(GATE, Comparison, compute)

    # -- what the job did and how it ended ----------------------------------------------------

    def side_effects(self) -> SideEffects | None:
        return self._read(SIDE_EFFECTS, SideEffects)

    def write_side_effects(self, done: SideEffects) -> None:
        self._write(SIDE_EFFECTS, done)

    def usage(self) -> ModelUsage | None:
        """The model usage earlier attempts recorded (a resumed job budgets its whole spend)."""
        return self._read(USAGE, ModelUsage)

    def write_usage(self, usage: ModelUsage) -> None:
        self._write(USAGE, usage)

    def result(self) -> JobResult | None:
        return self._read(RESULT, JobResult)

    def write_result(self, result: JobResult) -> None:
        self._write(RESULT, result)

    def set_result_aside(self, attempt: int) -> None:
        """Keep a retryable result as attempt `attempt`'s record (`result.attempt-<n>.json`),
        out of the way of the next attempt."""
        (self.path / RESULT).replace(self.path / f"result.attempt-{attempt}.json")

    # -- GEPA's working state ----------------------------------------------------------------

    @property
    def gepa_dir(self) -> Path:
        return self.path / GEPA_DIR

    @property
    def scratch_db(self) -> Path:
        return self.path / SCRATCH_DB

    def set_working_state_aside(self, attempt: int) -> None:
        """Move GEPA's state and the scratch store out of the way (as `<name>.attempt-<n>`), for
        the next attempt to rebuild them."""
        for working in (self.gepa_dir, self.scratch_db):
            if working.exists():
                working.replace(working.with_name(f"{working.name}.attempt-{attempt}"))

    # -- the lock, its holders, the job process's log ------------------------------------------

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK

    @property
    def holders_log(self) -> Path:
        """`start <pid> <ns>` / `end <pid> <ns>`: every job process that held the lock, when."""
        return self.path / HOLDERS

    @property
    def job_log(self) -> Path:
        """The job processes' stdout and stderr, appended."""
        return self.path / JOB_LOG

    def open_lock(self) -> int:
        """A descriptor of the lock file (created if missing), for `run_lock.py` to `flock`."""
        return os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)

    def record_holder(self, what: Literal["start", "end"]) -> None:
        """Append this process's start or end of holding the lock to `holders.log`."""
        with self.holders_log.open("a") as holders:
            holders.write(f"{what} {os.getpid()} {time.time_ns()}\n")

    # -- the formats --------------------------------------------------------------------------

    def _read(self, name: str, model: type[M]) -> M | None:
        try:
            return model.model_validate_json((self.path / name).read_bytes())
        except (OSError, ValueError):
            return None

    def _write(self, name: str, value: BaseModel) -> None:
        _write_atomically(self.path / name, value.model_dump_json(indent=2).encode())

    def _frozen(self, name: str, kind: Any) -> Any:
        try:
            return TypeAdapter(kind).validate_json((self.path / name).read_bytes())
        except (OSError, ValueError):
            return None

    def _checkpoint(self, name: str, kind: Any, compute: Callable[[], T]) -> T:
        """The value frozen in `name`; else `compute()`, frozen there first, so a resumed job takes
        every decision input from its first computation."""
        found = self._frozen(name, kind)
        if found is not None:
            return found
        value = compute()
        _write_atomically(self.path / name, TypeAdapter(kind).dump_json(value, indent=2))
        return value


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
