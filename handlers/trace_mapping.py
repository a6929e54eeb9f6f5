"""MLflow traces and assessments -> trace and rating events (pure; the I/O is `daemon/mlflow_bridge.py`).

A trace arrives here as a plain `TraceRecord` dict. Event ids and times derive from
MLflow's own ids and timestamps, so publishing the same data twice yields identical
events and no new facts downstream. `BridgePosition` is the bridge's bookkeeping:
the newest trace timestamp seen and, for the traces inside the look-back horizon, what
was already published (so a restart neither skips nor repeats, and an assessment added
later to an old trace is still found).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Container
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired, TypedDict, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from schemas import event_ids
from schemas.errors import GepaStreamError
from schemas.events import CloudEvent, RatingData, RatingEvent, TraceData, TraceEvent
from schemas.ratings import RATING_LABELS

LINKED_PROMPTS_TAG = "mlflow.linkedPrompts"
FINALIZED_KEY = "mlflow.trace.infoFinalized"
FINALIZE_GRACE_MS = 5 * 60 * 1000
DEFAULT_PROMPT_KEY = "gepa.prompt"
HUMAN = "HUMAN"
NumericScale = Literal["auto", "unit", "five_point"]
D = TypeVar("D", bound=BaseModel)
_YES_NO = {"yes": "up", "pass": "up", "true": "up", "no": "down", "fail": "down", "false": "down"}


class AssessmentRecord(TypedDict):
    """One MLflow assessment, flattened."""

    assessment_id: str
    name: str
    kind: Literal["feedback", "expectation"]
    value: Any
    rationale: str | None
    source_type: str
    source_id: str | None
    updated_ms: int
    valid: bool
    error: str | None


class TraceRecord(TypedDict):
    """One MLflow trace, flattened; `inputs`/`outputs` (parsed JSON) are absent when read without spans."""

    trace_id: str
    timestamp_ms: int
    state: str
    tags: dict[str, str]
    metadata: dict[str, str]
    assessments: list[AssessmentRecord]
    inputs: NotRequired[Any]
    outputs: NotRequired[Any]


@dataclass(frozen=True)
class PromptRef:
    """A registry prompt a trace used; the version is unknown when only an alias was named."""

    name: str
    version: int | None = None


@dataclass(frozen=True)
class MappingOptions:
    """How traces map: where the prompt is named, which prompts count, how numbers rate."""

    source: str
    prompt_key: str = DEFAULT_PROMPT_KEY
    managed: Container[str] | None = None  # the policy's prompts (patterns resolve on `in`)
    numeric_scale: NumericScale = "auto"
    max_event_bytes: int = 512 * 1024


class Unmappable(GepaStreamError, ValueError):
    """A trace or assessment that cannot become an event; the message is the counted reason."""


def listed(counter: Counter[str]) -> str:
    """`reason n, reason n` in key order: counts by reason as the bridges' summaries print them."""
    return ", ".join(f"{key} {n}" for key, n in sorted(counter.items()))


def finished(record: TraceRecord, now_ms: int) -> bool:
    """Whether MLflow has finished writing the trace: spans can land before the trace's tags (the
    prompt link), so wait for its `infoFinalized` mark — or, for stores that never set it, a grace period."""
    if record["state"] == "IN_PROGRESS":
        return False
    return (
        record["metadata"].get(FINALIZED_KEY) == "true" or now_ms - record["timestamp_ms"] > FINALIZE_GRACE_MS
    )


# -- prompts ---------------------------------------------------------------------------------


def parse_prompt_ref(text: str) -> PromptRef:
    """`name`, `name/3`, `name@alias`, `prompts:/name/3` -> PromptRef (an alias leaves the version open)."""
    return PromptRef(*split_prompt_ref(text))


def split_prompt_ref(text: str) -> tuple[str, int | None]:
    """`parse_prompt_ref` as a (name, version) pair (raises Unmappable("no_prompt") likewise)."""
    body = text.strip().removeprefix("prompts:/")
    name, _, version = body.partition("/")
    name = name.split("@")[0]
    if not name:
        raise Unmappable("no_prompt")
    return name, int(version) if version.isdigit() and int(version) > 0 else None


def prompt_refs(record: TraceRecord, options: MappingOptions) -> list[PromptRef]:
    """The prompts a trace used: the tag/metadata key if set (explicit wins), else the prompts
    MLflow linked to the trace; restricted to the managed prompts when those are known."""
    named = record["tags"].get(options.prompt_key) or record["metadata"].get(options.prompt_key)
    if named:
        refs = [parse_prompt_ref(named)]
    else:
        try:
            linked = json.loads(record["tags"].get(LINKED_PROMPTS_TAG) or "[]")
        except json.JSONDecodeError:
            linked = []
        refs = [
            PromptRef(str(p["name"]), int(p["version"]) if str(p.get("version", "")).isdigit() else None)
            for p in linked
            if isinstance(p, dict) and p.get("name")
        ]
    if not refs:
        raise Unmappable("no_prompt")
    if options.managed is not None:
        refs = [ref for ref in refs if ref.name in options.managed]
        if not refs:
            raise Unmappable("unmanaged_prompt")
    return list({ref.name: ref for ref in refs}.values())  # one per prompt: the last version linked


# -- values ----------------------------------------------------------------------------------


def rating_of(
    value: Any, numeric_scale: NumericScale = "auto"
) -> tuple[str | float, Literal["unit", "five_point"]]:
    """An MLflow feedback value as (rating, scale): labels, yes/no, booleans, and numbers
    (`auto`: 0..1 is the unit scale, above 1 up to 5 the five-point scale)."""
    if isinstance(value, bool):
        return ("up" if value else "down"), "five_point"
    if isinstance(value, str):
        text = value.strip().lower()
        if text in RATING_LABELS:
            return text, "five_point"
        if text in _YES_NO:
            return _YES_NO[text], "five_point"
        try:
            return rating_of(float(text), numeric_scale)
        except ValueError:
            raise Unmappable("unknown_rating") from None
    if isinstance(value, (int, float)) and math.isfinite(value):
        scale = numeric_scale if numeric_scale != "auto" else ("unit" if 0 <= value <= 1 else "five_point")
        low, high = (0.0, 1.0) if scale == "unit" else (1.0, 5.0)
        if low <= value <= high:
            return float(value), scale
    raise Unmappable("unknown_rating")


def _inputs(record: TraceRecord) -> dict[str, Any]:
    inputs = record.get("inputs")
    if inputs in (None, {}, ""):
        raise Unmappable("no_inputs")
    return inputs if isinstance(inputs, dict) else {"input": inputs}


def _outputs(record: TraceRecord) -> str | dict[str, Any]:
    outputs = record.get("outputs")
    if outputs is None:
        raise Unmappable("no_outputs")
    return outputs if isinstance(outputs, (str, dict)) else json.dumps(outputs)


def _expectations(record: TraceRecord) -> list[AssessmentRecord]:
    return [a for a in record["assessments"] if a["kind"] == "expectation" and a["valid"]]


def _human_feedback(record: TraceRecord) -> list[AssessmentRecord]:
    return [
        a
        for a in record["assessments"]
        if a["kind"] == "feedback" and a["valid"] and a["source_type"] == HUMAN
    ]


def expectations_signature(record: TraceRecord) -> str:
    """A short digest of the trace's valid expectations (ids and update times); '' when none."""
    versions = sorted((a["assessment_id"], a["updated_ms"]) for a in _expectations(record))
    return hashlib.sha256(json.dumps(versions).encode()).hexdigest()[:12] if versions else ""


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


# -- events ----------------------------------------------------------------------------------


def event_data(data_model: type[D], /, **fields: Any) -> D:
    """The event's `data` model, or Unmappable("invalid_data")."""
    try:
        return data_model(**fields)
    except ValidationError:
        raise Unmappable("invalid_data") from None


def build_event(
    cls: type[CloudEvent[Any]], id: str, data: Any, ms: int, source: str, max_event_bytes: int
) -> CloudEvent[Any]:
    """A mapped event at time `ms` (epoch ms), or Unmappable: `bad_time` outside the contract's
    bounds, `oversize` over `max_event_bytes`."""
    return build_event_json(cls, id, data, ms, source, max_event_bytes)[0]


def build_event_json(
    cls: type[CloudEvent[Any]], id: str, data: Any, ms: int, source: str, max_event_bytes: int
) -> tuple[CloudEvent[Any], bytes]:
    """`build_event` and the event's JSON, serialized once: the bytes the size check measured
    are the ones to produce."""
    try:
        event = cls(
            specversion="1.0",
            id=id,
            source=source,
            type=cls.TYPE,
            time=_time(ms),
            subject=data.prompt,
            data=data,
        )
    except (ValidationError, OverflowError, OSError, ValueError):
        raise Unmappable("bad_time") from None
    try:
        value = event.to_json()
    except PydanticSerializationError:  # a value JSON cannot hold (bytes in the inputs)
        raise Unmappable("invalid_data") from None
    if len(value) > max_event_bytes:
        raise Unmappable("oversize")
    return event, value


def _event(
    cls: type[CloudEvent[Any]], id: str, data: Any, ms: int, options: MappingOptions
) -> CloudEvent[Any]:
    return build_event(cls, id, data, ms, options.source, options.max_event_bytes)


def trace_events(
    record: TraceRecord, refs: list[PromptRef], options: MappingOptions
) -> list[CloudEvent[Any]]:
    """One `gepa.trace.v1` per prompt the trace used (raises Unmappable with the reason)."""
    inputs, outputs = _inputs(record), _outputs(record)
    expectations = {
        a["name"]: a["value"] for a in sorted(_expectations(record), key=lambda a: a["updated_ms"])
    }
    signature = expectations_signature(record)
    return [
        _event(
            TraceEvent,
            event_ids.mlflow_trace(record["trace_id"], ref.name, signature),
            event_data(
                TraceData,
                prompt=ref.name,
                prompt_version=ref.version,
                trace_id=record["trace_id"],
                inputs=inputs,
                outputs=outputs,
                expectations=expectations,
            ),
            record["timestamp_ms"],
            options,
        )
        for ref in refs
    ]


def rating_events(
    assessment: AssessmentRecord, trace_id: str, refs: list[PromptRef], options: MappingOptions
) -> list[CloudEvent[Any]]:
    """One `gepa.rating.v1` per prompt for a human feedback (raises Unmappable with the reason)."""
    if assessment["error"]:
        raise Unmappable("feedback_error")
    rating, scale = rating_of(assessment["value"], options.numeric_scale)
    return [
        _event(
            RatingEvent,
            event_ids.mlflow_rating(
                trace_id, ref.name, assessment["assessment_id"], assessment["updated_ms"]
            ),
            event_data(
                RatingData,
                prompt=ref.name,
                trace_id=trace_id,
                rating=rating,
                scale=scale,
                comment=assessment["rationale"] or None,
                rater=assessment["source_id"] or None,
            ),
            assessment["updated_ms"],
            options,
        )
        for ref in refs
    ]


# -- bookkeeping -----------------------------------------------------------------------------


@dataclass
class SeenTrace:
    """What the bridge published for one trace: its prompts ([] = unmapped), expectations, ratings."""

    timestamp_ms: int
    prompts: list[str] = field(default_factory=list)
    expectations: str = ""
    ratings: dict[str, int] = field(default_factory=dict)  # assessment id -> update time published


@dataclass
class Counts:
    """The bridge's figures: traces mapped/unmapped (by reason), events published, assessments skipped,
    and traces deferred because MLflow was still writing them (looked at again next pass)."""

    traces_mapped: int = 0
    traces_unmapped: Counter = field(default_factory=Counter)
    published: Counter = field(default_factory=Counter)
    assessments_unmapped: Counter = field(default_factory=Counter)
    deferred: int = 0

    def add(self, other: Counts) -> None:
        """Accumulate `other` into these counts."""
        self.traces_mapped += other.traces_mapped
        self.deferred += other.deferred
        for mine, theirs in (
            (self.traces_unmapped, other.traces_unmapped),
            (self.published, other.published),
            (self.assessments_unmapped, other.assessments_unmapped),
        ):
            mine.update(theirs)


@dataclass
class Plan:
    """What one trace needs now: the events to publish, the bookkeeping after they are acked, the counts."""

    events: list[CloudEvent[Any]]
    seen: SeenTrace
    counts: Counts


@dataclass
class BridgePosition:
    """The bridge's place in one experiment: the newest trace time seen, and the traces inside the horizon."""

    experiment_id: str
    watermark_ms: int = 0
    traces: dict[str, SeenTrace] = field(default_factory=dict)

    def scan_start(self, since_ms: int, lookback_ms: int) -> int:
        """Where the next scan starts: `lookback_ms` before the watermark, never before `since_ms`."""
        return max(since_ms, self.watermark_ms - lookback_ms)

    def _unpublished_feedback(self, record: TraceRecord) -> list[AssessmentRecord]:
        seen = self.traces.get(record["trace_id"])
        done = seen.ratings if seen else {}
        return [a for a in _human_feedback(record) if done.get(a["assessment_id"]) != a["updated_ms"]]

    def needs_spans(self, record: TraceRecord) -> bool:
        """Whether planning this trace needs its inputs/outputs: new, or mapped with changed
        expectations or new human feedback (both re-send the trace event)."""
        seen = self.traces.get(record["trace_id"])
        if seen is None:
            return True
        return bool(seen.prompts) and (
            seen.expectations != expectations_signature(record) or bool(self._unpublished_feedback(record))
        )

    def plan(self, record: TraceRecord, options: MappingOptions) -> Plan:
        """The events this trace needs now (nothing for a repeat). A late rating re-sends its trace
        (same event id unless the expectations changed), so the daemon can join the two even after
        the trace left its join buffer; for a trace it still holds, the repeat changes nothing."""
        trace_id = record["trace_id"]
        old = self.traces.get(trace_id)
        counts = Counts()
        if old is not None and not old.prompts:
            return Plan([], old, counts)  # unmapped: reported once, when first seen
        feedback = self._unpublished_feedback(record)
        try:
            refs = prompt_refs(record, options)
            signature = expectations_signature(record)
            resend = old is None or old.expectations != signature or bool(feedback)
            if resend and "inputs" not in record:
                raise ValueError(
                    f"trace {trace_id}: planning it needs the trace read with spans (see needs_spans)"
                )
            events = trace_events(record, refs, options) if resend else []
        except Unmappable as reason:
            counts.traces_unmapped[str(reason)] += 1
            return Plan([], SeenTrace(record["timestamp_ms"]), counts)
        counts.traces_mapped += old is None
        seen = SeenTrace(
            record["timestamp_ms"], [ref.name for ref in refs], signature, dict(old.ratings) if old else {}
        )
        for assessment in feedback:
            seen.ratings[assessment["assessment_id"]] = assessment["updated_ms"]
            try:
                events += rating_events(assessment, trace_id, refs, options)
            except Unmappable as reason:
                counts.assessments_unmapped[str(reason)] += 1
        counts.published.update(event.type for event in events)
        return Plan(events, seen, counts)

    def commit(self, trace_id: str, seen: SeenTrace) -> None:
        """Record a planned trace as published and advance the watermark."""
        self.traces[trace_id] = seen
        self.watermark_ms = max(self.watermark_ms, seen.timestamp_ms)

    def prune(self, lookback_ms: int) -> None:
        """Forget traces older than the horizon (their late assessments are no longer looked for)."""
        horizon = self.watermark_ms - lookback_ms
        self.traces = {tid: seen for tid, seen in self.traces.items() if seen.timestamp_ms >= horizon}

    def to_json(self) -> str:
        """The position as the JSON text saved in the state directory."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BridgePosition:
        """A position saved with `to_json`."""
        raw = json.loads(text)
        return cls(
            raw["experiment_id"],
            raw["watermark_ms"],
            {tid: SeenTrace(**seen) for tid, seen in raw["traces"].items()},
        )
