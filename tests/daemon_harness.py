"""Run the daemon as a subprocess against a real broker, feed it, and read what it emits."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.partitioner.default import murmur2
from kafka.producer.future import RecordMetadata

from daemon.broker import free_port
from schemas import Topics, parse_event

QUICK_JOIN_ENV = {"GEPA_STREAM_SESSION_TIMEOUT_S": "4"}
"""Settings for a test's daemon (`Daemon(..., env=QUICK_JOIN_ENV)`) that is its consumer groups'
only member or shares them with few: the embedded broker (Tansu 0.6) holds every JoinGroup for
half the session timeout, so the default 10 s costs 5 s a join and a start joins two groups
(ingest, then the optimizer) one after the other. 4 s (heartbeats stay at 1 s) saves ~6 s a
start, and a SIGKILLed member leaves its group sooner."""


class Daemon:
    """`python -m daemon run` with its own topic prefix, app id, state dir and web port."""

    def __init__(
        self,
        bootstrap: str,
        config: Path,
        workdir: Path,
        *,
        prefix: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.config = config
        self.workdir = workdir
        self.prefix = prefix or f"t{uuid.uuid4().hex[:8]}."
        self.topics = Topics(self.prefix)
        self.port = free_port()
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "daemon.log"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "GEPA_STREAM_BOOTSTRAP_SERVERS": self.bootstrap,
            "GEPA_STREAM_TOPIC_PREFIX": self.prefix,
            "GEPA_STREAM_APP_ID": f"app-{self.prefix.rstrip('.')}",
            "GEPA_STREAM_STATE_DIR": str(self.workdir / "state"),
            "GEPA_STREAM_MLFLOW_TRACKING_URI": f"sqlite:///{self.workdir / 'mlflow.db'}",
            "GEPA_STREAM_WEB_PORT": str(self.port),
            "GEPA_STREAM_LOG_LEVEL": "warn",
            **self.extra_env,
        }

    def start(self, role: str = "all", timeout: float = 120.0) -> Daemon:
        return self.launch(role).wait_ready(timeout)

    def launch(self, role: str = "all") -> Daemon:
        """Start the process without waiting (start several, then `wait_ready` each)."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(self.config), "--role", role],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, timeout: float = 120.0) -> Daemon:
        self.wait_until(
            lambda: self.get("/readyz", ok_only=True) is not None, timeout, "the daemon to become ready"
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def get(self, path: str, ok_only: bool = False) -> Any:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                body = response.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        return json.loads(body) if path != "/metrics" else body.decode()

    def status(self) -> dict[str, Any]:
        return self.get("/status") or {"prompts": {}}

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        wait_all([self], condition, timeout, what)


def wait_all(
    daemons: Sequence[Daemon], condition: Callable[[], bool], timeout: float, what: str | Callable[[], str]
) -> None:
    """Poll `condition` until it holds; fail if any of the daemons exits first or the time runs
    out, with `what` (called then, if a callable: it can show what was last seen) and the logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for daemon in daemons:
            if daemon.process is not None and daemon.process.poll() is not None:
                raise AssertionError(
                    f"the daemon exited with {daemon.process.returncode}:\n{daemon.log.read_text()[-4000:]}"
                )
        if condition():
            return
        time.sleep(0.25)
    logs = "\n".join(daemon.log.read_text()[-4000:] for daemon in daemons)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what() if callable(what) else what}:\n{logs}"
    )


def job_processes(run_dir: Path) -> list[str]:
    """Live processes whose command line names `run_dir` (the job process runs `daemon.jobs.execute RUN_DIR`)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "daemon.jobs.execute" in text and str(run_dir) in text:
            found.append(text)
    return found


def prompts_by_partition(stem: str, partitions: int, per_partition: int = 1) -> dict[int, list[str]]:
    """`per_partition` prompt names `<stem><i>` on each partition of a topic keyed by prompt
    (kafka-python's default partitioner: murmur2 of the key), for tests that need every
    partition used."""
    by_partition: dict[int, list[str]] = {p: [] for p in range(partitions)}
    for i in range(1000):
        name = f"{stem}{i}"
        names = by_partition[(murmur2(name.encode()) & 0x7FFFFFFF) % partitions]
        if len(names) < per_partition:
            names.append(name)
        if all(len(names) == per_partition for names in by_partition.values()):
            return by_partition
    raise AssertionError("no names cover every partition")


def produce(
    bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes | None]]
) -> list[RecordMetadata]:
    """(topic, key, value) records in order (value None: a tombstone); returns where each landed."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=2_000_000)
    futures = [producer.send(topic, key=key, value=value) for topic, key, value in records]
    producer.flush()
    landed = [future.get(timeout=30) for future in futures]
    producer.close()
    return landed


def read_records(
    bootstrap: str, topic: str, *, idle_s: float = 1.5, timeout_s: float = 60.0
) -> list[ConsumerRecord]:
    """Every raw record of a topic from the beginning; stops after `idle_s` without records."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() - last < idle_s and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
                last = time.monotonic()
        return records
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, *, idle_s: float = 1.5, timeout_s: float = 60.0) -> list[Any]:
    """Every record of a topic from the beginning, parsed; stops after `idle_s` without records."""
    return [
        parse_event(record.value)
        for record in read_records(bootstrap, topic, idle_s=idle_s, timeout_s=timeout_s)
    ]


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics_text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        base, _, label_text = metric.partition("{")
        if base != name:
            continue
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if got == wanted:
            return float(value)
    return 0.0


@dataclass
class Changelog:
    """A table's changelog topic as the broker holds it."""

    live: dict[bytes, bytes]  # key -> latest value, tombstoned keys left out
    reported_ends: dict[int, int]  # partition -> the end offset the broker reports (ListOffsets)
    log_ends: dict[int, int]  # partition -> the offset after its last record

    @property
    def reported_short(self) -> bool:
        """The broker reports an end before the last record of some partition."""
        return any(self.reported_ends.get(p, 0) < end for p, end in self.log_ends.items())


def changelogs(daemon: Daemon) -> dict[str, Changelog]:
    """The changelogs of the ingest role's tables, read to their last record."""
    return {table: changelog(daemon, table) for table in ("facts", "triggers")}


def assert_recovered(daemon: Daemon, before: dict[str, Changelog]) -> None:
    """The restarted process restored every live record of every changelog read before the
    restart (not only as many as the broker reported: Tansu reports an end short after a
    batched write), so counts that match cannot come from redelivered input alone."""
    recovered = daemon.status()["recovered"]
    assert before["facts"].live, "the restart has state to restore"
    for table, log in before.items():
        assert recovered[table] == len(log.live), (table, recovered, log.reported_ends, log.log_ends)


def changelog(daemon: Daemon, table: str) -> Changelog:
    """The changelog of one of the daemon's Faust tables, read to its last record."""
    topic = f"{daemon.env['GEPA_STREAM_APP_ID']}-{table}-changelog"
    records = sorted(read_records(daemon.bootstrap, topic), key=lambda r: (r.partition, r.offset))
    live: dict[bytes, bytes] = {}
    for record in records:
        if record.value is None:
            live.pop(record.key, None)
        else:
            live[record.key] = record.value
    consumer = KafkaConsumer(bootstrap_servers=daemon.bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        reported = {tp.partition: end for tp, end in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()
    return Changelog(live, reported, {r.partition: r.offset + 1 for r in records})


@functools.cache
def reports_short_ends(bootstrap: str) -> bool:
    """Whether this broker answers ListOffsets(latest) with the last batch's base offset + 1
    (Tansu 0.6) instead of the log end: one batch of three records, then ask."""
    topic = f"probe-ends-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=1000)
    for i in range(3):
        producer.send(topic, value=b"%d" % i)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        return consumer.end_offsets([tp])[tp] < 3
    finally:
        consumer.close()
