"""The daemon's tags on prompt versions, and what they say of a version — importable without MLflow
(the ops page of an ingest-only worker reads these)."""

from __future__ import annotations

from optimization.prompt_version import Version

TAG_REQUEST = "gepa_stream.request_id"
TAG_PREVIOUS = "gepa_stream.previous_production"
TAG_AWAITING = "gepa_stream.awaiting_approval"
TAG_GUARD_ROLLBACK = "gepa_stream.rolled_back_by_guard"
TAG_CANARY_ABORTED = "gepa_stream.canary_aborted"
BLOCKING_TAGS = {TAG_GUARD_ROLLBACK: "guard", TAG_CANARY_ABORTED: "rollout"}
"""Tags of a version a live watch took out of traffic (-> the watcher): its template is not promoted again."""


def awaiting_approval(version: Version) -> bool:
    """Whether the version waits for an operator's approval (manual promotion mode)."""
    return version.tags.get(TAG_AWAITING) == "true"
