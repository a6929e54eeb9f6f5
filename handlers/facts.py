"""Facts: the only state the stream stores, one table key per identity.

A trace is keyed by (prompt, trace_id), a rating by (prompt, trace_id, rater).
Redelivered or duplicated events rewrite the same key with the same value, so
they change nothing; counts are derived from the facts, never incremented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.events import RatingEvent, TraceEvent

FactKey = bytes


@dataclass(slots=True)
class TraceFact:
    prompt: str
    trace_id: str
    time: float
    inputs: dict[str, Any]
    outputs: Any
    expectations: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    feedback: str | None = None
    prompt_version: int | None = None

    @property
    def key(self) -> FactKey:
        return trace_key(self.prompt, self.trace_id)

    @property
    def self_labeled(self) -> bool:
        """A trace with expectations or scores is an example without any rating."""
        return bool(self.expectations or self.scores)

    @classmethod
    def from_event(cls, event: TraceEvent) -> TraceFact:
        d = event.data
        return cls(
            prompt=d.prompt,
            trace_id=d.trace_id,
            time=event.time.timestamp(),
            inputs=d.inputs,
            outputs=d.outputs,
            expectations=d.expectations,
            scores=d.scores,
            feedback=d.feedback,
            prompt_version=d.prompt_version,
        )


@dataclass(slots=True)
class RatingFact:
    prompt: str
    trace_id: str
    rater: str
    time: float
    event_id: str
    score: float
    correction: str | None = None
    comment: str | None = None

    @property
    def key(self) -> FactKey:
        return rating_key(self.prompt, self.trace_id, self.rater)

    def supersedes(self, other: RatingFact) -> bool:
        """One vote per rater and trace: the later verdict wins, ties broken by event id,
        so the outcome does not depend on delivery order."""
        return (self.time, self.event_id) > (other.time, other.event_id)

    def same_verdict(self, other: RatingFact) -> bool:
        """A repeat of the same verdict (e.g. re-sent with a new event id) is a duplicate."""
        return (self.score, self.correction, self.comment) == (other.score, other.correction, other.comment)

    @classmethod
    def from_event(cls, event: RatingEvent) -> RatingFact:
        d = event.data
        return cls(
            prompt=d.prompt,
            trace_id=d.trace_id,
            rater=d.rater if d.rater else f"anonymous:{event.id}",
            time=event.time.timestamp(),
            event_id=event.id,
            score=d.score,
            correction=d.correction,
            comment=d.comment,
        )


Fact = TraceFact | RatingFact


def trace_key(prompt: str, trace_id: str) -> FactKey:
    return orjson.dumps(("t", prompt, trace_id))


def rating_key(prompt: str, trace_id: str, rater: str) -> FactKey:
    return orjson.dumps(("r", prompt, trace_id, rater))


def encode_fact(fact: Fact) -> bytes:
    kind = "t" if isinstance(fact, TraceFact) else "r"
    return orjson.dumps({"kind": kind, **{name: getattr(fact, name) for name in fact.__slots__}})


def decode_fact(raw: bytes) -> Fact:
    data = orjson.loads(raw)
    kind = data.pop("kind")
    return TraceFact(**data) if kind == "t" else RatingFact(**data)
