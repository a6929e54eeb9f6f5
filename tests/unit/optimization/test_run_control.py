"""Run control: seed-only detection, limits, the hard wall-clock guard."""

import threading

import pytest

from optimization import run_control
from optimization.errors import OptimizationFailed
from optimization.model_calls import ModelCallFailed, ModelCalls
from optimization.run_control import ModelCallStopper, RunLimits, RunMonitor, run_with_deadline


def test_seed_only_after_failures_raises_with_the_cause() -> None:
    monitor = RunMonitor()
    monitor.on_proposal_start({})
    monitor.log("Per-task reflection failed: connection refused")
    with pytest.raises(OptimizationFailed, match="connection refused") as info:
        monitor.check(n_candidates=1, seed_is_perfect=False)
    assert "connection refused" in str(info.value.cause)


def test_seed_only_without_failures_or_with_a_perfect_seed_is_not_a_failure() -> None:
    RunMonitor().check(n_candidates=1, seed_is_perfect=False)
    failing = RunMonitor(errors=["boom"])
    failing.check(n_candidates=1, seed_is_perfect=True)
    failing.check(n_candidates=2, seed_is_perfect=False)


def test_proposals_that_never_returned_count_as_failure() -> None:
    monitor = RunMonitor(proposals_started=2)
    with pytest.raises(OptimizationFailed, match="2 reflection call"):
        monitor.check(n_candidates=1, seed_is_perfect=False)


@pytest.mark.parametrize("bad", [{"max_metric_calls": 0}, {"max_wall_time": 0}, {"num_threads": 0}])
def test_limits_are_validated(bad) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        RunLimits(**bad)


def test_deadline_stops_waiting_drops_the_stop_file_and_arms_the_exit_watchdog(tmp_path, monkeypatch) -> None:
    armed: list[
        float
    ] = []  # the real watchdog is process-wide: arming it here would time the pytest worker's exit
    monkeypatch.setattr(run_control, "_arm_exit_watchdog", armed.append)
    release = threading.Event()
    with pytest.raises(OptimizationFailed, match="wall-time"):
        run_with_deadline(
            lambda: release.wait(10),
            RunLimits(max_wall_time=0.05, run_dir=str(tmp_path)),
            grace=0.05,
            exit_grace=7,
        )
    release.set()
    assert (tmp_path / "gepa.stop").exists()
    assert armed == [7]


def test_errors_in_the_run_are_wrapped_but_value_errors_pass_through() -> None:
    def boom():
        raise RuntimeError("model down")

    def bad():
        raise ValueError("trainset: empty")

    with pytest.raises(OptimizationFailed, match="model down"):
        run_with_deadline(boom, RunLimits())
    with pytest.raises(ValueError, match="trainset"):
        run_with_deadline(bad, RunLimits())


def test_the_model_call_stopper_fires_at_the_cost_budget_and_after_a_final_failure() -> None:
    calls = ModelCalls()
    stopper = ModelCallStopper(calls, max_cost_usd=1.0)
    assert (
        RunLimits().stop_callbacks(stopper)[0] is stopper
    )  # first: it records why even when another stopper fires
    calls.ledger.record("task", cost=0.6)
    assert not stopper(None) and stopper.fired is None
    calls.ledger.record("reflection", cost=0.4)
    assert stopper(None) and stopper.fired == "max_cost_usd"
    failing = ModelCalls()
    failing.failure = ModelCallFailed("judge", "openai/j", "5 consecutive 503 responses")
    unbudgeted = ModelCallStopper(failing, max_cost_usd=None)
    assert unbudgeted(None) and unbudgeted.fired is None
