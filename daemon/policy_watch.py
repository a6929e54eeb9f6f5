"""The policy file, reloaded without a restart: checked for a change every `policy_poll_s` and at
once on SIGHUP. A valid file is handed to every part of the process that reads policies (each
keeps one `PolicyBook` and replaces its file); an invalid one is refused, the old one stays, and
the error is logged, counted on `/metrics` and shown on the ops page and `/status`.

What a reload changes: new events, triggers, jobs, commands and the ops page read the new file
at once, and windows take their new limits at once (handlers/ingest.py `Ingest.reload`). A
running job keeps the policy it started with (frozen in its `job.json`); a running staged
rollout keeps its stages (copied at its start) and reads the rest (margin, confidence, minimum
votes, stage duration) from the new file; the live guard reads its settings at each look.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from daemon import prometheus_metrics
from schemas.config import ConfigError, PolicyFile, load_policy_file

log = logging.getLogger("gepa_stream")


@dataclass(slots=True)
class PolicyState:
    """What `/status` and the ops page show of the policy file."""

    path: str
    loaded_at: float
    sha256: str
    prompts: int
    patterns: int
    reloads: int = 0
    error: str | None = None  # the last refused file's problem (None once a valid one loads)
    error_at: float | None = None


class PolicyWatch:
    """Reloads `path` into `parts` (each called with the new file) when its content changes."""

    def __init__(
        self, path: Path, policies: PolicyFile, parts: Sequence[Callable[[PolicyFile], None]], poll_s: float
    ) -> None:
        self.path, self.parts, self.poll_s = path, parts, poll_s
        self.state = PolicyState(
            str(path), time.time(), self._digest() or "", len(policies.prompts), len(policies.patterns)
        )
        self._wake = asyncio.Event()

    def _digest(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    async def run(self) -> None:
        """Check on SIGHUP, and every `poll_s` (if > 0)."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._wake.set)
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s or None)
            except TimeoutError:
                pass
            self._wake.clear()
            self.check()

    def check(self) -> bool:
        """Reload if the file's content changed; True when a new file took effect."""
        digest = self._digest()
        if digest is None or digest == self.state.sha256:
            return False
        try:
            policies = load_policy_file(self.path)
        except ConfigError as exc:
            if self.state.error != str(exc):
                log.error("policy file refused, the previous one stays in effect: %s", exc)
                prometheus_metrics.POLICY_RELOADS.labels("refused").inc()
            self.state.error, self.state.error_at = str(exc), time.time()
            prometheus_metrics.POLICY_ERROR.set(1)
            return False
        for part in self.parts:
            part(policies)
        self.state = PolicyState(
            str(self.path),
            time.time(),
            digest,
            len(policies.prompts),
            len(policies.patterns),
            self.state.reloads + 1,
        )
        prometheus_metrics.POLICY_RELOADS.labels("loaded").inc()
        prometheus_metrics.POLICY_ERROR.set(0)
        log.info(
            "policy file reloaded: %d prompt(s), %d pattern(s)", len(policies.prompts), len(policies.patterns)
        )
        return True

    def status(self) -> dict[str, Any]:
        return asdict(self.state)
