"""MLflow's own OTLP export into `gepa-stream bridge otel`: an app traced with `@mlflow.trace`
and the `openai` autolog, loading its registry prompt inside each call, exports to the bridge's
`/v1/traces`; each call's span with the linked prompt becomes one trace event (variables, answer,
version), and the autologged chat span without a prompt is counted, not published."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from optimization.offline.provider import FakeProvider
from tests.daemon_harness import metric_value
from tests.integration.test_otel_bridge import bridge_env, wait_for_traces
from tests.otel_app import BridgeProcess

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_mlflow_otlp_export_maps_linked_prompt_inputs_and_outputs(
    kafka_bootstrap: str, tmp_path: Path, fake_provider: FakeProvider
) -> None:
    env = bridge_env(kafka_bootstrap, tmp_path)
    bridge = BridgeProcess(env, tmp_path / "bridge.log", "--topic", "").start()
    try:
        app = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.mlflow_otlp_app",
                bridge.url("/v1/traces"),
                f"sqlite:///{tmp_path / 'app.db'}",
                "5",
            ],
            cwd=ROOT,
            env={**os.environ, "MLFLOW_TRACKING_URI": ""},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert app.returncode == 0, app.stderr[-3000:]
        calls = [json.loads(line) for line in app.stdout.splitlines()]
        events = wait_for_traces(kafka_bootstrap, f"{env['GEPA_STREAM_TOPIC_PREFIX']}traces", 5)
        metrics = bridge.get("/metrics") or ""
    finally:
        bridge.stop()
    assert sorted(
        (e.data.prompt, e.data.prompt_version, e.data.inputs["ticket"], e.data.outputs) for e in events
    ) == sorted(("support_router", 1, call["ticket"], call["answer"]) for call in calls)
    assert len(calls) == 5
    assert metric_value(metrics, "gepa_stream_otel_unmapped_total", kind="span", reason="no_prompt") == 5
