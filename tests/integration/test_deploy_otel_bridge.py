"""The compose deployment's OTel bridge as its own process: the service's command behind the
Dockerfile's entrypoint, with the service's settings and policy file, its addresses swapped for
the test broker. Its healthcheck passes, a span exported over OTLP/HTTP becomes a trace event on
gepa.traces, and /metrics counts it and exports every bridge metric the dashboard queries."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from optimization.offline.provider import FakeProvider
from schemas import Topics
from tests.daemon_harness import metric_value, read_topic
from tests.deploy.deployment import bridge_services, command, container_env, instructions, mounted_from
from tests.deploy.metric_names import dashboard_metric_names, exported_metric_names, load_dashboard
from tests.otel_app import BridgeProcess, OtelApp, traces_data

pytestmark = pytest.mark.integration


def test_the_compose_bridge_answers_its_healthcheck_and_turns_an_otlp_http_export_into_a_trace(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    ((name, service),) = bridge_services().items()
    words = command(service)
    at = words.index("--http-port")
    compose_port = words[at + 1]
    (entrypoint,) = instructions("ENTRYPOINT")
    script = shutil.which(json.loads(entrypoint)[0], path=str(Path(sys.executable).parent))
    assert script is not None, f"{entrypoint} is not installed next to {sys.executable}"
    env = {k: v for k, v in container_env(service).items() if k.startswith("GEPA_STREAM_")}
    policy = mounted_from(service, env["GEPA_STREAM_CONFIG"])
    assert policy is not None, f"{name}: no policy file mounted"
    prefix = f"d{uuid.uuid4().hex[:8]}."  # the shared test broker: topics and group of its own
    env.update(
        GEPA_STREAM_BOOTSTRAP_SERVERS=kafka_bootstrap,
        GEPA_STREAM_MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        GEPA_STREAM_CONFIG=str(policy),
        GEPA_STREAM_STATE_DIR=str(tmp_path / "state"),
        GEPA_STREAM_TOPIC_PREFIX=prefix,
        GEPA_STREAM_APP_ID=f"app-{prefix.rstrip('.')}",
    )
    # the service's command, on a free port instead of the published one
    args = [*words[2:at], *words[at + 2 :]]
    bridge = BridgeProcess(env, tmp_path / "bridge.log", *args, entrypoint=[script]).start()
    try:
        check = service["healthcheck"]["test"]
        assert check[:2] == ["CMD", "python"], check
        probe = [sys.executable, *(w.replace(f":{compose_port}/", f":{bridge.port}/") for w in check[2:])]
        healthy = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        with FakeProvider() as provider:
            app = OtelApp("openinference", provider)
            with app.instrumented():
                (call,) = app.serve(1)
        status, body = bridge.post(
            traces_data(app.spans(), "otlp_proto"), {"Content-Type": "application/x-protobuf"}
        )
        events = read_topic(kafka_bootstrap, Topics(prefix).traces, idle_s=0.5)  # acknowledged before the 200
        metrics = bridge.get("/metrics") or ""
    finally:
        out = bridge.stop()
    assert healthy.returncode == 0, healthy.stderr
    assert status == 200 and not ExportTraceServiceResponse.FromString(body).HasField("partial_success")
    assert [(e.data.prompt, e.data.inputs["ticket"], e.data.outputs) for e in events] == [
        (app.prompt, call.ticket, call.answer)
    ]
    assert metric_value(metrics, "gepa_stream_otel_published_total", type="gepa.trace.v1") == 1
    panels = {n for n in dashboard_metric_names(load_dashboard()) if n.startswith("gepa_stream_otel_")}
    assert len(panels) == 4 and panels <= exported_metric_names(metrics), panels - exported_metric_names(
        metrics
    )
    assert "in all: 1 span(s): 1 mapped" in out, out[-2000:]
