"""Two `--role optimizer` workers share a state volume and the optimizer group. A job running on
the first is stopped when the second joins (its partition is revoked) and resumed by the
partition's owner; that owner is SIGKILLed mid-job, its job process lingering, and the survivor
takes the request over once that process is gone: one version, one decision, and never two job
processes driving the run directory at once."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from daemon.jobs.attempts import DAEMON_DIED
from daemon.jobs.execute import HOLD_AT_VAR
from daemon.jobs.run_dir import RunDir
from daemon.jobs.runner import REVOKED
from tests.daemon_harness import QUICK_JOIN_ENV, Daemon, read_topic
from tests.e2e.loop_helpers import (
    announce_request,
    first_request,
    optimizer_shares,
    register_seed,
    sme_feed,
    wait_for_events,
    write_policies,
)

pytestmark = pytest.mark.e2e
PROMPT = "takeover"
HELD_AT = "gate"  # the candidate is registered in MLflow; nothing is announced yet
WAITING = "waiting for another process to release the run directory"


def _held(run_dir: Path) -> int | None:
    """The job process's pid once its first attempt holds at `HELD_AT`."""
    try:
        progress = json.loads((run_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return None
    held = progress.get("stage") == HELD_AT and progress.get("detail", "").startswith(
        "held for a crash drill"
    )
    return progress.get("pid") if held else None


def _holders(run_dir: Path) -> list[tuple[int, int, int | None]]:
    """(pid, start ns, end ns or None) of every job process that drove the run directory."""
    intervals: dict[int, list[Any]] = {}
    for line in RunDir(run_dir).holders_log.read_text().splitlines():
        what, pid, ns = line.split()
        if what == "start":
            intervals[int(pid)] = [int(pid), int(ns), None]
        else:
            intervals[int(pid)][2] = int(ns)
    return sorted((tuple(i) for i in intervals.values()), key=lambda i: i[1])  # type: ignore[misc]


def test_a_job_moves_once_on_a_rebalance_and_once_from_a_killed_worker(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    policy = write_policies(tmp_path / "policy.yaml", {PROMPT: {"calls": 40}})
    shared = {
        "GEPA_STREAM_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "GEPA_STREAM_STATE_DIR": str(tmp_path / "state"),
        # a dead member leaves the group after 4 s (the default 10 s suits production), and each
        # join is held 2 s instead of 5 (see QUICK_JOIN_ENV)
        **QUICK_JOIN_ENV,
        "GEPA_STREAM_HEARTBEAT_INTERVAL_S": "1",
        "GEPA_STREAM_REBALANCE_TIMEOUT_S": "5",
        HOLD_AT_VAR: f"{PROMPT}={HELD_AT}",
    }
    workdirs = [tmp_path / f"optimizer-{i}" for i in range(2)]
    for workdir in workdirs:
        workdir.mkdir()
    workers = [Daemon(kafka_bootstrap, policy, workdirs[0], env=shared)]
    workers.append(Daemon(kafka_bootstrap, policy, workdirs[1], prefix=workers[0].prefix, env=shared))
    topics = workers[0].topics
    register_seed(shared["GEPA_STREAM_MLFLOW_TRACKING_URI"], PROMPT)
    held_pid = None
    try:
        # 1. the first worker alone takes the request; its job holds mid-way
        workers[0].start("optimizer")
        request_id = announce_request(
            kafka_bootstrap, topics, first_request(policy, sme_feed(topics, PROMPT))
        )
        run_dir = tmp_path / "state" / "jobs" / request_id
        workers[0].wait_until(lambda: _held(run_dir) is not None, 240, f"the job to hold at {HELD_AT}")
        revoked_pid = _held(run_dir)

        # 2. the second joins: the group moves every partition; the job is stopped before
        #    the move and resumed by its partition's owner, where it holds again
        workers[1].start("optimizer")
        workers[0].wait_until(
            lambda: all(optimizer_shares(workers, topics.optimizations)), 90, "both workers to own partitions"
        )

        def resumed_and_held() -> tuple[int, Daemon] | None:
            """The resumed job process holding again, and the worker running it."""
            pid = _held(run_dir)
            for worker in workers:
                state = worker.status().get("jobs", {}).get(request_id, {}).get("state", "")
                if pid not in (None, revoked_pid) and state.startswith("running"):
                    return pid, worker
            return None

        workers[0].wait_until(lambda: resumed_and_held() is not None, 240, "the resumed job to hold again")
        found = resumed_and_held()
        assert found is not None
        held_pid, owner = found
        survivor = workers[1 - workers.index(owner)]

        # 3. the owner dies, and its job process outlives it (stopped, as if stuck in I/O): the
        #    survivor, now the partition's owner, waits for the run directory; then it dies too
        os.kill(held_pid, signal.SIGSTOP)
        owner.kill()  # SIGKILL: no revocation, no commit; its job process gets SIGTERM (PDEATHSIG)
        survivor.wait_until(
            lambda: survivor.status().get("jobs", {}).get(request_id, {}).get("state") == WAITING,
            90,
            "the survivor to take the request over and wait for the run directory",
        )
        assert _holders(run_dir)[-1][::2] == (held_pid, None), "no job process started while the orphan lives"
        os.kill(held_pid, signal.SIGCONT)
        optimizations = wait_for_events(
            survivor,
            topics.optimizations,
            lambda evs: any(
                e.data.request_id == request_id and e.data.status in ("completed", "failed") for e in evs
            ),
            timeout=240,
        )
        registered = read_topic(kafka_bootstrap, topics.prompts)
        promotions = read_topic(kafka_bootstrap, topics.promotions)
        survivor.wait_until(lambda: survivor.status().get("jobs") == {}, 30, "the survivor's job to end")
    finally:
        if held_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(held_pid, signal.SIGCONT)
        for worker in workers:
            worker.stop()

    # exactly one version and one decision for the request
    by_status = Counter(e.data.status for e in optimizations if e.data.request_id == request_id)
    assert (by_status["completed"], by_status["failed"], by_status["retrying"]) == (1, 0, 1), by_status
    [retrying] = [
        e.data for e in optimizations if (e.data.request_id, e.data.status) == (request_id, "retrying")
    ]
    assert (retrying.attempt, retrying.error) == (1, DAEMON_DIED), retrying  # the attempt its owner died with
    assert [(e.data.prompt, e.data.version) for e in registered] == [(PROMPT, 2)], registered
    assert [(e.data.decision, e.data.from_version, e.data.to_version) for e in promotions] == [
        ("promoted", 1, 2)
    ], promotions
    mlflow.set_tracking_uri(shared["GEPA_STREAM_MLFLOW_TRACKING_URI"])
    versions = MlflowClient().search_prompt_versions(PROMPT)
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert [int(v.version) for v in versions if v.tags.get("gepa_stream.request_id") == request_id] == [2]

    # the job's attempts, one after the other, on one run directory: stopped by the rebalance
    # (by every rebalance, should the group move more than once), killed with its worker, done
    ledger = json.loads((run_dir / "attempts.json").read_text())["attempts"]
    attempts = [(a["pid"], a["cause"], a["counted"]) for a in ledger]
    assert attempts[0] == (revoked_pid, REVOKED, False), attempts
    assert all(a[1:] == (REVOKED, False) for a in attempts[1:-2]), attempts
    assert attempts[-2:] == [(held_pid, DAEMON_DIED, True), (attempts[-1][0], None, True)], attempts
    holders = _holders(run_dir)
    holder_pids = [pid for pid, _, _ in holders]
    assert {revoked_pid, held_pid, attempts[-1][0]} <= set(holder_pids), holders
    assert holder_pids == [pid for pid, _, _ in attempts if pid in holder_pids], "holders in attempt order"
    assert all(end is not None for _, _, end in holders), f"a holder never recorded its end: {holders}"
    for (_, _, end), (_, start, _) in itertools.pairwise(holders):
        assert end <= start, f"two job processes drove {run_dir} at once: {holders}"
