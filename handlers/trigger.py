"""The trigger policy of one prompt (ARCHITECTURE.md, Flow step 3).

Pure: it reads the window's figures and the prompt's trigger state and says
whether to fire, and which rule fired with the numbers it compared.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass

import orjson

from handlers.window import WindowFigures
from schemas.config import TriggerPolicy
from schemas.events import TriggerRule

_REQUEST_NAMESPACE = uuid.UUID("6b1d2f04-5d0c-4c7e-9a55-3f1f2a9d7e10")


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

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

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


def request_id_for(app_id: str, prompt: str, generation: int, snapshot_sha256: str) -> str:
    """Deterministic: replaying the same firing after a crash yields the same request id, so
    downstream dedupe on `request_id` absorbs the duplicate. The snapshot digest keeps ids
    unique when a new broker restarts the generations while MLflow and run dirs remain."""
    return str(uuid.uuid5(_REQUEST_NAMESPACE, f"{app_id}/{prompt}/{generation}/{snapshot_sha256}"))


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
                {"rolling_score": rolling, "baseline_score": baseline, "score_drop": policy.score_drop, "threshold": threshold},
            )
    if figures.n_new >= policy.min_new_examples:
        return Fire("min_new_examples", {"n_new": figures.n_new, "min_new_examples": policy.min_new_examples})
    if policy.max_interval is not None and last is not None and now - last >= policy.max_interval.total_seconds():
        return Fire("max_interval", {"seconds_since_last": now - last, "max_interval_s": policy.max_interval.total_seconds()})
    return None
