"""The attempts ledger of a job (`attempts.json` in its run directory): every start of its job
process and how it ended. Kept on disk so the bound on attempts (`budget.max_attempts`) holds
across daemon restarts: a job that keeps killing its process (or the daemon) ends `failed`."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from daemon.jobs.spec import read_model, write_model

ATTEMPTS_FILE = "attempts.json"
DAEMON_DIED = "the daemon stopped while the job process ran (it died with the daemon)"


class Attempt(BaseModel):
    number: int
    started: datetime
    pid: int | None = None
    ended: datetime | None = None
    cause: str | None = Field(default=None, description="why it ended without a result (None: it has one)")
    outage: str | None = Field(default=None, description="the dependency whose outage ended it")
    counted: bool = Field(default=True, description="False when the daemon stopped it on a clean shutdown")
    announced: bool = Field(default=False, description="its `retrying` event was sent")


class Ledger(BaseModel):
    attempts: list[Attempt] = Field(default_factory=list)
    started_announced: bool = Field(default=False, description="the job's `started` event was sent")


class Attempts:
    """The ledger of one run directory; every change is written through (atomically)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ATTEMPTS_FILE
        found = read_model(self.path, Ledger)
        self.ledger = found or Ledger()
        stale = [a for a in self.ledger.attempts if a.ended is None]
        for attempt in stale:  # we hold the run dir's lock: an open attempt died with its daemon
            attempt.ended, attempt.cause = datetime.now(UTC), DAEMON_DIED
        if stale:
            self._save()

    @property
    def used(self) -> int:
        """Attempts that count against `max_attempts`."""
        return sum(a.counted for a in self.ledger.attempts)

    @property
    def last(self) -> Attempt | None:
        return self.ledger.attempts[-1] if self.ledger.attempts else None

    def begin(self) -> Attempt:
        """Record a start before the process exists, so a crash right after still counts."""
        attempt = Attempt(number=len(self.ledger.attempts) + 1, started=datetime.now(UTC))
        self.ledger.attempts.append(attempt)
        self._save()
        return attempt

    def update(self, record: Attempt | Ledger, **fields: object) -> None:
        """Change an attempt's (or the ledger's own) fields and write the ledger through."""
        for name, value in fields.items():
            setattr(record, name, value)
        self._save()

    def end(
        self, attempt: Attempt, cause: str | None = None, *, outage: str | None = None, counted: bool = True
    ) -> None:
        self.update(attempt, ended=datetime.now(UTC), cause=cause, outage=outage, counted=counted)

    def _save(self) -> None:
        write_model(self.path, self.ledger)


def describe_exit(code: int) -> str:
    """`-9` -> "killed by SIGKILL"; `1` -> "exited with code 1"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
