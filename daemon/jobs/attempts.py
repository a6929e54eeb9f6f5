"""The attempts ledger of a job (`attempts.json` in its run directory): every start of its job
process and how it ended. Kept on disk so the bound on attempts (`budget.max_attempts`) holds
across daemon restarts: a job that keeps killing its process (or the daemon) ends `failed`."""

from __future__ import annotations

import signal
from datetime import UTC, datetime

from daemon.jobs.run_dir import RunDir
from daemon.jobs.spec import Attempt, Ledger

DAEMON_DIED = "the daemon stopped while the job process ran (it died with the daemon)"


class Attempts:
    """The ledger of one run directory; every change is written through (atomically)."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.ledger = run.ledger() or Ledger()
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
        self.run.write_ledger(self.ledger)


def describe_exit(code: int) -> str:
    """`-9` -> "killed by SIGKILL"; `1` -> "exited with code 1"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
