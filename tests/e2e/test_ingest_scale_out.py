"""Two `--role ingest` workers in one consumer group on the real broker: each prompt's window is
on exactly one worker, through a SIGKILL (the survivor takes every partition) and a new worker
joining (the survivor drops the windows of the partitions that moved away, gauges included)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from schemas import Topics, TraceData, TraceEvent
from tests.daemon_harness import Daemon, produce, prompts_by_partition, read_topic, wait_all

pytestmark = pytest.mark.e2e

PARTITIONS = 4
PROMPTS_PER_PARTITION = 2
POLICY_ENTRY = """
  - name: {name}
    input_keys: [ticket]
    window: {{max_examples: 2000}}
    triggers: {{min_examples: 1000, min_new_examples: 100, cooldown: 1h}}
"""
WINDOW_GAUGE = "gepa_stream_window_examples"
SETTLE_S = 120.0  # a group join waits the rebalance timeout; a SIGKILLed member, its session timeout


def _traces(topics: Topics, counts: Counter[str], first: int) -> list[tuple[str, bytes | None, bytes]]:
    """`counts[prompt]` self-labeled traces per prompt (trace ids from `first` on), each sent twice
    (a redelivery changes nothing), and one unlabeled trace per prompt (not an example)."""
    records = []
    for prompt, n in counts.items():
        for i in range(first, first + n + 1):
            labeled = i < first + n
            event = TraceEvent.build(
                TraceData(
                    prompt=prompt,
                    trace_id=f"{prompt}-{i}" if labeled else f"{prompt}-unlabeled-{first}",
                    inputs={"ticket": f"ticket {i}"},
                    outputs="general",
                    expectations={"expected_response": "billing"} if labeled else {},
                )
            )
            records += [(topics.traces, event.key, event.to_json())] * (2 if labeled else 1)
    return records


def _windows(worker: Daemon) -> dict[str, int]:
    """The worker's windows as /status shows them: prompt -> examples."""
    return {prompt: window["n_examples"] for prompt, window in worker.status()["prompts"].items()}


def _gauges(worker: Daemon) -> dict[str, int]:
    """The worker's window-size gauges as /metrics shows them: prompt -> examples."""
    gauges = {}
    for line in (worker.get("/metrics") or "").splitlines():
        if line.startswith(WINDOW_GAUGE + '{prompt="'):
            labels, _, value = line.rpartition(" ")
            gauges[labels.split('"')[1]] = int(float(value))
    return gauges


def _wait_for_split(workers: list[Daemon], expected: Counter[str], partition_of: dict[str, int]) -> None:
    """Wait until every worker shows windows, of whole partitions, no prompt on two workers, and
    together exactly `expected`; then until each worker's gauges show its windows and no others."""
    seen: list[dict[str, int]] = []

    def split() -> bool:
        seen[:] = [_windows(worker) for worker in workers]
        owned = [{partition_of[p] for p in view} for view in seen]
        whole = all(
            set(view) == {p for p in partition_of if partition_of[p] in parts}
            for view, parts in zip(seen, owned)
        )
        merged = Counter({p: n for view in seen for p, n in view.items()})
        return all(seen) and whole and sum(map(len, seen)) == len(merged) and merged == expected

    wait_all(workers, split, SETTLE_S, lambda: f"a split of {dict(expected)}; the workers show {seen}")

    def gauged() -> bool:
        seen[:] = [_gauges(worker) for worker in workers]
        return seen == [_windows(worker) for worker in workers]

    wait_all(workers, gauged, 30, lambda: f"the gauges to match the windows; the gauges show {seen}")


def test_two_ingest_workers_split_the_windows_through_a_sigkill_and_a_new_worker(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """1. two workers share the partitions: each prompt's window on one of them, exact;
    2. one is SIGKILLed: the survivor shows every window, exact;
    3. a new worker joins: the split is disjoint again (the survivor dropped what moved away);
    4. more traces after the rebalance: still exact, still disjoint. No trigger fires."""
    by_partition = prompts_by_partition("scale_out_", PARTITIONS, PROMPTS_PER_PARTITION)
    partition_of = {name: p for p, names in by_partition.items() for name in names}
    policy = tmp_path / "policy.yaml"
    policy.write_text("prompts:" + "".join(POLICY_ENTRY.format(name=name) for name in partition_of))
    workdirs = [tmp_path / f"worker-{i}" for i in range(3)]
    for workdir in workdirs:
        workdir.mkdir()
    env = {"GEPA_STREAM_PARTITIONS": str(PARTITIONS)}
    first = Daemon(kafka_bootstrap, policy, workdirs[0], env=env)
    workers = [
        first,
        *(Daemon(kafka_bootstrap, policy, w, prefix=first.prefix, env=env) for w in workdirs[1:]),
    ]
    topics = first.topics
    expected = Counter({name: 3 + i for i, name in enumerate(partition_of)})
    try:
        # 1. two workers, one group: every window on exactly one of them
        for worker in workers[:2]:
            worker.launch("ingest")
        for worker in workers[:2]:
            worker.wait_ready()
        produce(kafka_bootstrap, _traces(topics, expected, 0))
        _wait_for_split(workers[:2], expected, partition_of)

        # 2. SIGKILL one: the survivor recovers the other's partitions from the changelogs
        survivor, new = workers[0], workers[2]
        workers[1].kill()
        _wait_for_split([survivor], expected, partition_of)

        # 3. a new worker joins: the partitions it takes leave the survivor, windows and gauges
        new.start("ingest")
        _wait_for_split([survivor, new], expected, partition_of)

        # 4. more traces after the rebalance, to both workers' partitions
        more = Counter({name: 2 for name in partition_of})
        produce(kafka_bootstrap, _traces(topics, more, 1000))
        _wait_for_split([survivor, new], expected + more, partition_of)
        assert read_topic(kafka_bootstrap, topics.optimizations) == [], "no trigger fires"
        assert read_topic(kafka_bootstrap, topics.dlq) == []
    finally:
        for worker in workers:
            worker.stop()
