"""The deployment's contracts against a running daemon (subprocess, real broker, sqlite MLflow):
the Grafana dashboard queries only metric names the daemon exports on /metrics, and a Kafka SASL
password set in the settings shows up in no log line, event, table changelog, state file or
MLflow tag — neither in a run that works nor in one that fails to authenticate."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord

from tests.daemon_harness import Daemon, produce, read_records
from tests.deploy.metric_names import dashboard_metric_names, exported_metric_names, load_dashboard
from tests.e2e.loop_helpers import register_seed, sme_feed, wait_for_events, write_policy

pytestmark = pytest.mark.integration

PROMPT = "router_deploy"
SECRET = f"fake-sasl-{uuid.uuid4().hex}"
# PLAINTEXT with complete SASL settings: the daemon works, and the password is loaded and handed
# to the kafka-python and aiokafka clients (which use it only on SASL_*). Debug logs: the most a
# log could show.
SASL = {
    "GEPA_STREAM_KAFKA_SASL_MECHANISM": "PLAIN",
    "GEPA_STREAM_KAFKA_SASL_USERNAME": "gepa",
    "GEPA_STREAM_KAFKA_SASL_PASSWORD": SECRET,
    "GEPA_STREAM_LOG_LEVEL": "debug",
}


@dataclass
class Runs:
    working: Daemon
    metrics: str
    records: list[ConsumerRecord]
    refused: Daemon
    refused_error: BaseException | None


def daemon_topics(daemon: Daemon) -> list[str]:
    """The daemon's topics: the contract's (its prefix) and Faust's changelogs (its app id)."""
    consumer = KafkaConsumer(bootstrap_servers=daemon.bootstrap)
    try:
        prefixes = (daemon.prefix, daemon.env["GEPA_STREAM_APP_ID"])
        return sorted(t for t in consumer.topics() if t.startswith(prefixes))
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def runs(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """1. start a daemon with SASL_PLAINTEXT against the PLAINTEXT broker in a thread (its topic
    admin client fails the SASL handshake and it exits), 2. meanwhile run the whole loop on a working
    daemon with the secret set: SME feed plus a bad record -> trigger -> GEPA job -> registered
    version with tags -> promotion, 3. keep its /metrics and every record on its topics."""
    config = write_policy(tmp_path_factory.mktemp("config") / "gepa-stream.yaml", PROMPT, n=40, calls=20)
    refused_env = {**SASL, "GEPA_STREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    refused = Daemon(kafka_bootstrap, config, tmp_path_factory.mktemp("refused"), env=refused_env)
    working = Daemon(kafka_bootstrap, config, tmp_path_factory.mktemp("working"), env=SASL)
    register_seed(working.env["GEPA_STREAM_MLFLOW_TRACKING_URI"], PROMPT)
    with ThreadPoolExecutor(max_workers=1) as pool:
        refused_start = pool.submit(refused.start, "all", 120.0)
        try:
            working.start()
            bad_record = (working.topics.traces, PROMPT.encode(), b"not json")
            produce(kafka_bootstrap, [bad_record, *sme_feed(working.topics, PROMPT, n=40)])
            wait_for_events(working, working.topics.promotions, lambda events: len(events) >= 1)
            metrics = working.get("/metrics")
            records = [
                r
                for topic in daemon_topics(working)
                for r in read_records(kafka_bootstrap, topic, idle_s=0.5)
            ]
            yield Runs(working, metrics, records, refused, refused_start.exception())
        finally:
            working.stop()
            refused.stop()


def test_dashboard_queries_only_metrics_the_running_daemon_exports(runs: Runs) -> None:
    exported = exported_metric_names(runs.metrics)
    assert "gepa_stream_events_total" in exported  # a real scrape, with samples
    missing = dashboard_metric_names(load_dashboard()) - exported
    assert not missing, f"the dashboard queries metrics /metrics does not export: {sorted(missing)}"


def test_secret_is_in_no_log_event_changelog_state_file_or_mlflow_tag(runs: Runs) -> None:
    secret = SECRET.encode()
    assert runs.working.env["GEPA_STREAM_KAFKA_SASL_PASSWORD"] == SECRET
    topics = {record.topic for record in runs.records}
    assert (
        set(runs.working.topics.all()) - {runs.working.topics.commands} <= topics
    )  # every output was written
    assert any(t.endswith("-changelog") for t in topics), topics
    for record in runs.records:
        fields = [record.key or b"", record.value or b"", *(value for _, value in record.headers or [])]
        assert not any(secret in field for field in fields), f"{record.topic}@{record.offset}"
    files = [path for path in runs.working.workdir.rglob("*") if path.is_file()]
    assert runs.working.log in files and runs.working.log.stat().st_size > 0
    for path in files:  # the log, Faust and job state, the MLflow sqlite store (tags included)
        assert secret not in path.read_bytes(), path
    tags = mlflow_tags(runs.working.workdir / "mlflow.db")
    assert "gepa_stream.request_id" in tags  # the job registered a tagged version
    assert not any(SECRET in tag for tag in tags)


def test_secret_is_not_in_the_output_of_a_run_that_fails_to_authenticate(runs: Runs) -> None:
    assert isinstance(runs.refused_error, AssertionError) and "exited with" in str(runs.refused_error)
    assert "exited with 2:" not in str(runs.refused_error), "a config error, not the failed connection"
    output = runs.refused.log.read_bytes()
    assert b"Sasl" in output or b"Authentication" in output, output[-2000:]  # the SASL handshake failed
    assert SECRET.encode() not in output


def mlflow_tags(store: Path) -> list[str]:
    """Every tag key and value in an MLflow sqlite store (runs, experiments, prompts, traces)."""
    if not store.exists():
        return []
    with sqlite3.connect(store) as db:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%tag%'"
            )
        ]
        return [
            str(cell) for table in tables for row in db.execute(f'SELECT * FROM "{table}"') for cell in row
        ]
