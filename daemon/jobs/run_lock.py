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
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import FrameType

LOCK_FILE = "run.lock"
HOLDERS_FILE = "holders.log"
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
async def driving(run_dir: Path) -> AsyncIterator[int]:
    """Hold the run directory's lock (waiting, cancellably, while another process holds it);
    yields the locked descriptor for the job process to inherit."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            log.warning("%s is driven by another process; waiting for it to end", run_dir)
            while not _try_lock(fd):
                await asyncio.sleep(POLL_S)
        yield fd
    finally:
        os.close(fd)


@contextmanager
def held_by_job_process(run_dir: Path) -> Iterator[None]:
    """In the job process: hold the lock (the runner's inherited descriptor, or our own,
    waiting for it) and record this holder's start and end in `holders.log`; SIGTERM (the
    daemon stopping it, or dying: PR_SET_PDEATHSIG) records the end before the process exits."""
    inherited = os.environ.get(LOCK_FD_VAR)
    fd = int(inherited) if inherited else os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # on the inherited (locked) description: at once

    def terminated(signum: int, frame: FrameType | None) -> None:
        _record(run_dir, "end")
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    _record(run_dir, "start")
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _record(run_dir, "end")


def _record(run_dir: Path, what: str) -> None:
    with (run_dir / HOLDERS_FILE).open("a") as holders:
        holders.write(f"{what} {os.getpid()} {time.time_ns()}\n")
