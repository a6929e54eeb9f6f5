"""One driver per run directory at a time, by construction: an exclusive `flock` on `run.lock`.

The runner takes the lock before it touches a run directory and keeps it until the job is
announced; the job process inherits the locked file description (so the lock lives while
either of them does: a SIGKILLed daemon's orphaned job process still holds it until it dies).
A second runner, on this machine or on another sharing the state volume, waits for it. The
lock holder's job processes append `start <pid> <ns>` / `end <pid> <ns>` lines to
`holders.log`, a record of who drove the directory when.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from daemon.jobs.run_dir import RunDir

LOCK_FD_VAR = "GEPA_STREAM_RUN_LOCK_FD"
POLL_S = 0.2
log = logging.getLogger("gepa_stream.jobs")


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@asynccontextmanager
async def driving(run: RunDir) -> AsyncIterator[int]:
    """Hold the run directory's lock (waiting, cancellably, while another process holds it);
    yields the locked descriptor for the job process to inherit."""
    run.path.mkdir(parents=True, exist_ok=True)
    fd = run.open_lock()
    try:
        if not _try_lock(fd):
            log.warning("%s is driven by another process; waiting for it to end", run.path)
            while not _try_lock(fd):
                await asyncio.sleep(POLL_S)
        yield fd
    finally:
        os.close(fd)


@contextmanager
def held_by_job_process(run: RunDir) -> Iterator[None]:
    """In the job process: hold the lock (the runner's inherited descriptor, or our own, waiting
    for it) and record this holder's start and end in `holders.log`. SIGTERM (the runner
    stopping it, or PR_SET_PDEATHSIG when its daemon dies) ends the process, recording the end
    if it holds the lock: SIGTERM is blocked in every thread (the launcher blocks it before exec,
    so threads started by imports inherit that too) and taken by one watcher thread, whatever
    the main thread is blocked in."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    guard = threading.Lock()
    holding = False

    def watch() -> None:
        signal.sigwait({signal.SIGTERM})
        with guard:
            if holding:
                run.record_holder("end")
            os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="sigterm-watch", daemon=True).start()
    inherited = os.environ.get(LOCK_FD_VAR)
    fd = int(inherited) if inherited else run.open_lock()
    fcntl.flock(fd, fcntl.LOCK_EX)  # on the inherited (locked) description: at once
    with guard:
        run.record_holder("start")
        holding = True
    try:
        yield
    finally:
        with guard:
            run.record_holder("end")
            holding = False
