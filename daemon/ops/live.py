"""What is live for each prompt, read from the MLflow Prompt Registry: the `production`
version, its score, the versions awaiting approval and a staged rollout's `canary` version
with its share of traffic.

Read in a worker thread, every `period` seconds and right after a decision on the prompt,
so the page never waits on MLflow (and shows the last good answer while MLflow is away).

Against an http(s) tracking server the registry is read over MLflow's REST API
(`daemon/registry_rest.py`), without loading MLflow; a sqlite or file store loads MLflow's client
at the first read. With `on_demand` (the ingest role) reading starts at the first page request
that wants it (`wanted()`), so an ingest worker nobody looks at reads nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from daemon.prompt_version import awaiting_approval
from daemon.registry_rest import registry_reader
from handlers.ops_history import OpsHistory
from optimization.prompt_names import prompt_names
from schemas.config import PolicyBook, PolicyFile
from schemas.events import TRAFFIC_SHARE_TAG

if TYPE_CHECKING:
    from optimization.prompt_version import Version

log = logging.getLogger("gepa_stream.ops")


@dataclass(slots=True)
class LiveEntry:
    """One registry prompt: production version and score, versions awaiting approval, the
    canary (a staged rollout's version, None when none runs) and its share of traffic."""

    name: str
    version: int | None = None
    score: float | None = None
    awaiting: list[int] = field(default_factory=list)
    canary: int | None = None
    canary_share: float | None = None
    checked_at: float | None = None
    error: str | None = None


class LiveVersions:
    def __init__(
        self, policies: PolicyFile, history: OpsHistory, period: float = 30.0, on_demand: bool = False
    ) -> None:
        self.history = history
        self.period = period
        self._started = asyncio.Event()
        if not on_demand:
            self._started.set()
        self.policies = PolicyBook(policies)
        self.names: dict[str, list[str]] = {name: [name] for name in self.policies}
        self.entries: dict[str, LiveEntry] = {name: LiveEntry(name) for name in self.policies}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()

    def track(self, name: str) -> None:
        """A prompt a pattern matched (seen after start): read its live versions too."""
        if name not in self.names:
            self.names[name] = [name]
            self.entries.setdefault(name, LiveEntry(name))
            self.poke(name)

    def reload(self, policies: PolicyFile) -> None:
        """A reloaded policy file: its listed prompts are tracked from now on."""
        self.policies.replace(policies)
        for name in self.policies:
            self.track(name)

    def wanted(self) -> None:
        """A page request wants live versions: start reading them (once; a no-op afterwards)."""
        self._started.set()

    def poke(self, name: str) -> None:
        """A decision on `name` arrived: read it again soon (only prompts this daemon manages)."""
        if name in self.entries:
            self._dirty.add(name)
            self._wake.set()

    async def run(self) -> None:
        """0. wait until wanted, 1. resolve each policy's registry names (one per DSPy predictor),
        2. read them all, 3. re-read the poked ones at once and all of them every `period` seconds."""
        await self._started.wait()
        for prompt, policy in self.policies.items():
            try:
                self.names[prompt] = await asyncio.to_thread(prompt_names, policy)
            except Exception as exc:  # the user's program may not import in this role; show the policy name
                log.warning("ops page: cannot list the registry prompts of %s (%s)", prompt, exc)
            for name in self.names[prompt]:
                self.entries.setdefault(name, LiveEntry(name))
        last_full = 0.0
        while True:
            if time.monotonic() - last_full >= self.period:
                todo, last_full = list(self.entries), time.monotonic()
            else:
                todo = sorted(self._dirty)
            self._dirty.clear()
            for name in todo:
                await self._refresh(name)
            self._wake.clear()
            try:
                await asyncio.wait_for(
                    self._wake.wait(), timeout=max(0.1, self.period - (time.monotonic() - last_full))
                )
            except TimeoutError:
                pass

    async def _refresh(self, name: str) -> None:
        registry = registry_reader()  # REST for an http(s) tracking URI: no MLflow in this process
        entry = self.entries.setdefault(name, LiveEntry(name))
        try:
            current, canary, versions = await asyncio.to_thread(
                lambda: (registry.production(name), registry.canary(name), registry.versions(name))
            )
        except Exception as exc:  # MLflow away: keep the last answer, say why it is old
            entry.error = f"MLflow: {type(exc).__name__}: {str(exc)[:200]}"
            return
        entry.version = current.version if current is not None else None
        entry.score = None
        if current is not None:
            tagged = current.final_score
            entry.score = tagged if tagged is not None else self.history.score_of(name, current.version)
        entry.awaiting = [v.version for v in versions if awaiting_approval(v)]
        entry.canary, entry.canary_share = canary_of(canary)
        entry.checked_at = time.time()
        entry.error = None


def canary_of(version: Version | None) -> tuple[int | None, float | None]:
    """A `canary` alias's version and share; (None, None) without the alias or its share tag (as
    `prompt_versions.registry` reads it: a canary without a share serves no traffic)."""
    share = version.tags.get(TRAFFIC_SHARE_TAG) if version is not None else None
    if version is None or share is None:
        return None, None
    try:
        return version.version, float(share)
    except ValueError:
        return None, None
