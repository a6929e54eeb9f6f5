"""The process roles of the compose deployment, each as its own process on the real broker:
`--role optimizer` alone, and `--role ingest` beside two `--role optimizer` replicas."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from tests.daemon_harness import Daemon, metric_value, produce, prompts_by_partition, read_topic
from tests.e2e.loop_helpers import (
    announce_request,
    first_request,
    optimizer_shares,
    register_seed,
    sme_feed,
    wait_for_events,
    write_policies,
)

pytestmark = pytest.mark.e2e


def test_optimizer_role_alone_then_beside_ingest_with_two_replicas(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The compose split, each role its own process, sharing MLflow and the run-dir volume:
    1. two `--role optimizer` replicas alone take up a request produced by hand (real snapshot);
    2. while that job runs, `--role ingest` joins and fires one request for each of two prompts
       owned by different replicas; the whole loop runs. Every request: one job, one version,
       one decision, on the replica that owns its partition."""
    # one prompt per partition of the optimizations topic
    names = [names[0] for _, names in sorted(prompts_by_partition("router_split_", 3).items())]
    policy = write_policies(tmp_path / "policy.yaml", {name: {"calls": 40} for name in names})
    shared = {
        "GEPA_STREAM_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "GEPA_STREAM_STATE_DIR": str(tmp_path / "state"),
    }
    workdirs = [tmp_path / w for w in ("optimizer-0", "optimizer-1", "ingest")]
    for workdir in workdirs:
        workdir.mkdir()
    optimizers = [Daemon(kafka_bootstrap, policy, workdirs[0], env=shared)]
    optimizers.append(Daemon(kafka_bootstrap, policy, workdirs[1], prefix=optimizers[0].prefix, env=shared))
    ingest = Daemon(kafka_bootstrap, policy, workdirs[2], prefix=optimizers[0].prefix, env=shared)
    topics = ingest.topics
    for name in names:
        register_seed(shared["GEPA_STREAM_MLFLOW_TRACKING_URI"], name)
    try:
        for optimizer in optimizers:
            optimizer.launch("optimizer")
        for optimizer in optimizers:
            optimizer.wait_ready()
        assert optimizers[0].get("/healthz") == {
            "status": "ok"
        } and "gepa_stream_jobs_in_flight" in optimizers[0].get("/metrics")

        def settled() -> bool:
            shares = optimizer_shares(optimizers, topics.optimizations)
            return all(shares) and sorted(p for share in shares for p in share) == [0, 1, 2]

        optimizers[0].wait_until(settled, 90, "both replicas to share the optimizations partitions")
        shares = optimizer_shares(optimizers, topics.optimizations)
        owner = {p: i for i, share in enumerate(shares) for p in share}
        two = next(i for i, share in enumerate(shares) if len(share) == 2)
        alone, beside_a = (names[p] for p in sorted(shares[two]))
        beside_b = names[next(iter(shares[1 - two]))]

        # 1. optimizers alone: a request as the ingest role would announce it is taken up
        first = announce_request(kafka_bootstrap, topics, first_request(policy, sme_feed(topics, alone)))
        wait_for_events(
            optimizers[0],
            topics.optimizations,
            lambda evs: any((e.data.request_id, e.data.status) == (first, "started") for e in evs),
        )

        # 2. while it runs, ingest joins and fires two more requests, one per replica
        ingest.start("ingest")
        produce(kafka_bootstrap, [r for name in (beside_a, beside_b) for r in sme_feed(topics, name)])
        promotions = wait_for_events(
            ingest,
            topics.promotions,
            lambda evs: {e.data.prompt for e in evs} == {alone, beside_a, beside_b},
            timeout=300,
        )
        optimizations = read_topic(kafka_bootstrap, topics.optimizations)
        registered = read_topic(kafka_bootstrap, topics.prompts)
        for daemon in (ingest, *optimizers):
            assert daemon.process is not None and daemon.process.poll() is None, daemon.log.read_text()[
                -3000:
            ]
        assert optimizer_shares(optimizers, topics.optimizations) == shares, (
            "the group rebalanced during the test"
        )
        jobs_per_replica = [
            metric_value(o.get("/metrics"), "gepa_stream_jobs_total", status="completed") for o in optimizers
        ]
        assert optimizers[0].status()["prompts"] == {}, "an optimizer-only process keeps no windows"
        # the ops page on every role shows every decision; windows where ingest runs, job progress where jobs run
        pages: dict[Daemon, dict[str, Any]] = {}  # each role's page, as it showed the promotions
        for daemon in (ingest, *optimizers):

            def decided(daemon: Daemon = daemon) -> bool:
                state = daemon.get("/ui/api/state") or {"prompts": []}
                last = {p["name"]: (p["last_decision"] or {}).get("decision") for p in state["prompts"]}
                pages[daemon] = state
                return all(last.get(name) == "promoted" for name in (alone, beside_a, beside_b))

            daemon.wait_until(decided, 60, "the ops page to show the three promotions")
        ingest_page, optimizer_page = pages[ingest], pages[optimizers[0]]
        assert (
            ingest_page["windows_here"],
            ingest_page["jobs_here"],
            optimizer_page["windows_here"],
            optimizer_page["jobs_here"],
        ) == (True, False, False, True)
        windows = {p["name"]: p["window"] for p in ingest_page["prompts"]}
        assert windows[beside_a]["n_examples"] > 0 and windows[beside_b]["n_examples"] > 0
    finally:
        for daemon in (ingest, *optimizers):
            daemon.stop()
    requested = {e.data.request_id: e.data.prompt for e in optimizations if e.data.status == "requested"}
    assert sorted(requested.values()) == sorted([alone, beside_a, beside_b]), (
        "each prompt fired exactly one request"
    )
    assert first in requested
    by_status = Counter((e.data.request_id, e.data.status) for e in {e.id: e for e in optimizations}.values())
    for request_id in requested:
        assert by_status[(request_id, "started")] == 1 and by_status[(request_id, "completed")] == 1, (
            by_status
        )
    assert Counter(e.data.request_id for e in {e.id: e for e in registered}.values()) == Counter(
        requested.keys()
    )
    assert Counter(e.data.request_id for e in {e.id: e for e in promotions}.values()) == Counter(
        requested.keys()
    )
    assert all(e.data.decision == "promoted" for e in promotions), [e.data.reason for e in promotions]
    expected = Counter(owner[names.index(prompt)] for prompt in requested.values())
    assert jobs_per_replica == [expected[0], expected[1]], (
        f"each replica runs the requests of its partitions: {jobs_per_replica}"
    )
    mlflow.set_tracking_uri(shared["GEPA_STREAM_MLFLOW_TRACKING_URI"])
    for request_id, name in requested.items():
        carrying = [
            v.version
            for v in MlflowClient().search_prompt_versions(name)
            if v.tags.get("gepa_stream.request_id") == request_id
        ]
        assert carrying == [2], (name, carrying)
        assert mlflow.genai.load_prompt(f"prompts:/{name}@production", cache_ttl_seconds=0).version == 2
    assert read_topic(kafka_bootstrap, topics.dlq) == []
