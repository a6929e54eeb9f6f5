"""Ingest throughput, measured side by side on one broker in one run.

    python bench/ingest.py [--events 100000]

Produces the events once, then each mode consumes all of them in its own
subprocess (its own consumer group) and reports events/s from its first to its
last processed event (start-up and group join excluded):

  a) raw aiokafka consumer (the floor: fetch only)
  b) bare Faust agent, one table write per event (what a Faust app costs)
  c) the daemon's ingest path (parse, join, window, trigger, facts table)
  d) the daemon's ingest path with 5,000-example windows (c uses 50)

  e) the daemon's ingest path while a GEPA job runs beside it (the job process the
     optimizer role spawns, offline models at a simulated 50 ms per call)

Targets: c >= 0.5 x b, d >= 0.8 x c, e >= 0.8 x c.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas import RatingData, RatingEvent, Topics, TraceData, TraceEvent  # noqa: E402
from schemas.third_parties import quiet_third_parties  # noqa: E402

PROMPTS = ("bench_a", "bench_b", "bench_c")
PARTITIONS = 3


def policy_yaml(max_examples: int) -> str:
    prompts = "\n".join(
        f"  - name: {p}\n    window: {{max_examples: {max_examples}}}\n"
        f"    triggers: {{min_examples: 50, min_new_examples: 1000000, cooldown: 1h}}"
        for p in PROMPTS
    )
    return f"prompts:\n{prompts}\n"


def produce(bootstrap: str, topics: Topics, n: int) -> None:
    """n events: 70% traces (half carry expectations), 30% ratings of earlier traces."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics.all()])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    traces = 0
    for i in range(n):
        prompt = PROMPTS[i % len(PROMPTS)]
        if i % 10 < 7 or traces < 100:
            expectations = {"expected_response": "billing"} if traces % 2 else {}
            event = TraceEvent.build(
                TraceData(
                    prompt=prompt,
                    trace_id=f"tr-{traces}",
                    inputs={"ticket": f"I was charged twice for order {traces}, please refund"},
                    outputs="billing",
                    expectations=expectations,
                )
            )
            topic = topics.traces
            traces += 1
        else:
            target = (i * 7919) % traces
            event = RatingEvent.build(
                RatingData(
                    prompt=PROMPTS[target % len(PROMPTS)],
                    trace_id=f"tr-{target}",
                    rating=1 + i % 5,
                    rater=f"sme{i % 3}",
                )
            )
            topic = topics.ratings
        producer.send(topic, key=event.key, value=event.to_json())
    producer.flush()
    producer.close()


# -- workers (each runs in its own process) -----------------------------------------------


class Meter:
    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.first = 0.0

    def tick(self) -> None:
        if self.count == 0:
            self.first = time.perf_counter()
        self.count += 1
        if self.count == self.total:
            rate = (self.total - 1) / (time.perf_counter() - self.first)
            print(json.dumps({"events_per_s": rate}), flush=True)
            os._exit(0)


async def run_raw(bootstrap: str, topics: Topics, n: int) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    meter = Meter(n)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    partitions = [TopicPartition(t, p) for t in (topics.traces, topics.ratings) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    while True:
        batches = await consumer.getmany(timeout_ms=500, max_records=5000)
        for records in batches.values():
            for _ in records:
                meter.tick()


def faust_settings(bootstrap: str, topics: Topics, state: Path, max_examples: int):
    from daemon.broker import free_port
    from daemon.settings import Settings

    config = state / "bench.yaml"
    config.write_text(policy_yaml(max_examples))
    return Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=topics.prefix,
        app_id=f"bench-{uuid.uuid4().hex[:8]}",
        state_dir=state,
        web_port=free_port(),
        partitions=PARTITIONS,
        log_level="error",
        config=config,
    )


def run_faust(mode: str, bootstrap: str, topics: Topics, n: int, max_examples: int, state: Path) -> None:
    import faust

    from daemon.app import build_faust_app
    from daemon.worker import Daemon
    from schemas.config import load_policy_file

    settings = faust_settings(bootstrap, topics, state, max_examples)
    meter = Meter(n)
    if mode == "faust":
        app = build_faust_app(settings)
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        source = app.topic(topics.traces, topics.ratings, partitions=PARTITIONS, **raw)
        table = app.Table("bare", partitions=PARTITIONS, key_type=bytes, value_type=bytes)

        @app.agent(source)
        async def bare(stream):  # one table write per event
            async for event in stream.events():
                table[f"{event.message.partition}:{event.message.offset}".encode()] = event.message.value
                meter.tick()
    else:
        daemon = Daemon(settings, load_policy_file(settings.config), "ingest")
        app, ingest = daemon.app, daemon.ingest
        process = ingest.process

        async def counted(*args):
            await process(*args)
            meter.tick()

        ingest.process = counted
    faust.Worker(
        app, loglevel=os.environ.get("BENCH_LOGLEVEL", "error"), quiet=True, redirect_stdouts=False
    ).execute_from_commandline()


class GepaJobInFlight:
    """A real optimization job process (what the job runner spawns) with a budget larger than
    the measurement, on offline models that wait 50 ms per call like a remote provider."""

    def __init__(self, workdir: Path) -> None:
        self.run_dir = workdir / "jobs" / "bench-request"
        self.process: subprocess.Popen[bytes] | None = None
        self.tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"

    def __enter__(self) -> GepaJobInFlight:
        import mlflow

        from daemon.jobs.spec import EXAMPLES_FILE, JOB_FILE, JobSpec, write_model
        from optimization.offline.datasets import SEED_ROUTER_PROMPT, support_tickets
        from schemas import Example
        from schemas.config import PromptPolicy

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.genai.register_prompt(name="bench_router", template=SEED_ROUTER_PROMPT)
        self.run_dir.mkdir(parents=True)
        policy = PromptPolicy.model_validate(
            {
                "name": "bench_router",
                "task_model": "offline/support-router?latency_ms=50",
                "reflection_model": "offline/reflector?latency_ms=50",
                "input_keys": ["ticket"],
                "budget": {"max_metric_calls": 100000, "max_wall_time": "30m", "num_threads": 8},
            }
        )
        write_model(
            self.run_dir / JOB_FILE,
            JobSpec(
                request_id="bench-request",
                prompt="bench_router",
                policy=policy,
                tracking_uri=self.tracking_uri,
                window_size=120,
                num_threads=8,
            ),
        )
        now = time.time()
        from datetime import datetime

        # every third label is wrong (noise), so no candidate is perfect and GEPA keeps going
        examples = [
            Example(
                trace_id=f"b{i}",
                inputs=r["inputs"],
                expectations={"expected_response": "general"} if i % 3 == 0 else r["expectations"],
                time=datetime.fromtimestamp(now, tz=UTC),
            ).model_dump(mode="json")
            for i, r in enumerate(support_tickets(120))
        ]
        (self.run_dir / EXAMPLES_FILE).write_text(json.dumps(examples))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daemon.jobs.execute", str(self.run_dir)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while b'"optimize"' not in _read(self.run_dir / "progress.json"):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the GEPA job did not start optimizing")
            time.sleep(0.2)
        return self

    def still_optimizing(self) -> bool:
        return (
            self.process is not None
            and self.process.poll() is None
            and b'"optimize"' in _read(self.run_dir / "progress.json")
        )

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def measure(mode: str, bootstrap: str, prefix: str, n: int, max_examples: int = 50) -> float:
    with subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--worker",
            mode,
            "--bootstrap",
            bootstrap,
            "--prefix",
            prefix,
            "--events",
            str(n),
            "--max-examples",
            str(max_examples),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        text=True,
    ) as process:
        try:
            out, _ = process.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    found = re.search(r'\{"events_per_s": [^}]+\}', out)  # the terminal may prefix escape codes
    if found:
        return float(json.loads(found.group())["events_per_s"])
    raise RuntimeError(f"{mode} worker printed no result:\n{out[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--bootstrap", default=os.environ.get("GEPA_STREAM_BENCH_BOOTSTRAP"))
    parser.add_argument("--worker", choices=["raw", "faust", "ingest"])
    parser.add_argument("--prefix", default=f"bench{uuid.uuid4().hex[:6]}.")
    parser.add_argument("--max-examples", type=int, default=50)
    args = parser.parse_args()
    quiet_third_parties()
    topics = Topics(args.prefix)
    if args.worker == "raw":
        asyncio.run(run_raw(args.bootstrap, topics, args.events))
        return
    if args.worker:
        import tempfile

        run_faust(
            args.worker, args.bootstrap, topics, args.events, args.max_examples, Path(tempfile.mkdtemp())
        )
        return

    from daemon.broker import EmbeddedBroker

    broker = None
    if not args.bootstrap:
        broker = EmbeddedBroker().start()
        args.bootstrap = broker.bootstrap_servers
    try:
        started = time.perf_counter()
        produce(args.bootstrap, topics, args.events)
        print(f"produced {args.events:,} events in {time.perf_counter() - started:.1f}s on {args.bootstrap}")
        results = {
            "a) raw aiokafka consumer": measure("raw", args.bootstrap, args.prefix, args.events),
            "b) bare Faust agent, 1 table write/event": measure(
                "faust", args.bootstrap, args.prefix, args.events
            ),
            "c) daemon ingest, 50-example windows": measure(
                "ingest", args.bootstrap, args.prefix, args.events, 50
            ),
            "d) daemon ingest, 5,000-example windows": measure(
                "ingest", args.bootstrap, args.prefix, args.events, 5000
            ),
        }
        import tempfile

        with GepaJobInFlight(Path(tempfile.mkdtemp())) as job:
            results["e) daemon ingest, 50-example windows, GEPA job in flight"] = measure(
                "ingest", args.bootstrap, args.prefix, args.events, 50
            )
            if not job.still_optimizing():
                raise RuntimeError("the GEPA job ended before the measurement did; raise its budget")
    finally:
        if broker:
            broker.stop()
    for name, rate in results.items():
        print(f"{name:<45} {rate:>10,.0f} events/s")
    a, b, c, d, e = results.values()
    print(f"c / b = {c / b:.2f}   (target >= 0.5)")
    print(f"d / c = {d / c:.2f}   (target >= 0.8)")
    print(f"e / c = {e / c:.2f}   (target >= 0.8: ingest while a GEPA job runs vs idle)")
    print(f"b / a = {b / a:.3f}   (what Faust itself costs)")


if __name__ == "__main__":
    main()
