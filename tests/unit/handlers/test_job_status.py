"""Every optimization status event is built by `handlers.job_status.status_event`: the tree is
read for any other construction of one, and the builder's ids are the contract's."""

from __future__ import annotations

from handlers.job_status import status_event
from tests.unit.handlers.helpers import ROOT, calls_outside


def test_no_status_event_is_built_outside_the_builder() -> None:
    assert (
        calls_outside(ROOT / "handlers" / "job_status.py", ("OptimizationEvent.build", "OptimizationData"))
        == []
    )


def test_the_id_is_the_request_and_status_unless_the_announcement_has_its_own() -> None:
    started = status_event("router", "r1", "started", source="gepa-stream/test")
    assert (started.id, started.subject, started.data.request_id, started.source) == (
        "r1:started",
        "router",
        "r1",
        "gepa-stream/test",
    )
    skipped = status_event("router", "skipped:c1", "skipped", source="s", event_id="skipped:c1", error="busy")
    assert (skipped.id, skipped.data.error) == ("skipped:c1", "busy")
