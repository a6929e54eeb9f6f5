"""The job process: `python -m daemon.jobs.execute RUN_DIR ATTEMPT`, started, watched and stopped.

It dies with the daemon (PR_SET_PDEATHSIG), is killed at its wall time, and when the runner
stops it (shutdown, a revoked partition) it is terminated and awaited: the call returns only
once the process is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

from daemon.broker import die_with_parent
from daemon.jobs.outage import MLFLOW
from daemon.jobs.run_dir import RunDir
from daemon.jobs.run_lock import LOCK_FD_VAR

log = logging.getLogger("gepa_stream.jobs")
WATCH_S = 1.0
TERM_GRACE_S = 2.0


async def run_job_process(
    run: RunDir, attempt: int, lock_fd: int, wall_s: float, on_start: Callable[[int], None]
) -> int | None:
    """The job process's exit code, or None if it reached `wall_s` and was killed. It inherits
    the run directory's locked descriptor `lock_fd`; `on_start(pid)` runs once it exists."""
    with run.job_log.open("ab") as job_log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon.jobs.execute",
            str(run.path),
            str(attempt),
            stdout=job_log,
            stderr=job_log,
            preexec_fn=_job_process_setup,
            pass_fds=(lock_fd,),
            env={**os.environ, LOCK_FD_VAR: str(lock_fd)},
        )
    on_start(process.pid)
    try:
        return await _watch(process, run, wall_s)
    except asyncio.CancelledError:
        await _stop(process)
        raise


async def _watch(process: asyncio.subprocess.Process, run: RunDir, wall_s: float) -> int | None:
    """Wait for the job process (None if it hit `wall_s` and was killed), logging when it
    starts and stops waiting on MLflow's client retries."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wall_s
    exited = asyncio.ensure_future(process.wait())
    noted = ""
    try:
        while not exited.done():
            await asyncio.wait({exited}, timeout=max(0.0, min(WATCH_S, deadline - loop.time())))
            if exited.done():
                break
            if loop.time() >= deadline:
                process.kill()
                await exited
                return None
            progress = run.progress()
            waiting = progress.waiting if progress is not None and progress.pid == process.pid else ""
            if waiting and not noted:
                log.warning("job %s waits: %s", run.path.name, waiting)
            elif noted and not waiting:
                log.warning("job %s: %s answers again", run.path.name, MLFLOW)
            noted = waiting
        return exited.result()
    finally:
        exited.cancel()


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM (the job process records its end), SIGKILL after `TERM_GRACE_S`; wait for it to be gone."""
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), TERM_GRACE_S)
        except TimeoutError:
            process.kill()
    await process.wait()


def _job_process_setup() -> None:
    """In the job process before exec: die with the daemon (SIGTERM); leave Ctrl-C to the daemon;
    block SIGTERM in every thread to come, for the run lock's watcher thread to take it."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
