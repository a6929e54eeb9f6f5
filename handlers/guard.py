"""The post-promotion live guard: is the promoted version worse than the one it replaced,
judged on live ratings as they arrive? Pure (numpy only), so the daemon, the tests and the
simulation bench run the very same code.

Method: an anytime-valid confidence sequence for the difference of two bounded means,
built from betting e-processes (Waudby-Smith & Ramdas 2023, "Estimating means of bounded
random variables by betting", JRSS-B; Ville's inequality). For a candidate mean `a` of
ratings X in [0, 1], a bettor who stakes a fixed fraction of wealth on "the mean is below
`a`" multiplies it by `1 + lam * (a - x)` per rating; averaged over a fixed grid of bet
sizes (a "diversified" mixture, ibid.) the wealth is a nonnegative martingale when
the mean is `a`. Two independent samples (new version X, replaced version Y) multiply:
`K_X(a) * K_Y(b)` is a nonnegative supermartingale for the true pair, so by Ville's
inequality the pairs with `K_X(a) * K_Y(b) < 1/alpha` contain the true pair at *every*
time with probability >= 1 - alpha, however often one looks. The upper bound of the
difference is the largest `a - b` over that set (bets against "X high, Y low"), the
lower bound the smallest (bets the other way); each is one-sided at `alpha`.

Why fixed bets: a product of per-rating factors does not depend on the order of the
ratings, so the statistics are a function of the *set* of rating facts — derived from the
idempotent facts in the daemon's tables, identical after a crash and replay, and valid
for whatever order the ratings arrived in. (Predictable plug-in bets would be a little
sharper but need the arrival order, which a replay after a crash does not reproduce.)
No package fits: `expectation` needs Python >= 3.12, `confseq` is a C++/Boost build
marked early-stage and unreleased since 2023.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import cache, lru_cache
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import numpy as np
import orjson

from handlers.stored_json import stored_json
from schemas.config import GuardPolicy

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

STEP = 0.005
GRID = np.arange(STEP, 1.0, STEP)  # candidate means strictly inside (0, 1): the bets are finite there
# Stakes as fractions of the largest safe bet. The large ones catch a clear regression within
# ~100 ratings; the small ones keep the wealth at the true mean from decaying towards 0 over a
# long watch (a fair game lost slowly by over-betting), which in the product below would
# widen the other sample's share of the bounds again.
BETS = np.array([0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4])
LOG_WEIGHT = -np.log(len(BETS))  # uniform mixture over the bets

GuardDecision = Literal["confirmed", "rolled_back", "regression_suspected", "watch_ended"]


@lru_cache(maxsize=64)
def log_factors(values: tuple[float, ...], above: bool) -> np.ndarray:
    """log of every bet's factor for one rating of each value: shape (V, J, G), read-only.
    Cached per value set (a rating scale has a handful of values), so a look costs a product of
    counts and these factors instead of ~8,000 fresh logarithms per side (about half its time)."""
    points = np.array(values, dtype=float)
    if above:
        factor = (BETS[:, None] / GRID[None, :]) * (points[:, None, None] - GRID)
    else:
        factor = (BETS[:, None] / (1.0 - GRID[None, :])) * (GRID - points[:, None, None])
    per_value = np.log1p(factor)  # (V, J, G): bets on the middle axis keeps G contiguous
    per_value.flags.writeable = False
    return per_value


def log_wealth(values: np.ndarray, counts: np.ndarray, above: bool) -> np.ndarray:
    """log K(a) for every a in GRID (shape (..., len(GRID))): the mixture bettor's wealth after
    the ratings `values` seen `counts` times (counts may carry leading batch axes).

    `above=True` bets the mean is above `a` (factor 1 + lam (x - a), lam = c / a);
    `above=False` bets it is below (factor 1 + lam (a - x), lam = c / (1 - a)). With c < 1
    every factor is positive for x in [0, 1]."""
    per_value = log_factors(tuple(values.tolist()), above)
    per_bet = np.tensordot(counts, per_value, axes=([-1], [0]))  # (..., J, G)
    top = per_bet.max(axis=-2)
    return top + np.log(np.exp(per_bet - top[..., None, :]).sum(axis=-2)) + LOG_WEIGHT


@dataclass(frozen=True, slots=True)
class Interval:
    """The live comparison at one look: means, their difference and its confidence sequence."""

    n_new: int
    n_old: int
    mean_new: float | None
    mean_old: float | None
    difference: float | None
    lower: float
    upper: float


def _rowwise_searchsorted(
    sorted_rows: np.ndarray, queries: np.ndarray, side: Literal["left", "right"]
) -> np.ndarray:
    """np.searchsorted per row of (..., G) arrays, in one call (rows shifted apart)."""
    rows = sorted_rows.reshape(-1, sorted_rows.shape[-1])
    wanted = queries.reshape(-1, queries.shape[-1])
    span = np.abs(rows).max(initial=0.0) + np.abs(wanted).max(initial=0.0) + 1.0
    shift = (np.arange(rows.shape[0]) * 2.0 * span)[:, None]
    found = np.searchsorted((rows + shift).ravel(), (wanted + shift).ravel(), side=side)
    return (found.reshape(wanted.shape) - np.arange(rows.shape[0])[:, None] * rows.shape[-1]).reshape(
        queries.shape
    )


def _budget(
    log_new: np.ndarray, log_old: np.ndarray, confidence: float, marginal_weight: float
) -> np.ndarray:
    """For each candidate mean a of the new sample, the bound on log K_old(b) below which the
    pair (a, b) is not rejected.

    marginal_weight 0 (the guard): the product K_new(a) K_old(b) < 1/alpha, so the bound is
    log(1/alpha) - log K_new(a). marginal_weight w > 0: the e-process
    (1 - w) K_new K_old + (w/2) K_new + (w/2) K_old < 1/alpha, a mixture of nonnegative
    supermartingales (Ville applies as to the product), so the bound is
    log(1/alpha - (w/2) K_new(a)) - log((1 - w) K_new(a) + w/2), none when K_new(a) >= 2/(w alpha).
    Why: with one sample far larger than the other (a canary at 5 % of the traffic), the large
    sample's wealth at its true mean decays (a fair game slowly lost by the mixture's larger
    bets), and in the product that decay pays for any K_new(a): the small sample's side of the
    interval widens without limit. The marginal terms cap K_new(a) at 2/(w alpha)."""
    threshold = float(np.log(1.0 / (1.0 - confidence)))
    if marginal_weight == 0.0:
        return threshold - log_new
    half = marginal_weight / 2.0
    capped = np.minimum(log_new, 700.0)  # exp stays finite; such an a is rejected anyway
    room = 1.0 / (1.0 - confidence) - half * np.exp(capped)
    feasible = room > 0.0
    budget = np.log(np.where(feasible, room, 1.0)) - np.logaddexp(
        np.log1p(-marginal_weight) + capped, np.log(half)
    )
    # below every log K_old(b) when no b survives: finite, for the row-wise search
    floor = log_old.min(axis=-1, keepdims=True) - 1.0
    return np.where(feasible, np.maximum(budget, floor), floor)


def _upper(log_old_above: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """max a - b over the pairs not rejected: for each a, the smallest b with
    log K_old(b) < budget(a) (the first index where the running minimum
    from the left drops below it)."""
    running_min = np.minimum.accumulate(log_old_above, axis=-1)
    first = _rowwise_searchsorted(-running_min, -budget, side="right")
    alive = first < GRID.size
    spread = GRID - GRID[np.minimum(first, GRID.size - 1)]
    return np.where(alive, spread, -np.inf).max(axis=-1)


def _lower(log_old_below: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """min a - b over the pairs not rejected: for each a, the largest b not rejected
    (the last index where the running minimum from the right is below the budget)."""
    running_min = np.minimum.accumulate(log_old_below[..., ::-1], axis=-1)[..., ::-1]
    last = _rowwise_searchsorted(running_min, budget, side="left") - 1
    alive = last >= 0
    spread = GRID - GRID[np.maximum(last, 0)]
    return np.where(alive, spread, np.inf).min(axis=-1)


def difference_bounds(
    values: np.ndarray,
    counts_new: np.ndarray,
    counts_old: np.ndarray,
    confidence: float,
    marginal_weight: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) bounds of mean_new - mean_old, each anytime-valid at `confidence`
    (one-sided): P(the true difference ever exceeds `upper`) <= 1 - confidence, likewise
    below `lower`. Vectorised over leading batch axes of the counts (the simulation bench).
    `marginal_weight` (0 <= w < 1; 0 for the guard): see `_budget`."""
    new_below, old_above = (
        log_wealth(values, counts_new, above=False),
        log_wealth(values, counts_old, above=True),
    )
    upper = _upper(old_above, _budget(new_below, old_above, confidence, marginal_weight))
    new_above, old_below = (
        log_wealth(values, counts_new, above=True),
        log_wealth(values, counts_old, above=False),
    )
    lower = _lower(old_below, _budget(new_above, old_below, confidence, marginal_weight))
    # one grid step further out: the true means lie between grid points
    upper = np.where(np.isfinite(upper), np.clip(upper + STEP, -1.0, 1.0), -1.0)
    lower = np.where(np.isfinite(lower), np.clip(lower - STEP, -1.0, 1.0), 1.0)
    return lower, upper


def compare(
    new: Counter[float], old: Counter[float], confidence: float, marginal_weight: float = 0.0
) -> Interval:
    """The interval for the ratings of the new and the replaced version (value -> count)."""
    values = np.array(sorted(set(new) | set(old)), dtype=float)
    if values.size == 0:
        return Interval(0, 0, None, None, None, -1.0, 1.0)
    counts_new = np.array([new.get(v, 0) for v in values], dtype=float)
    counts_old = np.array([old.get(v, 0) for v in values], dtype=float)
    lower, upper = difference_bounds(values, counts_new, counts_old, confidence, marginal_weight)
    n_new, n_old = int(counts_new.sum()), int(counts_old.sum())
    mean_new = float(values @ counts_new / n_new) if n_new else None
    mean_old = float(values @ counts_old / n_old) if n_old else None
    difference = mean_new - mean_old if mean_new is not None and mean_old is not None else None
    return Interval(n_new, n_old, mean_new, mean_old, difference, float(lower), float(upper))


def decide(interval: Interval, policy: GuardPolicy, mode: str, watched_s: float) -> GuardDecision | None:
    """1. worse beyond doubt (upper bound < 0): roll back (auto) or flag (manual);
    2. not worse beyond `margin` (lower bound > -margin) after `min_live_examples`: confirmed;
    3. `max_watch` passed: the watch ends undecided; else keep watching (None)."""
    if interval.n_new and interval.n_old and interval.upper < 0.0:
        return "rolled_back" if mode == "auto" else "regression_suspected"
    if interval.n_new >= policy.min_live_examples and interval.lower > -policy.margin:
        return "confirmed"
    if interval.n_new >= policy.max_watch.examples or watched_s >= policy.max_watch.duration.total_seconds():
        return "watch_ended"
    return None


def describe(
    interval: Interval,
    decision: GuardDecision | None,
    policy: GuardPolicy,
    new_version: int,
    old_version: int | None,
) -> str:
    """One line for the promotion event's reason and the logs."""
    if interval.difference is None:
        figures = f"{interval.n_new} live ratings of version {new_version}, {interval.n_old} of version {old_version}"
    else:
        figures = (
            f"version {new_version} {interval.mean_new:.3f} (n={interval.n_new}) vs version {old_version} "
            f"{interval.mean_old:.3f} (n={interval.n_old}): difference {interval.difference:+.3f}, "
            f"anytime {policy.confidence:.0%} bounds [{interval.lower:+.3f}, {interval.upper:+.3f}]"
        )
    verdict = {
        "rolled_back": "worse beyond doubt; production goes back",
        "regression_suspected": "worse beyond doubt; a person decides (rollback command)",
        "confirmed": f"not worse than {policy.margin:.2f}",
        "watch_ended": "max_watch passed undecided",
        None: "watching",
    }[decision]
    return f"live guard: {figures}; {verdict}"


# -- state -----------------------------------------------------------------------------------


@dataclass(slots=True)
class GuardSpec:
    """One prompt's guard: which promotion it watches and, once decided, its verdict.
    One table value per prompt; a newer promotion replaces it."""

    promotion_id: str
    promoted_at: float
    new_version: int
    old_version: int | None
    mode: str
    decision: str | None = None
    decided_at: float | None = None
    reason: str | None = None

    def encode(self) -> bytes:
        return stored_json(self)  # orjson writes the same bytes as from asdict(), without its deep copy

    @classmethod
    def decode(cls, raw: bytes) -> GuardSpec:
        return cls(**orjson.loads(raw))


@dataclass(frozen=True, slots=True)
class Vote:
    """One rating fact of a watched version, keyed by (trace_id, rater): a redelivered or
    repeated rating maps to the same key, so nothing is counted twice."""

    trace_id: str
    rater: str
    version: int
    score: float

    def encode(self) -> bytes:
        return stored_json(self)  # orjson writes the same bytes as from asdict(), without its deep copy

    @classmethod
    def decode(cls, raw: bytes) -> Vote:
        return cls(**orjson.loads(raw))


SpecT = TypeVar("SpecT", bound="DataclassInstance")


@cache
def _spec_fields(cls: type) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]:
    """A spec class's field names, and a getter of their values as one tuple (in C)."""
    names = tuple(f.name for f in fields(cls))
    getter = attrgetter(*names)
    return names, (getter if len(names) > 1 else lambda spec: (getter(spec),))


@dataclass(slots=True)
class VoteBook(Generic[SpecT]):
    """A spec and the votes it has seen, changed all or nothing: the per-prompt state of the live
    guard (`PromptGuard`) and of the staged rollout (handlers/rollout.py `Rollout`)."""

    spec: SpecT
    votes: dict[tuple[str, str], Vote] = field(default_factory=dict)
    _journal: dict[tuple[str, str], Vote | None] | None = field(default=None, repr=False, compare=False)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run a block of changes all or nothing: if it raises, the votes and verdict are restored.
        The spec's fields are saved as a tuple and put back in place: every event of a watched
        prompt opens a transaction, and a `dataclasses.replace` copy cost ~5 us of each."""
        names, getter = _spec_fields(type(self.spec))
        saved, self._journal = getter(self.spec), {}
        try:
            yield
        except BaseException:
            for key, previous in self._journal.items():
                self._put(key, previous)
            for name, value in zip(names, saved, strict=True):
                setattr(self.spec, name, value)
            raise
        finally:
            self._journal = None

    def add(self, vote: Vote) -> bool:
        """Merge one vote; False when nothing changed (the caller skips the write)."""
        key = (vote.trace_id, vote.rater)
        if self.votes.get(key) == vote:
            return False
        if self._journal is not None and key not in self._journal:
            self._journal[key] = self.votes.get(key)
        self._put(key, vote)
        return True

    def _put(self, key: tuple[str, str], vote: Vote | None) -> None:
        """The one place a vote is set or removed (None); a subclass keeping tallies overrides it."""
        if vote is None:
            self.votes.pop(key, None)
        else:
            self.votes[key] = vote


@dataclass(slots=True)
class PromptGuard(VoteBook[GuardSpec]):
    """A guard's spec and the votes it has seen; the statistics are derived from the votes."""

    @property
    def watching(self) -> bool:
        return self.spec.decision is None

    def watches(self, version: int | None) -> bool:
        return (
            self.watching
            and version is not None
            and version in (self.spec.new_version, self.spec.old_version)
        )

    def interval(self, confidence: float) -> Interval:
        new: Counter[float] = Counter()
        old: Counter[float] = Counter()
        for vote in self.votes.values():
            (new if vote.version == self.spec.new_version else old)[vote.score] += 1
        return compare(new, old, confidence)
