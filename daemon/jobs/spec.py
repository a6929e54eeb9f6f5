"""The files a job's run directory holds: what to run (`job.json`) and how it ended
(`result.json`). The runner writes the first, the job process the second; a restart
reads both to resume or to re-announce without re-running."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from schemas.config import PromptPolicy
from schemas.events import PromotionDecision, TriggerInfo

JOB_FILE = "job.json"
EXAMPLES_FILE = "examples.json"
RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.json"


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
    reason: str


class JobResult(BaseModel):
    status: Literal["completed", "failed"]
    optimizer: Literal["dspy_gepa", "mlflow_gepa"] | None = None
    error: str | None = None
    n_train: int = 0
    n_val: int = 0
    metric_calls: int = 0
    baseline_score: float | None = None
    candidate_score: float | None = None
    registered: list[RegisteredVersion] = Field(default_factory=list)
    decisions: list[Decision] = Field(default_factory=list)


class Progress(BaseModel):
    """What the job process is doing now (read by /status and the demo)."""

    stage: str
    detail: str = ""


def read_model(path: Path, model: type[BaseModel]) -> BaseModel | None:
    """The model in `path`, or None if the file is missing or half-written."""
    try:
        return model.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


def write_model(path: Path, value: BaseModel) -> None:
    """Atomic write (rename), so a crash never leaves half a file behind."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(value.model_dump_json(indent=2))
    tmp.replace(path)
