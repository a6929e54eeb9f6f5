"""What every GEPA run shares: stop conditions, a wall-clock guard, and a monitor that detects seed-only runs.

A run that outlives its wall time is abandoned with OptimizationFailed, and its stuck
threads can no longer keep the process alive at exit (`_exit_despite_stuck_threads`).

GEPA swallows reflection failures and then "succeeds" with the seed only; the
monitor records proposals and errors so such runs raise `OptimizationFailed`.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gepa.utils import ScoreThresholdStopper, TimeoutStopCondition

from optimization.errors import OptimizationFailed
from optimization.model_calls import CallPolicy, ModelCalls, governed

T = TypeVar("T")

_FAILURE_RE = re.compile(r"reflection failed|Exception (?:building|during)|^Error for |^predict_fn failed")
"""GEPA's and DSPy's log lines that report a failed model or reflection call."""


STOP_GRACE_S = 60.0
"""How long past `max_wall_time` a run may take to stop (GEPA only checks between iterations)."""


@dataclass(frozen=True)
class RunLimits:
    """Budget and run settings: metric calls, wall time (s), threads, resumable run directory,
    estimated USD of the model calls, and how each model call is made (`calls`)."""

    max_metric_calls: int = 100
    max_wall_time: float = 1800.0
    num_threads: int = 1
    run_dir: str | None = None
    perfect_score: float = 1.0
    progress: Callable[[int, float | None], None] | None = field(default=None, compare=False, repr=False)
    """Called with (metric calls used, best validation score so far) as the run moves."""
    max_cost_usd: float | None = None
    calls: CallPolicy = CallPolicy()

    def __post_init__(self) -> None:
        if self.max_metric_calls < 1:
            raise ValueError(f"max_metric_calls: must be >= 1, got {self.max_metric_calls}")
        if self.max_wall_time <= 0:
            raise ValueError(f"max_wall_time: must be > 0 seconds, got {self.max_wall_time}")
        if self.num_threads < 1:
            raise ValueError(f"num_threads: must be >= 1, got {self.num_threads}")
        if self.max_cost_usd is not None and self.max_cost_usd <= 0:
            raise ValueError(f"max_cost_usd: must be > 0, got {self.max_cost_usd}")

    def stop_callbacks(self, model_calls: ModelCallStopper) -> list[Any]:
        """GEPA stoppers: the model-call stopper (cost budget reached, or a call failed for good;
        first, so it records why even when another stopper fires too), the wall-time limit, and
        the stop on a perfect held-out score."""
        return [
            model_calls,
            TimeoutStopCondition(self.max_wall_time),
            ScoreThresholdStopper(self.perfect_score),
        ]

    @contextmanager
    def model_calls(self, judge_model: str | None = None) -> Iterator[ModelCalls]:
        """The run's model-call scope: this policy, until the run's hard deadline (or the
        enclosing scope's, e.g. a daemon job's); `judge_model` in litellm form."""
        with governed(
            self.calls, time.monotonic() + self.max_wall_time + STOP_GRACE_S, judge_model=judge_model
        ) as calls:
            yield calls


class ModelCallStopper:
    """GEPA stopper: stop when the run's model calls cost `max_cost_usd` (then `fired` says so)
    or when one failed for good (the run then raises that failure)."""

    def __init__(self, calls: ModelCalls, max_cost_usd: float | None) -> None:
        self.calls = calls
        self.max_cost_usd = max_cost_usd
        self.fired: str | None = None

    def __call__(self, gepa_state: Any) -> bool:
        """Checked by GEPA between iterations."""
        if self.calls.failure is not None:
            return True
        if self.max_cost_usd is not None and self.calls.ledger.cost_usd >= self.max_cost_usd:
            self.fired = "max_cost_usd"
            return True
        return False


@dataclass
class RunMonitor:
    """GEPA callback + logger: counts proposals, keeps errors, and the final state; reports
    metric calls and the best validation score to `report` as they change."""

    proposals_started: int = 0
    proposals_made: int = 0
    errors: list[str] = field(default_factory=list)
    final_state: Any = None
    report: Callable[[int, float | None], None] | None = None
    metric_calls: int = 0
    best_score: float | None = None

    def on_budget_updated(self, event: dict[str, Any]) -> None:
        """GEPA counted metric calls (fires as evaluations run, not only between iterations)."""
        self.metric_calls = int(event.get("metric_calls_used") or 0)
        self._report()

    def on_valset_evaluated(self, event: dict[str, Any]) -> None:
        """A candidate was scored on the validation set."""
        score = event.get("average_score")
        if score is not None and (self.best_score is None or score > self.best_score):
            self.best_score = float(score)
            self._report()

    def _report(self) -> None:
        if self.report is not None:
            self.report(self.metric_calls, self.best_score)

    def on_proposal_start(self, event: dict[str, Any]) -> None:
        """GEPA asks the reflection model for a new candidate."""
        self.proposals_started += 1

    def on_proposal_end(self, event: dict[str, Any]) -> None:
        """The reflection model answered."""
        self.proposals_made += 1

    def on_error(self, event: dict[str, Any]) -> None:
        """GEPA reports an exception in an iteration."""
        self.errors.append(repr(event.get("exception")))

    def on_optimization_end(self, event: dict[str, Any]) -> None:
        """Keep GEPA's final state (candidates, per-example valset scores, metric calls)."""
        self.final_state = event.get("final_state")

    def log(self, message: str) -> None:
        """GEPA's logger protocol: keep the lines that report a failure."""
        line = re.sub(r"^Iteration \d+: ", "", message.strip())
        if _FAILURE_RE.search(line):
            self.errors.append(line.splitlines()[0][:500])

    def check(self, n_candidates: int, seed_is_perfect: bool) -> None:
        """Raise OptimizationFailed when GEPA kept only the seed because reflection or the model failed."""
        if n_candidates > 1 or seed_is_perfect:
            return
        if self.errors or (self.proposals_started and not self.proposals_made):
            cause = (
                self.errors[0]
                if self.errors
                else f"{self.proposals_started} reflection call(s) returned nothing"
            )
            raise OptimizationFailed(
                "GEPA kept only the seed candidate because reflection or the model failed", cause
            )

    @contextmanager
    def capturing(self, logger_name: str) -> Iterator[None]:
        """Forward the records of Python logger `logger_name` (and children) to `log` while active."""
        monitor = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                monitor.log(record.getMessage())

        handler = _Handler(logging.INFO)
        target = logging.getLogger(logger_name)
        previous = target.level
        target.addHandler(handler)
        target.setLevel(min(previous or logging.INFO, logging.INFO))
        try:
            yield
        finally:
            target.removeHandler(handler)
            target.setLevel(previous)


def run_with_deadline(
    fn: Callable[[], T],
    limits: RunLimits,
    calls: ModelCalls | None = None,
    grace: float = STOP_GRACE_S,
    exit_grace: float = 30.0,
) -> T:
    """Run `fn` with a hard wall-clock limit (GEPA's own limit is only checked between iterations).

    After `max_wall_time + grace` seconds, a `gepa.stop` file is dropped in the run
    directory (GEPA's graceful stop), the process is armed to exit even if the run's
    threads stay stuck (see `_exit_despite_stuck_threads`), and OptimizationFailed is raised.
    When `fn` fails after a model call of `calls` failed for good, that named failure is raised instead.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error

    context = contextvars.copy_context()  # keeps dspy.context(...) overrides in the worker
    worker = threading.Thread(target=context.run, args=(target,), name="gepa-run", daemon=True)
    worker.start()
    worker.join(limits.max_wall_time + grace)
    if worker.is_alive():
        if limits.run_dir:
            Path(limits.run_dir, "gepa.stop").touch()
        _arm_exit_watchdog(exit_grace)
        raise OptimizationFailed(f"optimization exceeded its wall-time limit of {limits.max_wall_time:g}s")
    if "error" in outcome:
        error = outcome["error"]
        if calls is not None and calls.failure is not None:
            raise calls.failure from error
        if isinstance(error, OptimizationFailed | ValueError):
            raise error
        raise OptimizationFailed("optimization run failed", error) from error
    return outcome["value"]


_watchdog_armed = threading.Event()
_exiting = threading.Event()


def _arm_exit_watchdog(exit_grace: float) -> None:
    """Start (once per process) the daemon thread that keeps an abandoned run from blocking exit."""
    if _watchdog_armed.is_set():
        return
    _watchdog_armed.set()
    # Python's shutdown first runs threading's exit hooks, newest first (concurrent.futures joins its
    # workers in one), then joins the other threads; ours runs before those joins and tells the watchdog.
    threading._register_atexit(_exiting.set)  # type: ignore[attr-defined]  # the stdlib's hook (3.9+)
    threading.Thread(
        target=_exit_despite_stuck_threads, args=(exit_grace,), name="gepa-exit-watchdog", daemon=True
    ).start()


def _exit_despite_stuck_threads(exit_grace: float) -> None:
    """After a run was abandoned at its wall time, its threads may never return (a model that never
    answers, a deadlock in a library), and Python's shutdown joins worker pools (MLflow's evaluation
    executor, litellm's logging workers) forever. So:

    1. wait until the interpreter starts shutting down (the main thread has finished);
    2. give the normal shutdown `exit_grace` seconds (this daemon thread dies with the process
       if it completes);
    3. otherwise name the threads still alive on stderr and end the process with exit code 1
       (a run was abandoned: the exit must not look like a success).
    """
    _exiting.wait()
    time.sleep(exit_grace)
    others = {threading.main_thread(), threading.current_thread()}
    names = ", ".join(sorted({thread.name for thread in threading.enumerate() if thread not in others}))
    sys.stderr.write(
        f"gepa-stream: an optimization run was abandoned at its wall time; exiting although threads are still stuck ({names})\n"
    )
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed stream must not keep the process alive either
            pass
    os._exit(1)
