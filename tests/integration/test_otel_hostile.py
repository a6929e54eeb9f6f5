"""5,000 malformed or hostile OTLP payloads through `gepa-stream bridge otel` (4,000 records on the
Collector's topic, 1,000 OTLP/HTTP requests), with 50 valid single-call batches among them: every
bad one is counted by reason, the bridge never crashes, and every valid span becomes its event."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import pytest

from optimization.offline.provider import FakeProvider
from tests.daemon_harness import metric_value, produce
from tests.integration.test_otel_bridge import bridge_env, create_topic, wait_for_traces
from tests.otel_app import BridgeProcess, OtelApp, deep_span_payload, traces_data

pytestmark = pytest.mark.integration
PROTO = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


def test_hostile_payloads_are_counted_and_valid_spans_among_them_arrive(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    with FakeProvider() as provider:
        app = OtelApp("openinference", provider)
        with app.instrumented():
            app.serve(50)
    valid = [traces_data([span], "otlp_proto") for span in app.spans()]
    sample = valid[0]
    unmanaged = sample.replace(b"support_router", b"support_rooter")  # a prompt the policy does not manage
    kafka_hostile = {
        "truncated": [sample[: 1 + i % (len(sample) - 2)] for i in range(800)],
        "wrong encoding": [traces_data(app.spans()[:1], "otlp_json")] * 800,
        "not utf-8": [sample.replace(b"support_router", b"support_r\xffuter")] * 800,
        "deep": [deep_span_payload(150 + i % 50) for i in range(800)],
        "unmanaged": [unmanaged] * 800,
    }
    assert all(len(payloads) == 800 for payloads in kafka_hostile.values())
    env = bridge_env(kafka_bootstrap, tmp_path)
    topic = create_topic(kafka_bootstrap, f"otlp_spans-{uuid.uuid4().hex[:8]}")
    hostile = [p for payloads in kafka_hostile.values() for p in payloads]
    records = []
    for i, payload in enumerate(hostile):
        records.append((topic, None, payload))
        if i % 100 == 99:
            records.append((topic, None, valid[i // 100]))
    assert [r[2] for r in records if r[2] in valid] == valid[:40]
    bridge = BridgeProcess(
        env, tmp_path / "bridge.log", "--topic", topic, "--max-body-bytes", str(4 * 2**20)
    ).start()
    try:
        produce(kafka_bootstrap, records)
        ten_mb = b"\x0a" * (10 * 2**20)
        bomb = gzip.compress(b"\0" * (64 * 2**20))
        deep_json = b'{"resourceSpans": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        http_hostile = (
            [(ten_mb, PROTO)] * 3
            + [(bomb, {**PROTO, "Content-Encoding": "gzip"})] * 197
            + [(sample[:-5], PROTO)] * 200
            + [(b'{"resourceSpans": [{"x": "\xff\xfe"}]}', JSON)] * 200
            + [(deep_json, JSON)] * 200
            + [(sample, JSON)] * 200
        )
        answers = []
        for i, (body, headers) in enumerate(http_hostile):
            answers.append(bridge.post(body, headers)[0])
            if i % 100 == 0:
                assert bridge.post(valid[40 + i // 100], PROTO)[0] == 200
        traces_topic = f"{env['GEPA_STREAM_TOPIC_PREFIX']}traces"
        events = wait_for_traces(kafka_bootstrap, traces_topic, 50)
        metrics = bridge.get("/metrics") or ""
        assert bridge.get("/healthz") is not None
    finally:
        out = bridge.stop()
    assert len(hostile) + len(http_hostile) == 5000
    assert {e.data.inputs["ticket"] for e in events} == {call.ticket for call in app.calls}
    assert len(events) == len({e.id for e in events}) == 50
    assert answers == [413] * 200 + [400] * 800

    def bad(source: str, reason: str) -> float:
        return metric_value(metrics, "gepa_stream_otel_bad_payloads_total", source=source, reason=reason)

    assert bad("kafka", "not_protobuf") == 3200
    assert (
        metric_value(metrics, "gepa_stream_otel_unmapped_total", kind="span", reason="unmanaged_prompt")
        == 800
    )
    assert (bad("http", "too_large"), bad("http", "not_protobuf"), bad("http", "not_json")) == (200, 200, 600)
    assert "50 mapped, 800 unmapped (unmanaged_prompt 800)" in out
    assert "Traceback" not in out
