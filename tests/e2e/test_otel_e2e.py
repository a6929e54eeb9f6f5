"""End to end from OpenTelemetry: an app instrumented with OpenInference ships its spans through a
Collector's Kafka exporter, one instrumented with OpenLLMetry exports them over OTLP/HTTP; both
reach the daemon (ingest role, subprocess) through `gepa-stream bridge otel`, an SME rates the
calls, and the window fills and fires an optimization request. A redelivered batch changes no
window, a bridge SIGKILLed mid-stream loses and duplicates nothing once restarted, and two bridges
share the topic's partitions, the survivor taking over from one SIGKILLed."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from optimization.offline.provider import FakeProvider
from schemas import RatingData, RatingEvent
from tests.daemon_harness import QUICK_JOIN_ENV, Daemon, metric_value, produce, read_topic
from tests.e2e.loop_helpers import write_policy
from tests.integration.test_otel_bridge import create_topic
from tests.otel_app import BridgeProcess, OtelApp, traces_data

pytestmark = pytest.mark.e2e
PROMPT = "support_router"


def bridge_env(daemon: Daemon) -> dict[str, str]:
    """The daemon's broker, topics and app id (the bridge's group is `<app id>-otel-bridge`)."""
    return {
        name: daemon.env[name]
        for name in (
            "GEPA_STREAM_BOOTSTRAP_SERVERS",
            "GEPA_STREAM_TOPIC_PREFIX",
            "GEPA_STREAM_APP_ID",
            "GEPA_STREAM_STATE_DIR",
        )
    } | {"GEPA_STREAM_CONFIG": str(daemon.config)}


def sme_ratings(daemon: Daemon, app: OtelApp) -> None:
    """An SME rates every call of the app, naming it as the bridge does (`<trace id>:<span id>`)."""
    records = []
    for call, span in zip(app.calls, app.spans()):
        right = call.answer == call.expected
        rating = RatingEvent.build(
            RatingData(
                prompt=PROMPT,
                trace_id=f"{span.context.trace_id:032x}:{span.context.span_id:016x}",
                rating="excellent" if right else "poor",
                correction=None if right else call.expected,
                rater="sme-1",
            )
        )
        records.append((daemon.topics.ratings, rating.key, rating.to_json()))
    produce(daemon.bootstrap, records)


def prompt_status(daemon: Daemon) -> dict:
    return daemon.status()["prompts"].get(PROMPT, {})


def ingest_and_topic(kafka_bootstrap: str, tmp_path: Path, min_examples: int) -> tuple[Daemon, str]:
    """A started ingest daemon for the router prompt, and a fresh topic for the Collector's records."""
    daemon = Daemon(kafka_bootstrap, write_policy(tmp_path / "policy.yaml", PROMPT, n=min_examples), tmp_path)
    daemon.start(role="ingest")
    return daemon, create_topic(kafka_bootstrap, f"otlp_spans-{uuid.uuid4().hex[:8]}")


def test_spans_from_kafka_and_otlp_http_fill_the_window_and_trigger(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    daemon, topic = ingest_and_topic(kafka_bootstrap, tmp_path, 12)
    bridge = BridgeProcess(bridge_env(daemon), tmp_path / "bridge.log", "--topic", topic).start()
    try:
        with FakeProvider() as provider:
            collector_app = OtelApp("openinference", provider)
            with collector_app.instrumented():
                collector_app.serve(6)
            batch = traces_data(collector_app.spans(), "otlp_proto")
            produce(kafka_bootstrap, [(topic, None, batch)])
            http_app = OtelApp(
                "openllmetry", provider, exporters=[OTLPSpanExporter(endpoint=bridge.url("/v1/traces"))]
            )
            with http_app.instrumented():
                http_app.serve(6, start=6)
        sme_ratings(daemon, collector_app)
        sme_ratings(daemon, http_app)
        daemon.wait_until(lambda: prompt_status(daemon).get("n_examples") == 12, 90, "12 examples")
        requested = [
            e
            for e in read_topic(kafka_bootstrap, daemon.topics.optimizations)
            if e.data.status == "requested"
        ]
        assert [(e.data.trigger.rule, e.data.snapshot.n_examples) for e in requested] == [
            ("min_examples", 12)
        ]

        produce(kafka_bootstrap, [(topic, None, batch)])  # the Collector redelivers the batch
        daemon.wait_until(
            lambda: (
                metric_value(
                    daemon.get("/metrics") or "",
                    "gepa_stream_duplicate_events_total",
                    type="gepa.trace.v1",
                )
                == 6
            ),
            60,
            "the redelivered spans to reach the daemon",
        )
        status = prompt_status(daemon)
        assert (status["n_examples"], status["waiting_traces"], status["waiting_ratings"]) == (12, 0, 0)
        assert len(read_topic(kafka_bootstrap, daemon.topics.optimizations, idle_s=0.5)) == 1
        assert read_topic(kafka_bootstrap, daemon.topics.dlq, idle_s=0.5) == []
    finally:
        out = bridge.stop()
        daemon.stop()
    assert "in all: 18 span(s): 18 mapped, 0 unmapped; published: gepa.trace.v1 18" in out


def one_record_per_call(topic: str, calls: int = 120) -> tuple[OtelApp, list[tuple[str, None, bytes]]]:
    """An OpenInference app's `calls` calls, each span in a Collector record of its own (no key:
    the records spread over the topic's partitions)."""
    with FakeProvider() as provider:
        app = OtelApp("openinference", provider)
        with app.instrumented():
            app.serve(calls)
    return app, [(topic, None, traces_data([span], "otlp_proto")) for span in app.spans()]


def wait_for_traces(daemon: Daemon, n: int, why: str) -> None:
    daemon.wait_until(
        lambda: prompt_status(daemon).get("waiting_traces") == n,
        120,
        lambda: f"{n} traces in the window's join buffer {why} (status {prompt_status(daemon)})",
    )


def assert_one_event_per_call(events: list, app: OtelApp) -> None:
    """Each call is one trace event id (redeliveries repeat an id), carrying its own inputs."""
    assert len({e.id for e in events}) == len(app.calls)
    assert sorted(e.data.inputs["ticket"] for e in {e.id: e for e in events}.values()) == sorted(
        call.ticket for call in app.calls
    )


def published(bridge: BridgeProcess) -> float:
    """Trace events the bridge has had acknowledged (its `/metrics`)."""
    return metric_value(
        bridge.get("/metrics") or "", "gepa_stream_otel_published_total", type="gepa.trace.v1"
    )


def test_a_bridge_killed_mid_stream_loses_and_duplicates_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    daemon, topic = ingest_and_topic(kafka_bootstrap, tmp_path, 500)
    app, records = one_record_per_call(topic)

    def collector() -> None:  # the Collector exports as the calls happen, ~40 batches a second
        for i in range(1, len(records), 4):
            produce(kafka_bootstrap, records[i : i + 4])
            time.sleep(0.1)

    env = bridge_env(daemon)
    bridge = BridgeProcess(env, tmp_path / "bridge.log", "--topic", topic).start()
    feeding = threading.Thread(target=collector)
    try:
        produce(kafka_bootstrap, records[:1])
        deadline = time.monotonic() + 90
        while published(bridge) < 1:  # the bridge has joined its group and reads
            assert time.monotonic() < deadline, bridge.log.read_text()[-3000:]
            time.sleep(0.05)
        feeding.start()
        while published(bridge) < 30:
            assert time.monotonic() < deadline, bridge.log.read_text()[-3000:]
            time.sleep(0.05)
        bridge.kill()
        published_before = len(read_topic(kafka_bootstrap, daemon.topics.traces, idle_s=0.3))
        bridge = BridgeProcess(env, tmp_path / "bridge-2.log", "--topic", topic).start()
        feeding.join()
        wait_for_traces(daemon, 120, "after the restart")
        events = read_topic(kafka_bootstrap, daemon.topics.traces, idle_s=1.0)
    finally:
        if feeding.is_alive():
            feeding.join()
        bridge.stop()
        daemon.stop()
    assert 30 <= published_before < 120  # killed mid-stream
    assert_one_event_per_call(events, app)


def test_two_bridges_share_the_partitions_and_the_survivor_takes_over(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Replicas in one consumer group (README, Scale out): each maps the spans of its partitions;
    SIGKILL one, and the other takes its partitions over: every call is one event in the window."""
    daemon, topic = ingest_and_topic(kafka_bootstrap, tmp_path, 500)  # 3 partitions
    app, records = one_record_per_call(topic)
    env = bridge_env(daemon) | QUICK_JOIN_ENV
    bridges = [BridgeProcess(env, tmp_path / f"bridge-{name}.log", "--topic", topic).start() for name in "ab"]
    try:
        fed, deadline = 0, time.monotonic() + 90
        while min(map(published, bridges)) < 1:  # the group has both, each mapping its partitions
            assert time.monotonic() < deadline and fed < 60, [b.log.read_text()[-2000:] for b in bridges]
            produce(kafka_bootstrap, records[fed : fed + 1])
            fed += 1
            time.sleep(0.1)
        produce(kafka_bootstrap, records[fed:60])
        wait_for_traces(daemon, 60, "from both bridges")
        bridges[0].kill()
        produce(kafka_bootstrap, records[60:])
        wait_for_traces(daemon, 120, "once the survivor took over")
        events = read_topic(kafka_bootstrap, daemon.topics.traces, idle_s=1.0)
    finally:
        for bridge in bridges:
            if bridge.process is not None:
                bridge.stop()
        daemon.stop()
    assert_one_event_per_call(events, app)
