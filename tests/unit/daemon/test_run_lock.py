"""The run directory's lock, with real processes: one driver at a time, the runner's lock
passed on to its job process, and a SIGTERMed holder recording its end (whichever of its
threads the signal finds)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon.jobs.launcher import _job_process_setup
from daemon.jobs.run_dir import RunDir
from daemon.jobs.run_lock import LOCK_FD_VAR, driving

HOLDER = """
import sys, threading, time
from pathlib import Path
from daemon.jobs.run_dir import RunDir
from daemon.jobs.run_lock import held_by_job_process
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()  # as imports start threads
with held_by_job_process(RunDir(Path(sys.argv[1]))):
    (Path(sys.argv[1]) / f"in-{sys.argv[2]}").touch()
    time.sleep(float(sys.argv[3]))
"""


def _holder(run_dir: Path, name: str, seconds: float, **popen: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), name, str(seconds)], **popen)  # type: ignore[call-overload]


def _intervals(run_dir: Path) -> list[tuple[int, int, int]]:
    """(pid, start ns, end ns) of every holder in `holders.log`, in start order."""
    starts: dict[int, int] = {}
    intervals = []
    for line in RunDir(run_dir).holders_log.read_text().splitlines():
        what, pid, ns = line.split()
        if what == "start":
            starts[int(pid)] = int(ns)
        else:
            intervals.append((int(pid), starts.pop(int(pid)), int(ns)))
    assert not starts, f"holders without an end: {starts}"
    return sorted(intervals, key=lambda i: i[1])


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_two_job_processes_on_one_run_dir_take_turns(tmp_path: Path) -> None:
    first = _holder(tmp_path, "first", 1.0)
    _wait_for(tmp_path / "in-first")
    second = _holder(tmp_path, "second", 0.0)
    assert first.wait(30) == 0 and second.wait(30) == 0
    (a_pid, _, a_end), (b_pid, b_start, _) = _intervals(tmp_path)
    assert (a_pid, b_pid) == (first.pid, second.pid) and b_start >= a_end, "the second waited for the first"


def test_the_runner_waits_for_a_holder_and_its_job_process_inherits_the_lock(tmp_path: Path) -> None:
    """`driving` waits while another process holds the directory (cancellably), then its job
    process, given the locked descriptor, holds it at once (no deadlock with its parent)."""
    stranger = _holder(tmp_path, "stranger", 60.0, preexec_fn=_job_process_setup)
    _wait_for(tmp_path / "in-stranger")

    async def runner() -> tuple[bool, int]:
        waiting = asyncio.create_task(_drive_then_run_child(tmp_path))
        await asyncio.sleep(0.6)
        blocked = not waiting.done()
        # stopped, it is sent SIGTERM (as PR_SET_PDEATHSIG does when its daemon dies), then
        # resumed: any of its threads may wake to the signal first; the watcher takes it
        for sent in (signal.SIGSTOP, signal.SIGTERM, signal.SIGCONT):
            stranger.send_signal(sent)
        return blocked, await asyncio.wait_for(waiting, 30)

    blocked, child_code = asyncio.run(runner())
    assert blocked, "the runner did not wait for the other holder"
    assert stranger.wait(30) == 128 + signal.SIGTERM and child_code == 0
    (s_pid, _, s_end), (c_pid, c_start, _) = _intervals(tmp_path)
    assert s_pid == stranger.pid and c_start >= s_end, "the SIGTERMed holder recorded its end first"


async def _drive_then_run_child(run_dir: Path) -> int:
    async with driving(RunDir(run_dir)) as fd:
        child = _holder(run_dir, "child", 0.0, pass_fds=(fd,), env={**os.environ, LOCK_FD_VAR: str(fd)})
        return await asyncio.to_thread(child.wait, 30)
