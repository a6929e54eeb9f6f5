"""A registered prompt version as plain values (name, number, template, tags): what a backend starts
from and what the daemon reads of the MLflow Prompt Registry; importable without MLflow."""

from __future__ import annotations

from dataclasses import dataclass

from optimization.score_tag import final_score_of


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
