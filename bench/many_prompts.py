"""One ingest worker, a thousand prompts matched by three patterns (issue 23): its memory, trigger
latency and ops page, printed in one run.

1. a real `gepa-stream run --role ingest` process (`python -m daemon`) on the embedded broker (or
   `--bootstrap`), its policy file three patterns (`tenant_*`, `support_*`, `agent_*`) and
   `defaults` (windows of 100 examples, a trigger at 100); RSS once ready;
2. load: every prompt gets 99 self-labeled traces (99,000 events, no trigger fires yet), then
   100,000 SME ratings spread over those traces (each rewrites its trace's record); RSS once the
   worker has counted every example and rating (`/metrics`), and per prompt;
3. trigger latency: for `--timed` prompts, 50-150 ms apart, the 100th labeled trace is sent and
   timed until the prompt's `requested` event is fetched (p50, p99; target p99 < 1 s);
4. the ops page: `/ui/api/state` (its first page of 100 of the 1,000) timed 20 times, and a
   name search (target < 200 ms).

    python bench/many_prompts.py [--prompts 1000] [--ratings 100000] [--timed 200] [--bootstrap host:port]

Measured (one run, 2 cores, embedded broker, beside another test run):

    one ingest worker, 1,000 prompts by 3 patterns, windows of 100: 99,000 labeled traces + 100,000 ratings handled in 35 s
      RSS at ready 85.2 MB; loaded 356.0 MB: 277.3 KB a prompt at 99 examples
      trigger latency over 200 prompts: p50 0.164 s, p99 0.289 s, max 0.291 s  (target p99 < 1 s: PASS)
      /ui/api/state, first page of 100 of 1,000: median 18 ms, max 223 ms  (target < 200 ms: PASS); search q=support_09: 33 matched in 5 ms
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import create_topics, self_labeled, timed_triggers  # noqa: E402
from bench.ingest_footprint import rss_mb  # noqa: E402
from schemas import RatingData, RatingEvent, Topics  # noqa: E402
from tests.daemon_harness import Daemon  # noqa: E402

PATTERNS = ("tenant_", "support_", "agent_")
THRESHOLD = 100
POLICY = f"""defaults:
  input_keys: [ticket]
  window: {{max_examples: {THRESHOLD}, join_ttl: 1h}}
  triggers: {{min_examples: {THRESHOLD}, min_new_examples: 1000000, cooldown: 1h}}
patterns:
  - {{match: "tenant_*"}}
  - {{match: "support_*"}}
  - {{match: "agent_*"}}
"""


def prompt_names(n: int) -> list[str]:
    return [f"{PATTERNS[i % 3]}{i:04d}" for i in range(n)]


def load(bootstrap: str, topics: Topics, prompts: list[str], ratings: int) -> None:
    """99 labeled traces per prompt, then `ratings` ratings spread over them (step 2)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    for i in range(THRESHOLD - 1):
        for prompt in prompts:
            event = self_labeled(prompt, i)
            producer.send(topics.traces, key=event.key, value=event.to_json())
    rng = random.Random(3)
    for n in range(ratings):
        prompt = prompts[n % len(prompts)]
        rating = RatingEvent.build(
            RatingData(
                prompt=prompt,
                trace_id=f"{prompt}-{rng.randrange(THRESHOLD - 1)}",
                rating=rng.choice(["excellent", "good", "fair", "poor"]),
                rater=f"sme-{n % 7}",
            )
        )
        producer.send(topics.ratings, key=rating.key, value=rating.to_json())
    producer.flush()
    producer.close()


def handled(daemon: Daemon) -> float:
    """Valid events the worker consumed (`gepa_stream_events_total`, every type and topic)."""
    return sum(
        float(line.rpartition(" ")[2])
        for line in (daemon.get("/metrics") or "").splitlines()
        if line.startswith("gepa_stream_events_total{")
    )


def timed_get(port: int, path: str) -> tuple[float, Any]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as reply:
        body = json.loads(reply.read())
    return time.perf_counter() - started, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--ratings", type=int, default=100_000)
    parser.add_argument("--timed", type=int, default=200)
    parser.add_argument("--bootstrap", default=os.environ.get("GEPA_STREAM_BENCH_BOOTSTRAP"))
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from daemon.broker import EmbeddedBroker

    broker = None if args.bootstrap else EmbeddedBroker().start()
    bootstrap = args.bootstrap or broker.bootstrap_servers  # type: ignore[union-attr]
    prompts = prompt_names(args.prompts)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            config = Path(workdir) / "policy.yaml"
            config.write_text(POLICY)
            daemon = Daemon(bootstrap, config, Path(workdir))
            create_topics(bootstrap, daemon.topics.all(), 3)
            daemon.start("ingest", timeout=300)
            assert daemon.process is not None
            try:
                at_ready = rss_mb(daemon.process.pid)
                started = time.perf_counter()
                load(bootstrap, daemon.topics, prompts, args.ratings)
                examples = args.prompts * (THRESHOLD - 1)
                daemon.wait_until(
                    lambda: handled(daemon) >= examples + args.ratings, 900, "every event handled"
                )
                loaded_s = time.perf_counter() - started
                time.sleep(3)
                loaded = rss_mb(daemon.process.pid)
                lat = asyncio.run(
                    timed_triggers(
                        bootstrap,
                        daemon.topics,
                        prompts[: args.timed],
                        lambda p: [self_labeled(p, THRESHOLD - 1)],
                    )
                )
                cuts = statistics.quantiles(lat, n=100)
                pages = [timed_get(daemon.port, "/ui/api/state")[0] for _ in range(20)]
                _, first = timed_get(daemon.port, "/ui/api/state")
                search_s, found = timed_get(daemon.port, "/ui/api/state?q=support_09")
            finally:
                daemon.stop()
    finally:
        if broker is not None:
            broker.stop()
    print(
        f"one ingest worker, {args.prompts:,} prompts by 3 patterns, windows of {THRESHOLD}: "
        f"{examples:,} labeled traces + {args.ratings:,} ratings handled in {loaded_s:.0f} s"
    )
    print(
        f"  RSS at ready {at_ready:.1f} MB; loaded {loaded:.1f} MB: {(loaded - at_ready) * 1024 / args.prompts:.1f} KB a prompt at {THRESHOLD - 1} examples"
    )
    print(
        f"  trigger latency over {len(lat)} prompts: p50 {cuts[49]:.3f} s, p99 {cuts[98]:.3f} s, "
        f"max {max(lat):.3f} s  (target p99 < 1 s: {'PASS' if cuts[98] < 1 else 'FAIL'})"
    )
    median = statistics.median(pages)
    print(
        f"  /ui/api/state, first page of {len(first['prompts'])} of {first['total']:,}: median {median * 1000:.0f} ms, "
        f"max {max(pages) * 1000:.0f} ms  (target < 200 ms: {'PASS' if median < 0.2 else 'FAIL'}); "
        f"search q=support_09: {found['matched']} matched in {search_s * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
