"""Event models: the CloudEvents 1.0 structured-mode envelope with a typed `data` per type.

Every model here is a wire contract. Data models forbid unknown fields so a typo
in a producer becomes a dead letter naming the field instead of silent loss; a
breaking change gets a new `type` (``...v2``).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.ratings import RatingScale, normalize_rating

INT64_MAX = 2**63 - 1
PositiveInt = Annotated[int, Field(gt=0, le=INT64_MAX)]
NonNegativeInt = Annotated[int, Field(ge=0, le=INT64_MAX)]
"""Integers fit in 64 bits: the windows store facts with orjson, which writes no larger ones."""
PromptName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}$"),
    Field(description="MLflow prompt name: letters, digits, '_', '-', '.'; the Kafka key."),
]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=512)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
UnitFloat = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
JsonObject = dict[str, Any]
MAX_ATTRIBUTES = 32
Attributes = Annotated[
    dict[
        Annotated[str, StringConstraints(min_length=1, max_length=64)],
        Annotated[str, StringConstraints(max_length=256)],
    ],
    Field(
        max_length=MAX_ATTRIBUTES,
        description="small string labels of the call (customer tier, language, channel): the gate's segments",
    ),
]

RatingLabel = Literal["excellent", "good", "fair", "poor", "up", "down"]
CommandAction = Literal["optimize", "approve", "reject", "rollback", "canary_advance", "canary_abort"]
OptimizationStatus = Literal["requested", "started", "retrying", "completed", "failed", "skipped"]
TriggerRule = Literal["min_examples", "min_new_examples", "score_drop", "max_interval", "manual"]
OptimizerName = Literal["dspy_gepa", "mlflow_gepa"]
ModelRole = Literal["task", "reflection", "judge"]
StopReason = Literal["max_cost_usd"]
PromotionDecision = Literal[
    "promoted",
    "rejected",
    "inconclusive",
    "awaiting_approval",
    "rolled_back",
    "confirmed",
    "regression_suspected",
    "watch_ended",
    "canary_started",
    "canary_advanced",
    "canary_aborted",
]
DeadLetterReason = Literal[
    "null_value",
    "not_json",
    "too_deep",
    "unrepresentable",
    "oversize",
    "bad_envelope",
    "bad_time",
    "unknown_type",
    "invalid_data",
    "unknown_prompt",
    "wrong_topic",
    "handler_error",
]
DeadLetterStage = Literal["parse", "validate", "route", "handle"]
PayloadEncoding = Literal["utf-8", "base64"]

EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_CLOCK_SKEW = timedelta(days=1)
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- inbound ---------------------------------------------------------------------------------


class TraceData(_Data):
    """One production call of an agent that used prompt `prompt`."""

    prompt: PromptName
    prompt_version: PositiveInt | None = None
    trace_id: Identifier
    inputs: Annotated[JsonObject, Field(min_length=1)]
    outputs: str | JsonObject
    expectations: JsonObject = Field(default_factory=dict)
    scores: dict[str, FiniteFloat] = Field(default_factory=dict)
    feedback: str | None = None
    model: str | None = None
    latency_ms: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    attributes: Attributes = Field(default_factory=dict)


class RatingData(_Data):
    """An SME's verdict on one trace: a label or a number on `scale`, maybe a correction."""

    prompt: PromptName
    trace_id: Identifier
    scale: RatingScale = "five_point"
    rating: RatingLabel | FiniteFloat
    correction: str | None = None
    comment: str | None = None
    rater: str | None = None

    @field_validator("rating", mode="before")
    @classmethod
    def _label_or_number(cls, value: Any, info: ValidationInfo) -> Any:
        """Labels are case-insensitive; numbers must lie on their scale (validated here so
        the error names `data.rating`)."""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError("must be a rating label or a number")
        if isinstance(value, str):
            value = value.strip().lower()
        normalize_rating(value, info.data.get("scale", "five_point"))
        return value

    @property
    def score(self) -> float:
        """The rating normalised to [0, 1]."""
        return normalize_rating(self.rating, self.scale)


class CommandData(_Data):
    """An operator's instruction for one prompt."""

    prompt: PromptName
    action: CommandAction
    version: PositiveInt | None = None
    requested_by: str | None = None
    reason: str | None = Field(
        default=None, description="why (e.g. the live guard's statistics for a rollback)"
    )
    traffic_share: UnitFloat | None = Field(
        default=None,
        description="canary_advance / canary_abort: the canary's share the command was decided at (else it does nothing)",
    )


# -- outbound --------------------------------------------------------------------------------


class TriggerInfo(_Data):
    """Which trigger rule fired, with the numbers it compared."""

    rule: TriggerRule
    values: dict[str, float | int | str | None] = Field(default_factory=dict)


class Budget(_Data):
    max_metric_calls: PositiveInt | None = None
    max_wall_time_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    max_cost_usd: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None


class RoleUsage(_Data):
    """One role's model calls in a job: completed calls, retried attempts, tokens, estimated USD."""

    calls: NonNegativeInt = 0
    failed_attempts: NonNegativeInt = Field(
        default=0, description="attempts that failed (retried, or the last one)"
    )
    prompt_tokens: NonNegativeInt = 0
    completion_tokens: NonNegativeInt = 0
    cost_usd: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0
    cost_unknown: bool = Field(
        default=False,
        description="a model had no price (litellm's cost map nor the policy's prices): counted as 0",
    )


class ModelUsage(_Data):
    """A job's model calls per role (task, reflection, judge) and their estimated USD in total."""

    roles: dict[ModelRole, RoleUsage] = Field(default_factory=dict)
    cost_usd: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0
    cost_unknown: bool = False


class SnapshotRef(_Data):
    """Where the frozen window of a request lives: chunk records on the snapshots topic."""

    topic: str
    partition: NonNegativeInt
    offsets: Annotated[list[NonNegativeInt], Field(min_length=1)]
    n_examples: NonNegativeInt
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class OptimizationData(_Data):
    """The life of one optimization request: requested -> started -> (retrying ->)* completed | failed
    (or skipped). `retrying` says an attempt ended without a result (`error` names why) and the
    job will be resumed; `attempt` / `max_attempts` count the job process starts."""

    request_id: Identifier
    prompt: PromptName
    status: OptimizationStatus
    trigger: TriggerInfo | None = None
    snapshot: SnapshotRef | None = None
    n_train: NonNegativeInt | None = None
    n_val: NonNegativeInt | None = None
    budget: Budget | None = None
    metric_calls: NonNegativeInt | None = None
    baseline_score: UnitFloat | None = None
    candidate_score: UnitFloat | None = None
    version: PositiveInt | None = None
    error: str | None = None
    attempt: PositiveInt | None = None
    max_attempts: PositiveInt | None = None
    usage: ModelUsage | None = None
    stopped_by: StopReason | None = Field(
        default=None, description="the budget that stopped GEPA early; the best candidate so far was gated"
    )


class Example(_Data):
    """A labeled example as frozen in a snapshot: a trace joined with its ratings."""

    trace_id: Identifier
    inputs: JsonObject
    outputs: str | JsonObject | None = None
    expectations: JsonObject = Field(default_factory=dict)
    scores: dict[str, FiniteFloat] = Field(default_factory=dict)
    rating: UnitFloat | None = None
    comments: list[str] = Field(default_factory=list)
    feedback: str | None = None
    prompt_version: PositiveInt | None = None
    attributes: Attributes = Field(default_factory=dict)
    time: AwareDatetime


class SnapshotChunkData(_Data):
    """One chunk of a frozen window (chunks keep every record far below Kafka's 1 MB limit)."""

    request_id: Identifier
    prompt: PromptName
    chunk: NonNegativeInt
    n_chunks: PositiveInt
    examples: list[Example]


class PromptRegisteredData(_Data):
    prompt: PromptName
    version: PositiveInt
    uri: str
    parent_version: PositiveInt | None = None
    request_id: Identifier
    optimizer: OptimizerName
    baseline_score: UnitFloat | None = None
    candidate_score: UnitFloat | None = None
    n_train: NonNegativeInt
    n_val: NonNegativeInt
    usage: ModelUsage | None = None


PRODUCTION_ALIAS = "production"
"""The MLflow alias of the version deployers serve: what a promotion moves and a rollback moves back."""
CANARY_ALIAS = "canary"
"""The MLflow alias of a version under a staged rollout: it serves `TRAFFIC_SHARE_TAG` of the traffic."""
TRAFFIC_SHARE_TAG = "gepa_stream.traffic_share"
"""The canary version's registry tag: its share of traffic ("0.05"), set before the alias moves to it."""


class SegmentScore(_Data):
    """The gate's comparison on one segment of the held-out examples (`promotion.segments`)."""

    segment: str
    n: PositiveInt
    baseline_score: FiniteFloat
    candidate_score: FiniteFloat
    difference: FiniteFloat
    upper: FiniteFloat = Field(
        description="one-sided upper bound of the difference, corrected for the segments tested"
    )
    harmed: bool


class VersionCost(_Data):
    """What one version costs on the held-out examples (`promotion.max_template_tokens`,
    `promotion.max_cost_increase`): its template's length in tokens (the longest, for a program
    of several) and the task model's mean tokens (prompt + completion) and USD per call."""

    template_tokens: NonNegativeInt
    calls: NonNegativeInt = Field(default=0, description="the task model's calls measured")
    tokens_per_call: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    cost_per_call_usd: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    cost_unknown: bool = Field(default=False, description="some call's model has no price (counted as 0 USD)")


class PromotionData(_Data):
    prompt: PromptName
    decision: PromotionDecision
    alias: str = PRODUCTION_ALIAS
    from_version: PositiveInt | None = None
    to_version: PositiveInt | None = None
    baseline_score: UnitFloat | None = None
    candidate_score: UnitFloat | None = None
    improvement: FiniteFloat | None = None
    ci_low: FiniteFloat | None = None
    ci_high: FiniteFloat | None = None
    n_eval: NonNegativeInt | None = None
    request_id: Identifier | None = None
    traffic_share: UnitFloat | None = None
    segments: list[SegmentScore] = Field(default_factory=list)
    baseline_cost: VersionCost | None = None
    candidate_cost: VersionCost | None = None
    reason: str


class DeadLetterData(_Data):
    source_topic: str
    partition: NonNegativeInt
    offset: NonNegativeInt
    key: str | None = None
    payload: str
    payload_encoding: PayloadEncoding = "utf-8"
    payload_truncated: bool = False
    reason: DeadLetterReason
    error: str
    stage: DeadLetterStage


# -- the envelope ----------------------------------------------------------------------------

D = TypeVar("D", bound=_Data)


def _now() -> datetime:
    return datetime.now(UTC)


class CloudEvent(BaseModel, Generic[D]):
    """CloudEvents 1.0 structured mode; extension attributes are kept as extras."""

    model_config = ConfigDict(extra="allow")

    TYPE: ClassVar[str]

    specversion: Literal["1.0"]
    id: Identifier
    source: Annotated[str, StringConstraints(min_length=1)]
    type: str
    time: AwareDatetime
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    data: D

    @field_validator("time", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        """CloudEvents `time` is an RFC 3339 string; pydantic alone would also take a number or
        "12345" as Unix seconds (and land the event in 1970)."""
        if isinstance(value, datetime):
            return value
        if not isinstance(value, str) or not _RFC3339.fullmatch(value):
            raise ValueError(
                "must be an RFC 3339 timestamp string with a UTC offset, e.g. 2026-11-26T14:00:00Z"
            )
        return value

    @field_validator("time")
    @classmethod
    def _plausible(cls, value: datetime) -> datetime:
        """Not before 2000 and at most `MAX_CLOCK_SKEW` ahead of this clock: a time outside
        that is a producer bug and would age out of every window at once (or never)."""
        if value < EARLIEST_EVENT_TIME:
            raise ValueError(f"{value.isoformat()} is before {EARLIEST_EVENT_TIME.date().isoformat()}")
        if value > _now() + MAX_CLOCK_SKEW:
            raise ValueError(
                f"{value.isoformat()} is more than {MAX_CLOCK_SKEW.days} day ahead of this clock"
            )
        return value

    @model_validator(mode="after")
    def _subject_is_prompt(self) -> CloudEvent[D]:
        prompt = getattr(self.data, "prompt", None)
        if prompt is not None and self.subject != prompt:
            raise ValueError(f"subject must equal data.prompt ({prompt!r}), got {self.subject!r}")
        return self

    @classmethod
    def build(cls, data: Any, *, id: str | None = None, source: str = "gepa-stream", **extra: Any) -> Self:
        """A new event of this type: fresh id (unless given), current time, subject = prompt."""
        subject = getattr(data, "prompt", None) or extra.pop("subject", None)
        return cls(
            specversion="1.0",
            id=id or str(uuid.uuid4()),
            source=source,
            type=cls.TYPE,
            time=_now(),
            subject=subject,
            data=data,
            **extra,
        )

    @property
    def key(self) -> bytes | None:
        """The Kafka message key: the prompt name (co-partitions every event of a prompt)."""
        return self.subject.encode() if self.subject else None

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class TraceEvent(CloudEvent[TraceData]):
    TYPE: ClassVar[str] = "gepa.trace.v1"
    type: Literal["gepa.trace.v1"]


class RatingEvent(CloudEvent[RatingData]):
    TYPE: ClassVar[str] = "gepa.rating.v1"
    type: Literal["gepa.rating.v1"]


class CommandEvent(CloudEvent[CommandData]):
    TYPE: ClassVar[str] = "gepa.command.v1"
    type: Literal["gepa.command.v1"]


class OptimizationEvent(CloudEvent[OptimizationData]):
    TYPE: ClassVar[str] = "gepa.optimization.v1"
    type: Literal["gepa.optimization.v1"]


class SnapshotChunkEvent(CloudEvent[SnapshotChunkData]):
    TYPE: ClassVar[str] = "gepa.snapshot.v1"
    type: Literal["gepa.snapshot.v1"]


class PromptRegisteredEvent(CloudEvent[PromptRegisteredData]):
    TYPE: ClassVar[str] = "gepa.prompt.registered.v1"
    type: Literal["gepa.prompt.registered.v1"]


class PromotionEvent(CloudEvent[PromotionData]):
    TYPE: ClassVar[str] = "gepa.promotion.v1"
    type: Literal["gepa.promotion.v1"]


class DeadLetterEvent(CloudEvent[DeadLetterData]):
    TYPE: ClassVar[str] = "gepa.deadletter.v1"
    type: Literal["gepa.deadletter.v1"]


EVENT_CLASSES: dict[str, type[CloudEvent[Any]]] = {
    cls.TYPE: cls
    for cls in (
        TraceEvent,
        RatingEvent,
        CommandEvent,
        OptimizationEvent,
        SnapshotChunkEvent,
        PromptRegisteredEvent,
        PromotionEvent,
        DeadLetterEvent,
    )
}

Event = Annotated[
    TraceEvent
    | RatingEvent
    | CommandEvent
    | OptimizationEvent
    | SnapshotChunkEvent
    | PromptRegisteredEvent
    | PromotionEvent
    | DeadLetterEvent,
    Field(discriminator="type"),
]
