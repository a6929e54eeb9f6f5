"""Every optimization status event (`gepa.optimization.v1`), built one way: the ingest role's
`requested` and `skipped`, the optimizer role's `started`, `retrying`, `completed` and `failed`.
Consumers (the ingest role's cooldown, the ops page, dashboards) read them as one kind of fact."""

from __future__ import annotations

from typing import Any

from schemas import event_ids
from schemas.events import OptimizationData, OptimizationEvent, OptimizationStatus


def status_event(
    prompt: str,
    request_id: str,
    status: OptimizationStatus,
    *,
    source: str,
    event_id: str | None = None,
    **fields: Any,
) -> OptimizationEvent:
    """The status event of one request; its id is `<request id>:<status>` (schemas/event_ids.py)
    unless the caller's announcement has its own (a skipped command's)."""
    return OptimizationEvent.build(
        OptimizationData(request_id=request_id, prompt=prompt, status=status, **fields),
        id=event_id or event_ids.job_status(request_id, status),
        source=source,
    )
