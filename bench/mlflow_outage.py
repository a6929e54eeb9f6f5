"""Benchmark: a job meets an MLflow outage longer than the MLflow client's own retries (defaults:
7 retries with backoff, a few minutes) and must complete once MLflow is back.

A real `mlflow server` (sqlite store, loopback port) and the daemon on the embedded broker:
the server is stopped while the job runs GEPA, kept down for `--outage-s` (300 by default),
then started again on the same port and store. Prints a timeline of the job's /status, the
job's attempts and events, and whether it ended as it must: completed once, one version,
promoted 1 -> 2.

    .venv/bin/python bench/mlflow_outage.py [--outage-s 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from schemas.third_parties import quiet_third_parties  # noqa: E402

quiet_third_parties()
for variable in (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
):
    os.environ.pop(variable, None)  # MLflow's default client retries

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from daemon.broker import EmbeddedBroker  # noqa: E402
from tests.daemon_harness import Daemon, produce, read_topic  # noqa: E402
from tests.e2e.loop_helpers import register_seed, sme_feed, write_policy  # noqa: E402
from tests.mlflow_server import MlflowServer  # noqa: E402

PROMPT = "router_outage"
START = time.monotonic()


def say(line: str) -> None:
    print(f"[{time.monotonic() - START:6.0f}s] {line}", flush=True)


def job(daemon: Daemon) -> dict:
    return next(iter(daemon.status().get("jobs", {}).values()), {})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage-s", type=float, default=300.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-outage-"))
    with EmbeddedBroker() as broker:
        server = MlflowServer(workdir).start()
        policy = write_policy(
            workdir / "policy.yaml", PROMPT, task_model="offline/support-router?latency_ms=40", calls=120
        )
        daemon = Daemon(
            broker.bootstrap_servers, policy, workdir, env={"GEPA_STREAM_MLFLOW_TRACKING_URI": server.uri}
        )
        try:
            daemon.start()
            server.wait_ready()
            say(f"mlflow server {server.uri} (sqlite {server.db}) and the daemon are up; workdir {workdir}")
            register_seed(server.uri, PROMPT)
            produce(broker.bootstrap_servers, sme_feed(daemon.topics, PROMPT))
            daemon.wait_until(lambda: job(daemon).get("stage") == "optimize", 600, "GEPA to start")
            server.stop()
            down = time.monotonic()
            say(f"MLflow stopped while the job runs GEPA; it stays down {args.outage_s:.0f}s")
            last = ""
            while time.monotonic() - down < args.outage_s:
                now = job(daemon)
                line = f"/status: stage={now.get('stage')} state={now.get('state')!r}"
                if line != last:
                    say(line)
                    last = line
                time.sleep(1.0)
            server.start().wait_ready()
            say(f"MLflow answers again on the same port and store after {time.monotonic() - down:.0f}s down")
            daemon.wait_until(
                lambda: any(
                    e.data.status in ("completed", "failed")
                    for e in read_topic(broker.bootstrap_servers, daemon.topics.optimizations, idle_s=0.3)
                ),
                900,
                "the job to end",
            )
            optimizations = [
                e.data for e in read_topic(broker.bootstrap_servers, daemon.topics.optimizations)
            ]
            promotions = [e.data for e in read_topic(broker.bootstrap_servers, daemon.topics.promotions)]
            mlflow.set_tracking_uri(server.uri)
            versions = {
                int(v.version): v.tags.get("gepa_stream.request_id")
                for v in MlflowClient().search_prompt_versions(PROMPT)
            }
        finally:
            daemon.stop()
            server.stop()
    say(
        "events on gepa.optimizations: "
        + ", ".join(
            f"{d.status}{f' (attempt {d.attempt} of {d.max_attempts})' if d.attempt else ''}"
            for d in optimizations
        )
    )
    for attempts_file in workdir.glob("state/jobs/*/attempts.json"):
        for attempt in json.loads(attempts_file.read_text())["attempts"]:
            say(
                f"attempt {attempt['number']}: {attempt['started']} -> {attempt['ended']}: {(attempt['cause'] or 'result')[:160]}"
            )
    say(
        f"versions: {versions}; promotions: {[(p.decision, p.from_version, p.to_version) for p in promotions]}"
    )
    terminal = [d.status for d in optimizations if d.status in ("completed", "failed")]
    request_ids = {d.request_id for d in optimizations}
    ok = (
        terminal == ["completed"]
        and any(d.status == "retrying" for d in optimizations)
        and sorted(versions) == [1, 2]
        and versions[2] in request_ids
        and [(p.decision, p.from_version, p.to_version) for p in promotions] == [("promoted", 1, 2)]
    )
    say(
        f"{'PASS' if ok else 'FAIL'}: a {args.outage_s:.0f}s MLflow outage with default client retries -> {terminal}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
