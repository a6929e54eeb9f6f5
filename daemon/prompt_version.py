"""A prompt version as the daemon reads it from the MLflow Prompt Registry, and the daemon's tags on
versions — importable without MLflow (the ops page of an ingest-only worker reads these)."""

from __future__ import annotations

from dataclasses import dataclass

from optimization.score_tag import final_score_of

TAG_REQUEST = "gepa_stream.request_id"
TAG_PREVIOUS = "gepa_stream.previous_production"
TAG_AWAITING = "gepa_stream.awaiting_approval"
TAG_GUARD_ROLLBACK = "gepa_stream.rolled_back_by_guard"
TAG_CANARY_ABORTED = "gepa_stream.canary_aborted"
BLOCKING_TAGS = {TAG_GUARD_ROLLBACK: "guard", TAG_CANARY_ABORTED: "rollout"}
"""Tags of a version a live watch took out of traffic (-> the watcher): its template is not promoted again."""


@dataclass(frozen=True, slots=True)
class Version:
    name: str
    version: int
    template: str
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"

    @property
    def final_score(self) -> float | None:
        """The tagged mean held-out score (`final_score`), None for a seed or a foreign non-number."""
        return final_score_of(self.tags)

    @property
    def awaiting_approval(self) -> bool:
        return self.tags.get(TAG_AWAITING) == "true"
