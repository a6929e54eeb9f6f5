"""Window gauges after a (re)assignment: only the prompts this worker now holds report figures."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import generate_latest

from daemon import prometheus_metrics
from daemon.app import build_faust_app
from daemon.ingest_agent import IngestAgent
from daemon.settings import Settings
from schemas.config import PolicyFile


def test_rebuild_drops_the_gauges_of_prompts_that_moved_to_another_worker(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    ingest = IngestAgent(settings, PolicyFile(prompts=[]), build_faust_app(settings))
    for gauge in (
        prometheus_metrics.WINDOW_EXAMPLES,
        prometheus_metrics.WINDOW_NEW_EXAMPLES,
        prometheus_metrics.ROLLING_SCORE,
    ):
        gauge.labels("moved_away").set(5)
    asyncio.run(ingest._rebuild())  # the on_recover callback, with no facts left on this worker
    assert 'prompt="moved_away"' not in generate_latest().decode()
