"""The deployer's router for staged rollouts: which prompt version serves a request.

The daemon runs a canary as registry state: the candidate version gets the tag
`TRAFFIC_SHARE_TAG` ("0.05") first, then the alias `canary`; later stages raise the tag; the end
moves `production` to it and deletes `canary`; an abort deletes `canary`. `PromptRouter` reads
that state (`production`, `canary` and the canary's share: its routing table), caches it for
`ttl_s`, and sends each request key to one arm by a stable hash of the key, so a key stays on its
arm while the share only grows (a key on the canary at 5 % is on it at 25 %).

A registry that stops answering after the first read does not fail requests: the router keeps
serving its last table (and logs one warning per outage).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities.model_registry import PromptVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from optimization.errors import RoutingUnavailable
from optimization.mlflow_errors import no_alias
from schemas.events import CANARY_ALIAS, PRODUCTION_ALIAS, TRAFFIC_SHARE_TAG

log = logging.getLogger(__name__)

_HASH_SPACE = float(1 << 64)


def bucket(name: str, key: str) -> float:
    """The key's stable position in [0, 1) for prompt `name`: blake2b of name and key (the same in
    every process and Python version, unlike the salted builtin `hash`)."""
    digest = hashlib.blake2b(f"{name}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE


def parse_share(value: str | None) -> tuple[float, str | None]:
    """A canary's share from its tag value: (share, None) for a number in (0, 1), else
    (0.0, why it is no canary) — a missing tag, a non-number, or a number outside (0, 1)."""
    if value is None:
        return 0.0, f"no {TRAFFIC_SHARE_TAG} tag"
    try:
        share = float(value)
    except ValueError:
        return 0.0, f"{TRAFFIC_SHARE_TAG}={value!r} is not a number"
    if not (math.isfinite(share) and 0.0 < share < 1.0):
        return 0.0, f"{TRAFFIC_SHARE_TAG}={value!r} is outside (0, 1)"
    return share, None


@dataclass(frozen=True, slots=True)
class Route:
    """The version to serve one request: its arm (`alias`: "production" or "canary"), its number,
    and the MLflow `PromptVersion` (`route.format(...)` renders the template). Routes compare and
    hash by arm and number."""

    alias: str
    version: int
    prompt: PromptVersion = field(compare=False)

    def format(self, **variables: Any) -> Any:
        """The served template with `variables` filled in (`PromptVersion.format`)."""
        return self.prompt.format(**variables)


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """One read of the registry: the production version, and the canary version with its share
    (`canary` is None and `share` 0 when there is no valid canary)."""

    name: str
    production: PromptVersion
    canary: PromptVersion | None = None
    share: float = 0.0

    def route(self, key: str) -> Route:
        """The arm of `key`: the canary when the key's bucket is below the share, else production."""
        if self.canary is not None and bucket(self.name, key) < self.share:
            return Route(CANARY_ALIAS, int(self.canary.version), self.canary)
        return Route(PRODUCTION_ALIAS, int(self.production.version), self.production)


class PromptRouter:
    """Routes request keys of prompt `name` between `production` and a staged-rollout `canary`.

    Thread-safe: `choose` reads the cached table; once it is `ttl_s` old (monotonic clock), the one
    calling thread that takes the refresh lock reads the registry while the others keep serving the
    cached table. A failed refresh keeps the last table and is retried `ttl_s` later. `tracking_uri`
    None means MLflow's current tracking URI (at construction). `clock` is for tests.
    """

    def __init__(
        self,
        name: str,
        *,
        ttl_s: float = 30.0,
        tracking_uri: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(ttl_s) and ttl_s >= 0):
            raise ValueError(f"ttl_s must be a finite number >= 0, not {ttl_s!r}")
        self.name = name
        self.ttl_s = ttl_s
        self._client = MlflowClient(tracking_uri=tracking_uri)
        self._clock = clock
        self._lock = threading.Lock()
        self._table: RoutingTable | None = None
        self._next_refresh = -math.inf
        self._outage = False
        self._last_share_problem: str | None = None

    @property
    def tracking_uri(self) -> str:
        """The registry this router reads."""
        return str(self._client.tracking_uri)

    def choose(self, key: str) -> Route:
        """The version to serve for request `key` (a user, session or conversation id: the same key
        gets the same arm while the share does not shrink). Raises `RoutingUnavailable` only if the
        registry has never been read successfully."""
        return self.table().route(key)

    def table(self) -> RoutingTable:
        """The routing table in use, refreshed first if it is `ttl_s` old (see the class doc)."""
        table = self._table
        if table is None:
            with self._lock:
                if self._table is None:
                    return self._refresh_locked()
                table = self._table
        if self._clock() >= self._next_refresh and self._lock.acquire(blocking=False):
            try:
                if self._clock() >= self._next_refresh:
                    try:
                        table = self._refresh_locked()
                    except RoutingUnavailable:
                        table = self._table or table  # keep serving the last table
            finally:
                self._lock.release()
        return table

    def refresh(self) -> RoutingTable:
        """Read the registry now (waiting for a refresh under way) and return the new table. Raises
        `RoutingUnavailable` if the read fails; `choose` then keeps serving the last table."""
        with self._lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> RoutingTable:
        """Read the table (the caller holds the lock); on failure keep the old one and raise."""
        try:
            table = self._read()
        except RoutingUnavailable as exc:
            self._next_refresh = self._clock() + self.ttl_s
            if self._table is not None and not self._outage:
                log.warning(
                    "prompt %r: %s; serving the last routing table (production v%s, canary %s) until a read succeeds",
                    self.name, exc, self._table.production.version,
                    f"v{self._table.canary.version} at {self._table.share:g}" if self._table.canary else "none",
                )  # fmt: skip
            self._outage = self._table is not None
            raise
        if self._outage:
            log.info("prompt %r: the registry answers again", self.name)
            self._outage = False
        self._table = table
        self._next_refresh = self._clock() + self.ttl_s
        return table

    def _read(self) -> RoutingTable:
        """One read of the registry: the `production` alias, then the `canary` alias with its tags
        (the tag is set before the alias moves, so one read of the canary gives both)."""
        production = self._by_alias(PRODUCTION_ALIAS)
        if production is None:
            raise RoutingUnavailable(
                f"prompt {self.name!r} has no {PRODUCTION_ALIAS!r} version in {self.tracking_uri}"
            )
        canary = self._by_alias(CANARY_ALIAS)
        if canary is None or int(canary.version) == int(production.version):
            self._last_share_problem = None
            return RoutingTable(self.name, production)
        share, problem = parse_share((canary.tags or {}).get(TRAFFIC_SHARE_TAG))
        if problem is not None:
            if problem != self._last_share_problem:  # once per problem, not once per refresh
                log.warning(
                    "prompt %r: canary v%s has %s; all traffic goes to production v%s",
                    self.name, canary.version, problem, production.version,
                )  # fmt: skip
            self._last_share_problem = problem
            return RoutingTable(self.name, production)
        self._last_share_problem = None
        return RoutingTable(self.name, production, canary, share)

    def _by_alias(self, alias: str) -> PromptVersion | None:
        """The version `alias` points at; None if the prompt or the alias does not exist. Any other
        failure (an unreachable server, a broken store) raises `RoutingUnavailable`."""
        try:
            return self._client.get_prompt_version_by_alias(self.name, alias)
        except MlflowException as exc:
            if no_alias(exc):  # no such prompt, or no such alias
                return None
            raise RoutingUnavailable(
                f"cannot read prompt {self.name!r} from {self.tracking_uri}: {exc}"
            ) from exc
        except Exception as exc:  # a store failing outside MLflow's own errors (e.g. a bad URI)
            raise RoutingUnavailable(
                f"cannot read prompt {self.name!r} from {self.tracking_uri}: {exc}"
            ) from exc
