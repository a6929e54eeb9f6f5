"""The trigger policy of one prompt (docs/architecture.md, step 3).

Pure: it reads the window's figures and the prompt's trigger state and says
whether to fire, and which rule fired with the numbers it compared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson

from handlers.stored_json import stored_json
from handlers.window import WindowFigures
from schemas.config import TriggerPolicy
from schemas.events import TriggerRule


@dataclass(slots=True)
class TriggerState:
    """Per-prompt memory of the optimization loop; one table value per prompt."""

    generation: int = 0
    in_flight: str | None = None
    last_fired_at: float | None = None
    last_finished_at: float | None = None
    last_status: str | None = None
    watermark: float | None = None
    baseline_score: float | None = None
    last_gate: dict[str, Any] | None = None
    """The last job decision's cost figures: decision, to_version, baseline / candidate `VersionCost`."""

    def encode(self) -> bytes:
        return stored_json(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> TriggerState:
        return cls(**orjson.loads(raw))


@dataclass(frozen=True, slots=True)
class Fire:
    rule: TriggerRule
    values: dict[str, float | int | str | None]


@dataclass(frozen=True, slots=True)
class Skip:
    """A manual request that cannot run now, with the reason."""

    reason: str


def evaluate(
    policy: TriggerPolicy, state: TriggerState, figures: WindowFigures, now: float, *, manual: bool = False
) -> Fire | Skip | None:
    """Decide one prompt's trigger. Rules in order: in flight, manual, min_examples,
    cooldown, first optimization, score_drop, min_new_examples, max_interval."""
    if state.in_flight is not None:
        return Skip(f"optimization {state.in_flight} is still in flight") if manual else None
    if manual:
        if figures.n_examples == 0:
            return Skip("the window holds no labeled examples")
        return Fire("manual", {"n_examples": figures.n_examples, "n_new": figures.n_new})
    if figures.n_examples < policy.min_examples:
        return None
    last = max((t for t in (state.last_fired_at, state.last_finished_at) if t is not None), default=None)
    if last is not None and now - last < policy.cooldown.total_seconds():
        return None
    if state.generation == 0:
        return Fire("min_examples", {"n_examples": figures.n_examples, "min_examples": policy.min_examples})
    if figures.n_new == 0:
        return None
    rolling, baseline = figures.rolling_score, state.baseline_score
    if policy.score_drop is not None and rolling is not None and baseline is not None:
        threshold = baseline * (1.0 - policy.score_drop)
        if rolling < threshold:
            return Fire(
                "score_drop",
                {
                    "rolling_score": rolling,
                    "baseline_score": baseline,
                    "score_drop": policy.score_drop,
                    "threshold": threshold,
                },
            )
    if figures.n_new >= policy.min_new_examples:
        return Fire("min_new_examples", {"n_new": figures.n_new, "min_new_examples": policy.min_new_examples})
    if (
        policy.max_interval is not None
        and last is not None
        and now - last >= policy.max_interval.total_seconds()
    ):
        return Fire(
            "max_interval",
            {"seconds_since_last": now - last, "max_interval_s": policy.max_interval.total_seconds()},
        )
    return None


@dataclass(frozen=True, slots=True)
class RuleOutlook:
    """One rule that can fire next, how far it is (0..1, for a bar) and why, in words."""

    rule: TriggerRule
    fraction: float
    text: str


@dataclass(frozen=True, slots=True)
class Outlook:
    """What the trigger of one prompt waits for (the ops page's "what fires next")."""

    status: Literal["in_flight", "cooldown", "ready", "waiting"]
    text: str
    rules: list[RuleOutlook]


def outlook(policy: TriggerPolicy, state: TriggerState, figures: WindowFigures, now: float) -> Outlook:
    """Describe `evaluate`'s rules for people: the blocker, or each rule's distance to firing.
    `ready` means the next trace or rating fires (`evaluate` says so, not this function)."""
    if state.in_flight is not None:
        return Outlook("in_flight", f"optimization {state.in_flight} is running", [])
    n, rules = figures.n_examples, []
    if state.generation == 0 or n < policy.min_examples:
        rules.append(
            RuleOutlook(
                "min_examples", min(1.0, n / policy.min_examples), f"{n} of {policy.min_examples} examples"
            )
        )
    if state.generation > 0:
        need = max(policy.min_new_examples, 1)
        rules.append(
            RuleOutlook(
                "min_new_examples",
                min(1.0, figures.n_new / need),
                f"{figures.n_new} of {policy.min_new_examples} new examples",
            )
        )
        rolling, baseline = figures.rolling_score, state.baseline_score
        if policy.score_drop is not None and rolling is not None and baseline is not None:
            threshold = baseline * (1.0 - policy.score_drop)
            gap = max(baseline - threshold, 1e-9)
            rules.append(
                RuleOutlook(
                    "score_drop",
                    min(1.0, max(0.0, (baseline - rolling) / gap)),
                    f"rolling {rolling:.2f}; fires below {threshold:.2f}",
                )
            )
    last = max((t for t in (state.last_fired_at, state.last_finished_at) if t is not None), default=None)
    if policy.max_interval is not None and last is not None:
        interval = policy.max_interval.total_seconds()
        rules.append(
            RuleOutlook(
                "max_interval",
                min(1.0, (now - last) / interval),
                f"{_span(now - last)} of {_span(interval)} since the last run",
            )
        )
    cooldown_left = policy.cooldown.total_seconds() - (now - last) if last is not None else 0.0
    if evaluate(policy, state, figures, now) is not None:
        return Outlook("ready", "fires on the next trace or rating", rules)
    if n >= policy.min_examples and cooldown_left > 0:
        return Outlook("cooldown", f"cooldown: {_span(cooldown_left)} left", rules)
    return Outlook(
        "waiting", "waiting for " + ", or ".join(r.text for r in rules) if rules else "waiting", rules
    )


def _span(seconds: float) -> str:
    """A duration for people: 45s, 12m, 3.5h, 2.0d."""
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
