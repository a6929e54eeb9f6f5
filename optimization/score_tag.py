"""The `final_score` tag of a registered prompt version: its mean held-out score, read without MLflow."""

from __future__ import annotations

from collections.abc import Mapping

TAG_FINAL_SCORE = "final_score"


def final_score_of(tags: Mapping[str, str]) -> float | None:
    """A version's tagged mean held-out score, or None if it has none (a seed) or a foreign non-number."""
    try:
        return float(tags[TAG_FINAL_SCORE])
    except (KeyError, ValueError):
        return None
