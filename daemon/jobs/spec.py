"""The formats of the files a job's run directory holds (`daemon/jobs/run_dir.py` names, reads
and writes them): what to run (`job.json`), its attempts, what its process is doing
(`progress.json`), the stages' checkpoints, the side effects it has done in MLflow
(`side_effects.json`) and how it ended (`result.json`). A restart reads them to resume or to
re-announce without re-running, so a field is only ever added, with a default."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from optimization.prompt_version import Version
from schemas.config import PromptPolicy
from schemas.events import (
    ModelUsage,
    OptimizerName,
    PromotionDecision,
    SegmentScore,
    StopReason,
    TriggerInfo,
    VersionCost,
)

Baseline = dict[str, Version]  # per prompt name, the production version a job started from


class JobSpec(BaseModel):
    request_id: str
    prompt: str
    policy: PromptPolicy
    tracking_uri: str
    experiment: str = "gepa-stream"
    trigger: TriggerInfo | None = None
    window_size: int
    num_threads: int = 4


class RegisteredVersion(BaseModel):
    name: str
    version: int
    uri: str
    parent_version: int | None


class Decision(BaseModel):
    """The gate's verdict for one prompt name, and what happened to the alias."""

    name: str
    decision: PromotionDecision
    from_version: int | None
    to_version: int
    improvement: float
    ci_low: float
    ci_high: float
    traffic_share: float | None = None  # a canary's share of traffic (canary_started)
    segments: list[SegmentScore] = Field(default_factory=list)  # the gate's per-segment comparison
    baseline_cost: VersionCost | None = None  # template tokens and cost per call (the gate's limits)
    candidate_cost: VersionCost | None = None
    reason: str


class JobResult(BaseModel):
    status: Literal["completed", "failed"]
    optimizer: OptimizerName | None = None
    error: str | None = None
    n_train: int = 0
    n_val: int = 0
    metric_calls: int = 0
    baseline_score: float | None = None
    candidate_score: float | None = None
    registered: list[RegisteredVersion] = Field(default_factory=list)
    decisions: list[Decision] = Field(default_factory=list)
    outage: Literal["MLflow"] | None = Field(
        default=None, description="the dependency whose outage failed the job (the runner retries it)"
    )
    usage: ModelUsage | None = None
    stopped_by: StopReason | None = None
    baseline_cost: VersionCost | None = Field(
        default=None,
        description="the baseline's template tokens and task-model tokens / USD per call, held out",
    )
    candidate_cost: VersionCost | None = None
    candidate_choice: str | None = Field(
        default=None, description="how the candidate was chosen among GEPA's (the template limit)"
    )
    resumable: bool = Field(
        default=False,
        description="an unexpected failure of an attempt that resumed a killed one (the runner retries it)",
    )

    @property
    def final(self) -> bool:
        """Whether the job ends with this result (else the runner tries again while attempts remain)."""
        return self.outage is None and not self.resumable


class SideEffects(BaseModel):
    """What the job process changed in MLflow so far: announced even if the job later fails."""

    registered: list[RegisteredVersion] = Field(default_factory=list)
    decisions: list[Decision] = Field(default_factory=list)


class Progress(BaseModel):
    """What the job process is doing now (read by /status and the demo)."""

    stage: str
    detail: str = ""
    pid: int | None = None
    waiting: str = Field(
        default="", description="a dependency the process waits for now (e.g. MLflow client retries)"
    )
    metric_calls: int | None = Field(default=None, description="GEPA's metric calls so far (stage optimize)")
    best_score: float | None = Field(
        default=None, description="the best validation score so far (stage optimize)"
    )


class Attempt(BaseModel):
    number: int
    started: datetime
    pid: int | None = None
    ended: datetime | None = None
    cause: str | None = Field(default=None, description="why it ended without a result (None: it has one)")
    outage: str | None = Field(default=None, description="the dependency whose outage ended it")
    counted: bool = Field(default=True, description="False when the daemon stopped it on a clean shutdown")
    announced: bool = Field(default=False, description="its `retrying` event was sent")


class Ledger(BaseModel):
    """Every start of a job's process and how it ended (`daemon/jobs/attempts.py` keeps it)."""

    attempts: list[Attempt] = Field(default_factory=list)
    started_announced: bool = Field(default=False, description="the job's `started` event was sent")


class CandidateCheckpoint(BaseModel):
    templates: dict[str, str]
    metric_calls: int
    stopped_by: StopReason | None = None
    choice: str | None = None  # why not GEPA's best: the best candidate within max_template_tokens


class HeldOut(BaseModel):
    baseline: list[float]
    candidate: list[float]
    baseline_cost: VersionCost | None = None  # None in a checkpoint older than the measurement
    candidate_cost: VersionCost | None = None
