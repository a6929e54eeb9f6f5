"""The files a job's run directory holds: what to run (`job.json`), what its process is doing
(`progress.json`), the side effects it has done in MLflow (`side_effects.json`) and how it
ended (`result.json`). The runner writes the first, the job process the others; a restart
reads them to resume or to re-announce without re-running."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, TypeAdapter

from schemas.config import PromptPolicy
from schemas.events import (
    ModelUsage,
    PromotionDecision,
    SegmentScore,
    StopReason,
    TriggerInfo,
    VersionCost,
)

JOB_FILE = "job.json"
EXAMPLES_FILE = "examples.json"
RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.json"
SIDE_EFFECTS_FILE = "side_effects.json"
GEPA_DIR = "gepa"  # GEPA's own state (`gepa_state.bin`): a resumed optimize stage goes on from it
SCRATCH_DB = "scratch-mlflow.db"  # the MLflow store `optimize_prompts` registers its trial versions in
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
OptimizerName = Literal["dspy_gepa", "mlflow_gepa"]


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


def read_model(path: Path, model: type[M]) -> M | None:
    """The model in `path`, or None if the file is missing or half-written."""
    try:
        return model.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


def write_atomically(path: Path, data: bytes) -> None:
    """Write then rename, so a crash never leaves half a file behind."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_model(path: Path, value: BaseModel) -> None:
    """`value` as JSON in `path`, atomically."""
    write_atomically(path, value.model_dump_json(indent=2).encode())


def frozen(path: Path, kind: Any) -> Any:
    """The value a checkpoint froze in `path`, or None if there is none (yet)."""
    try:
        return TypeAdapter(kind).validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


def checkpoint(path: Path, kind: Any, compute: Callable[[], T]) -> T:
    """The value frozen in `path`; else `compute()`, frozen there first (atomically), so a
    resumed job takes every decision input from its first computation."""
    found = frozen(path, kind)
    if found is not None:
        return found
    value = compute()
    write_atomically(path, TypeAdapter(kind).dump_json(value, indent=2))
    return value
