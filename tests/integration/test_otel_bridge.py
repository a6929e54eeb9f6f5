"""`gepa-stream bridge otel` as its own process on a real broker: spans recorded by the real
OpenInference, OpenLLMetry and official OpenTelemetry GenAI instrumentation of the `openai` client
(against the fake provider) arrive (a) as the Collector's Kafka exporter writes them, in both
encodings, and (b) from the SDK's own OTLP/HTTP exporter (OpenInference, OpenLLMetry); each LLM
call becomes exactly one trace event, a redelivered batch the same events, and the HTTP receiver
answers per the OTLP/HTTP spec."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from google.rpc.status_pb2 import Status
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from optimization.offline.provider import FakeProvider
from tests.daemon_harness import metric_value, produce, read_topic
from tests.otel_app import BridgeProcess, OtelApp, record_calls, traces_data

pytestmark = pytest.mark.integration
PROMPT = "support_router"
TOKEN = "ingest-token-0123456789"


@pytest.fixture(scope="module")
def recorded() -> dict[str, OtelApp]:
    """Four calls through each instrumentation library (OpenInference, OpenLLMetry, GenAI)."""
    return record_calls(4, version=2)


def bridge_env(kafka_bootstrap: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A fresh topic prefix and app id, and a policy file managing the router prompt."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"prompts:\n  - name: {PROMPT}\n    input_keys: [ticket]\n")
    prefix = f"o{uuid.uuid4().hex[:8]}."
    return {
        "GEPA_STREAM_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "GEPA_STREAM_TOPIC_PREFIX": prefix,
        "GEPA_STREAM_APP_ID": f"app-{prefix.rstrip('.')}",
        "GEPA_STREAM_STATE_DIR": str(tmp_path / "state"),
        "GEPA_STREAM_CONFIG": str(policy),
        **extra,
    }


def create_topic(bootstrap: str, name: str, partitions: int = 3) -> str:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return name


def wait_for_traces(bootstrap: str, topic: str, n: int, timeout: float = 90) -> list:
    deadline = time.monotonic() + timeout
    while True:
        events = read_topic(bootstrap, topic, idle_s=0.5)
        if len(events) >= n or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_collector_kafka_export_to_one_trace_event_per_call(
    kafka_bootstrap: str, tmp_path: Path, recorded: dict[str, OtelApp], encoding: str
) -> None:
    env = bridge_env(kafka_bootstrap, tmp_path)
    topic = create_topic(kafka_bootstrap, f"otlp_spans-{uuid.uuid4().hex[:8]}")
    batches = [traces_data(app.spans(), encoding) for app in recorded.values()]
    produce(kafka_bootstrap, [(topic, None, batch) for batch in batches])
    produce(kafka_bootstrap, [(topic, None, batches[0])])  # the Collector redelivers a batch
    bridge = BridgeProcess(env, tmp_path / "bridge.log", "--topic", topic, "--encoding", encoding).start()
    try:
        traces_topic = f"{env['GEPA_STREAM_TOPIC_PREFIX']}traces"
        events = wait_for_traces(kafka_bootstrap, traces_topic, 16)
        metrics = bridge.get("/metrics") or ""
    finally:
        out = bridge.stop()
    calls = [call for app in recorded.values() for call in app.calls]
    assert len(events) == 16  # 12 calls, 4 of them delivered twice
    unique = {e.id: e for e in events}
    assert len(unique) == 12
    assert sorted(
        (e.data.prompt, e.data.prompt_version, e.data.inputs["ticket"], e.data.outputs)
        for e in unique.values()
    ) == sorted((PROMPT, 2, call.ticket, call.answer) for call in calls)
    assert all(e.key == PROMPT.encode() for e in events)
    assert "in all: 16 span(s): 16 mapped, 0 unmapped; published: gepa.trace.v1 16" in out
    assert metric_value(metrics, "gepa_stream_otel_spans_total", outcome="mapped") == 16
    assert "OTLP protobuf by the C reader" in out  # the process as users run it reads with the extension


def test_sdk_otlp_http_exporter_and_the_receivers_answers(
    kafka_bootstrap: str, tmp_path: Path, recorded: dict[str, OtelApp]
) -> None:
    env = bridge_env(kafka_bootstrap, tmp_path, GEPA_STREAM_INGEST_TOKEN=TOKEN)
    bridge = BridgeProcess(
        env, tmp_path / "bridge.log", "--topic", "", "--max-body-bytes", str(2**20)
    ).start()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with FakeProvider() as provider:
            for library, compression in (
                ("openinference", Compression.Gzip),
                ("openllmetry", Compression.NoCompression),
            ):
                exporter = OTLPSpanExporter(
                    endpoint=bridge.url("/v1/traces"), headers=auth, compression=compression
                )
                app = OtelApp(library, provider, exporters=[exporter])  # type: ignore[arg-type]
                with app.instrumented():
                    app.serve(3)
                recorded[f"http-{library}"] = app
        proto = traces_data(recorded["openinference"].spans(), "otlp_proto")
        as_json = json.loads(traces_data(recorded["openllmetry"].spans()[:1], "otlp_json"))
        span = as_json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        for attribute in span["attributes"]:
            if attribute["key"] == "traceloop.prompt.template_variables":
                attribute["value"] = {"stringValue": "not json"}
        answers = {
            "no token": bridge.post(proto, {"Content-Type": "application/x-protobuf"}),
            "wrong token": bridge.post(
                proto, {"Content-Type": "application/x-protobuf", "Authorization": "Bearer no"}
            ),
            "text": bridge.post(b"hi", {"Content-Type": "text/plain", **auth}),
            "truncated": bridge.post(proto[:-7], {"Content-Type": "application/x-protobuf", **auth}),
            "bad gzip": bridge.post(
                proto, {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip", **auth}
            ),
            "too big": bridge.post(b"\0" * (2**20 + 1), {"Content-Type": "application/x-protobuf", **auth}),
            "gzip bomb": bridge.post(
                gzip.compress(b"\0" * 2**22),
                {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip", **auth},
            ),
            "bad inputs": bridge.post(
                json.dumps(as_json).encode(), {"Content-Type": "application/json", **auth}
            ),
            "proto": bridge.post(proto, {"Content-Type": "application/x-protobuf", **auth}),
        }
        traces_topic = f"{env['GEPA_STREAM_TOPIC_PREFIX']}traces"
        events = wait_for_traces(kafka_bootstrap, traces_topic, 10)
        metrics = bridge.get("/metrics") or ""
    finally:
        bridge.stop()
    assert {name: status for name, (status, _) in answers.items()} == {
        "no token": 401,
        "wrong token": 401,
        "text": 415,
        "truncated": 400,
        "bad gzip": 400,
        "too big": 413,
        "gzip bomb": 413,
        "bad inputs": 200,
        "proto": 200,
    }
    partial = json.loads(answers["bad inputs"][1])["partialSuccess"]
    assert partial == {"rejectedSpans": "1", "errorMessage": "unmapped LLM spans: bad_inputs 1"}
    calls = (
        recorded["http-openinference"].calls
        + recorded["http-openllmetry"].calls
        + recorded["openinference"].calls
    )
    assert sorted((e.data.inputs["ticket"], e.data.outputs) for e in events) == sorted(
        (call.ticket, call.answer) for call in calls
    )
    assert len({e.id for e in events}) == 10
    assert (
        metric_value(metrics, "gepa_stream_otel_bad_payloads_total", source="http", reason="too_large") == 2
    )
    assert metric_value(metrics, "gepa_stream_otel_unmapped_total", kind="span", reason="bad_inputs") == 1
    refused = Status.FromString(answers["truncated"][1])  # the spec's error body, in the request's encoding
    assert (refused.code, refused.message) == (3, "undecodable OTLP otlp_proto: not_protobuf")
    accepted = ExportTraceServiceResponse.FromString(answers["proto"][1])
    assert answers["proto"][0] == 200 and not accepted.HasField("partial_success")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--encoding", "otlp_xml"], {}, "error: --encoding: use otlp_proto or otlp_json, not 'otlp_xml'"),
        (["--convention", "langfuse"], {}, "error: --convention: use one of auto, openinference"),
        (["--topic", ""], {}, "error: --topic '' needs --http-port"),
        ([], {"GEPA_STREAM_INGEST_TOKEN": "short"}, "error: GEPA_STREAM_INGEST_TOKEN: must be at least 16"),
        ([], {"GEPA_STREAM_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "error: cannot reach Kafka at 127.0.0.1:1"),
    ],
)
def test_bad_options_and_an_unreachable_broker_are_one_line_each(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "bridge", "otel", *args],
        env={**os.environ, "GEPA_STREAM_CONFIG": str(tmp_path / "absent.yaml"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == (1 if "reach Kafka" in message else 2), result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_an_http_port_in_use_is_one_line(kafka_bootstrap: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "daemon", "bridge", "otel", "--topic", "", "--http-port", str(port)],
            env={**os.environ, **bridge_env(kafka_bootstrap, tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1, result.stderr
    assert f"error: --http-port {port}: cannot listen on 127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr
