"""Facts: the only state the stream stores, one table key per trace identity.

Everything known about one (prompt, trace_id) — the trace and one vote per rater —
is one record under one key. Merging a fact into it is idempotent (the same trace,
the same rater's vote), so a redelivered or duplicated event changes nothing, and a
record's size is bounded by its raters, never by the window. Counts are derived
from the records, never incremented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from handlers.stored_json import stored_json
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
    attributes: dict[str, str] = field(default_factory=dict)

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
            attributes=d.attributes,
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


def record_key(prompt: str, trace_id: str) -> FactKey:
    return stored_json((prompt, trace_id))


def encode_record(trace: TraceFact | None, votes: list[RatingFact]) -> bytes:
    """One trace's record: the trace (if it arrived) and its votes."""
    return stored_json(
        {
            "trace": {n: getattr(trace, n) for n in TraceFact.__slots__} if trace is not None else None,
            "votes": [{n: getattr(v, n) for n in RatingFact.__slots__} for v in votes],
        }
    )


def decode_record(raw: bytes) -> tuple[TraceFact | None, list[RatingFact]]:
    data = orjson.loads(raw)
    trace = TraceFact(**data["trace"]) if data["trace"] is not None else None
    return trace, [RatingFact(**v) for v in data["votes"]]
