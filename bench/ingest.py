"""Ingest at scale, measured side by side on one broker in one run.

    python bench/ingest.py [--events 100000] [--restart-facts 100000,1000000]
                           [--rss-events 1000000] [--latency-prompts 100] [--latency-load 4000]
                           [--sections abcdefghij] [--repeat 2]

Throughput: the events are produced once, then each mode consumes all of them in its own
subprocess (its own consumer group); events/s from its first to its last processed event or
batch (start-up and group join excluded), the best of `--repeat` rounds over the modes (like
timeit's best of N: this 2-core machine's noise only ever slows a round down):

  a) raw aiokafka consumer (the floor: fetch only)
  b) bare Faust agent, one table write per event (what a Faust app costs)
  c) the daemon's ingest path (parse, join, window, trigger, facts table), 50-example windows
  d) the same with 5,000-example windows
  e) c while a GEPA job runs beside it (the job process the optimizer role spawns, offline
     models at a simulated 50 ms per call)

Scale, each on its own topics:

  f) restart to ready: an ingest worker whose facts changelog holds 100k / 1M facts, from
     process start to /readyz 200 (imports, group join, recovery, window rebuild; with
     --restart-facts 0, what start-up and the group join cost alone)
  g) the ingest worker's RSS after 100k, 500k and 1M traces with fixed windows (50 examples,
     join TTL 5 s: what waits for its other half longer is dropped). Traces only: a backlog of
     two topics is not read at one pace (with ratings, their topic ran dry a third of the way
     through 1M events and the join buffers changed make-up from there). Each the median of the
     per-batch samples over the last 10 % of the events before the mark, since a single sample
     lands anywhere on the sawtooth of the join buffers (5 s of traffic) and the heap trims
  h) trigger latency: from producing a prompt's threshold event to its `requested` event on
     the optimizations topic, p50 / p99 over many prompts; on an idle worker, then beside a
     steady load of other prompts' traces
  i) two ingest workers in one consumer group vs one (4 partitions, 12 prompts)
  j) ratings on a prompt under a staged rollout vs on an unwatched one: one stream of `--events`
     traces and ratings (every trace of `ROLLOUT_PROMPT` rated a few traces later, its
     `prompt_version` alternating between the canary and production: the rule's busiest look
     schedule) produced on two topic sets; the worker of the first handles a `canary_started`
     promotion event before its first batch, so it watches the canary; on the other the prompt
     is unwatched. Same policy (rollout enabled), same worker, the best of `--repeat` rounds
     each; the watched worker's /status must show the rollout running with a vote per rating

Acceptance (printed at the end, for the sections run): c >= 1.5 x b (goal 2.3), d >= 0.9 x c,
RSS(1M) < 1.1 x RSS(100k), f(100k facts) < 15 s, h p99 < 1 s, j watched >= 0.8 x unwatched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas import RatingData, RatingEvent, Topics, TraceData, TraceEvent  # noqa: E402
from schemas.events import CloudEvent, PromotionEvent  # noqa: E402
from schemas.third_parties import quiet_third_parties  # noqa: E402

PROMPTS = ("bench_a", "bench_b", "bench_c")
PARTITIONS = 3
WORKER_TIMEOUT_S = 900


def policy_entries(
    prompts: Sequence[str], max_examples: int, join_ttl: str = "1h", min_examples: int = 50
) -> str:
    """The prompts' entries of a policy file. No trigger fires unless `min_examples` is reached
    (the latency bench); then once per hour."""
    return "\n".join(
        f"  - name: {p}\n    window: {{max_examples: {max_examples}, join_ttl: {join_ttl}}}\n"
        f"    triggers: {{min_examples: {min_examples}, min_new_examples: 1000000, cooldown: 1h}}"
        for p in prompts
    )


def policy_yaml(
    prompts: Sequence[str], max_examples: int, join_ttl: str = "1h", min_examples: int = 50
) -> str:
    return "prompts:\n" + policy_entries(prompts, max_examples, join_ttl, min_examples)


def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    admin.close()


def bench_trace(prompt: str, trace_id: str, n: int) -> TraceEvent:
    """The benchmarks' trace: a refund ticket; every other one (odd n) carries expectations."""
    return TraceEvent.build(
        TraceData(
            prompt=prompt,
            trace_id=trace_id,
            inputs={"ticket": f"I was charged twice for order {n}, please refund"},
            outputs="billing",
            expectations={"expected_response": "billing"} if n % 2 else {},
        )
    )


def produce(
    bootstrap: str,
    topics: Topics,
    n: int,
    prompts: Sequence[str] = PROMPTS,
    partitions: int = PARTITIONS,
    ratings: bool = True,
) -> None:
    """n events: 70% traces (half carry expectations), 30% ratings of earlier traces (each naming
    the prompt its trace was for); or with `ratings=False`, n traces."""
    from kafka import KafkaProducer

    create_topics(bootstrap, topics.all(), partitions)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    traces = 0
    prompt_of: list[int] = []  # trace number -> index of its prompt
    for i in range(n):
        event: TraceEvent | RatingEvent
        if i % 10 < 7 or traces < 100 or not ratings:
            prompt_of.append(i % len(prompts))
            event = bench_trace(prompts[i % len(prompts)], f"tr-{traces}", traces)
            topic = topics.traces
            traces += 1
        else:
            target = (i * 7919) % traces
            rating = RatingData(
                prompt=prompts[prompt_of[target]],
                trace_id=f"tr-{target}",
                rating=1 + i % 5,
                rater=f"sme{i % 3}",
            )
            event = RatingEvent.build(rating)
            topic = topics.ratings
        producer.send(topic, key=event.key, value=event.to_json())
    producer.flush()
    producer.close()


# -- workers (each runs in its own process) -----------------------------------------------


class Meter:
    """Prints events/s from the first to the last event, then ends the process."""

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


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


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


def worker_settings(args: argparse.Namespace, state: Path) -> Any:
    from daemon.settings import Settings

    return Settings(
        bootstrap_servers=args.bootstrap,
        topic_prefix=args.prefix,
        app_id=args.app_id or f"bench-{uuid.uuid4().hex[:8]}",
        state_dir=state,
        web_port=args.web_port,
        partitions=args.partitions,
        log_level="error",
        **({"config": args.policy} if args.policy else {}),
    )


def run_bare_faust(args: argparse.Namespace, state: Path) -> None:
    """b: a bare Faust agent writing one table key per event (what a Faust app costs)."""
    import faust

    from daemon.app import build_faust_app
    from daemon.ingest_agent import raw_topic

    settings = worker_settings(args, state)
    meter = Meter(args.events)
    app = build_faust_app(settings)
    source = raw_topic(app, settings.topics.traces, settings.topics.ratings, partitions=settings.partitions)
    table = app.Table("bare", partitions=settings.partitions, key_type=bytes, value_type=bytes)

    @app.agent(source)
    async def bare(stream: Any) -> None:
        async for event in stream.events():
            table[f"{event.message.partition}:{event.message.offset}".encode()] = event.message.value
            meter.tick()

    worker = faust.Worker(app, loglevel=bench_loglevel(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def run_ingest(args: argparse.Namespace, state: Path) -> None:
    """c, d, e, f-i: the daemon's ingest role as `gepa-stream run --role ingest` serves it,
    printing one progress line per batch: records so far, batch start/end, RSS."""
    from daemon.ingest_agent import IngestAgent, Record
    from daemon.worker import Daemon
    from schemas.config import load_policy_file

    settings = worker_settings(args, state)
    daemon = Daemon(settings, load_policy_file(settings.config), "ingest")
    ingest = daemon.ingest
    assert isinstance(ingest, IngestAgent)
    process = ingest.process_batch
    done = 0
    first = [promotion_record(args.first_event, settings)] if args.first_event else []

    async def counted(records: Sequence[Record]) -> None:
        nonlocal done
        if first:  # before the first consumed batch, not counted
            await process([first.pop()])
        started = time.time()
        await process(records)
        done += len(records)
        progress = {
            "n": done,
            "t0": started,
            "t1": time.time(),
            "rss_kb": rss_kb(),
            "cpu": time.process_time(),
        }
        print(json.dumps(progress), flush=True)

    ingest.process_batch = counted  # type: ignore[method-assign]
    daemon.serve(bench_loglevel(), settings.shutdown_timeout_s, redirect_stdouts=False)


def promotion_record(path: Path, settings: Any) -> Any:
    """j: a promotion event (a JSON file) as the agent's record of the promotions topic, on its
    prompt's partition (kafka-python's partitioner, as the producers use), to hand to
    `process_batch` before any consumed record. Faust does not order records across topics: a
    `canary_started` produced before the stream was once handled after most of it."""
    from kafka.partitioner.default import murmur2

    from daemon.ingest_agent import Record
    from schemas.parse import parse_event

    raw = path.read_bytes()
    key = parse_event(raw).key
    assert key is not None
    partition = (murmur2(key) & 0x7FFFFFFF) % settings.partitions
    return Record(settings.topics.promotions, partition, 0, key, raw)


def bench_loglevel() -> str:
    return os.environ.get("BENCH_LOGLEVEL", "error")


class GepaJobInFlight:
    """A real optimization job process (what the job runner spawns) with a budget larger than
    the measurement, on offline models that wait 50 ms per call like a remote provider."""

    def __init__(self, workdir: Path) -> None:
        self.run_dir = workdir / "jobs" / "bench-request"
        self.process: subprocess.Popen[bytes] | None = None
        self.tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"

    def __enter__(self) -> GepaJobInFlight:
        import mlflow

        from daemon.jobs.run_dir import RunDir
        from daemon.jobs.spec import JobSpec
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
        spec = JobSpec(
            request_id="bench-request",
            prompt="bench_router",
            policy=policy,
            tracking_uri=self.tracking_uri,
            window_size=120,
            num_threads=8,
        )
        now = time.time()
        from datetime import UTC, datetime

        # every third label is wrong (noise), so no candidate is perfect and GEPA keeps going
        examples = [
            Example(
                trace_id=f"b{i}",
                inputs=cast(dict[str, Any], r["inputs"]),
                expectations={"expected_response": "general"}
                if i % 3 == 0
                else cast(dict[str, Any], r["expectations"]),
                time=datetime.fromtimestamp(now, tz=UTC),
            )
            for i, r in enumerate(support_tickets(120))
        ]
        RunDir(self.run_dir).freeze_inputs(spec, examples)
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


# -- the bench's side: worker processes and what they print ---------------------------------


class WorkerProcess:
    """A bench worker subprocess; its JSON lines (one result, or one progress line per batch)."""

    def __init__(
        self,
        mode: str,
        bootstrap: str,
        prefix: str,
        *,
        events: int = 0,
        policy: Path | None = None,
        app_id: str | None = None,
        web_port: int = 0,
        partitions: int = PARTITIONS,
        first_event: Path | None = None,
    ) -> None:
        command = [sys.executable, __file__, "--worker", mode, "--bootstrap", bootstrap, "--prefix", prefix]
        command += ["--events", str(events), "--web-port", str(web_port), "--partitions", str(partitions)]
        command += ["--policy", str(policy)] if policy else []
        command += ["--first-event", str(first_event)] if first_event else []
        command += ["--app-id", app_id] if app_id else []
        self.mode = mode
        self.stderr = tempfile.NamedTemporaryFile(prefix=f"bench-{mode}-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self.stderr, cwd=ROOT, text=True
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            start = line.find("{")  # the terminal may prefix escape codes
            if start >= 0:
                try:
                    self.lines.put(json.loads(line[start:]))
                except ValueError:
                    continue
        self.lines.put(None)

    def next(self, timeout: float = WORKER_TIMEOUT_S) -> dict[str, Any]:
        """The next JSON line (RuntimeError if the worker ended, queue.Empty on timeout)."""
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise self.ended()
        return line

    def ended(self) -> RuntimeError:
        """The worker ended early: its exit code and the end of its stderr."""
        tail = Path(self.stderr.name).read_text(errors="replace").strip().splitlines()[-5:]
        return RuntimeError(
            f"the {self.mode} worker ended (exit code {self.process.wait()}); its stderr ends:\n"
            + "\n".join(tail)
        )

    def progress_until(self, n: int) -> list[dict[str, Any]]:
        """The ingest worker's progress lines until it has processed n records."""
        lines = [self.next()]
        while lines[-1]["n"] < n:
            lines.append(self.next())
        return lines

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.wait()
        self.stderr.close()
        os.unlink(self.stderr.name)


def ingest_rate(lines: list[dict[str, Any]]) -> float:
    """Records/s from the end of the first batch to the end of the last (the first batch's
    wait for the group join and its fill excluded, like the Meter's first event)."""
    first, last = lines[0], lines[-1]
    if len(lines) == 1:
        return float(last["n"]) / (last["t1"] - last["t0"])
    return float(last["n"] - first["n"]) / (last["t1"] - first["t1"])


def cpu_rate(lines: list[dict[str, Any]]) -> float:
    """Records per CPU second of the worker process over the same span as `ingest_rate`: what a
    busy machine's scheduling does not change (the broker's CPU is not in it)."""
    first, last = lines[0], lines[-1]
    return float(last["n"] - first["n"]) / max(last["cpu"] - first["cpu"], 1e-9)


def write_policy(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def get_json(port: int, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def wait_ready(worker: WorkerProcess, port: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while (get_json(port, "/readyz") or {}).get("ready") is not True:
        if worker.process.poll() is not None:
            raise worker.ended()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the ingest worker was not ready within {timeout:.0f} s")
        time.sleep(0.05)


def fresh_prefix(tag: str) -> str:
    return f"bench{tag}{uuid.uuid4().hex[:6]}."


# -- f) restart to ready ----------------------------------------------------------------------

RESTART_PROMPTS = [f"restart_{i}" for i in range(20)]


async def write_facts(bootstrap: str, changelog: str, n: int) -> None:
    """n trace facts of 20 prompts, as the facts table stores them, each on its prompt's partition."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    from handlers.facts import TraceFact, encode_record, record_key

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=512 * 1024)
    await producer.start()
    try:
        partitions = list(range(PARTITIONS))
        partition_of = {p: DefaultPartitioner()(p.encode(), partitions, partitions) for p in RESTART_PROMPTS}
        batches: dict[int, Any] = {}
        acks = []
        now = time.time()
        for i in range(n):
            prompt = RESTART_PROMPTS[i % len(RESTART_PROMPTS)]
            fact = TraceFact(
                prompt=prompt,
                trace_id=f"tr-{i}",
                time=now - (n - i) * 1e-3,
                inputs={"ticket": f"I was charged twice for order {i}, please refund"},
                outputs="billing",
                expectations={"expected_response": "billing"},
            )
            key, value = record_key(prompt, fact.trace_id), encode_record(fact, [])
            partition = partition_of[prompt]
            batch = batches.get(partition) or producer.create_batch()
            if batch.append(timestamp=None, key=key, value=value) is None:
                acks.append(await producer.send_batch(batch, changelog, partition=partition))
                batch = producer.create_batch()
                batch.append(timestamp=None, key=key, value=value)
            batches[partition] = batch
        for partition, batch in batches.items():
            acks.append(await producer.send_batch(batch, changelog, partition=partition))
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


def restart_to_ready(bootstrap: str, n_facts: int, directory: Path) -> tuple[float, int]:
    """Seconds from starting an ingest worker over n facts to /readyz, and the facts it recovered."""
    from daemon.broker import free_port

    prefix, app_id = fresh_prefix("f"), f"bench-restart-{uuid.uuid4().hex[:8]}"
    changelog = f"{app_id}-facts-changelog"
    create_topics(bootstrap, [*Topics(prefix).all(), changelog], PARTITIONS)
    asyncio.run(write_facts(bootstrap, changelog, n_facts))
    max_examples = max(50, math.ceil(n_facts / len(RESTART_PROMPTS)))  # every fact in a window
    policy = write_policy(directory, f"restart-{n_facts}", policy_yaml(RESTART_PROMPTS, max_examples))
    port = free_port()
    started = time.monotonic()
    with WorkerProcess("ingest", bootstrap, prefix, policy=policy, app_id=app_id, web_port=port) as worker:
        wait_ready(worker, port)
        elapsed = time.monotonic() - started
        recovered = (get_json(port, "/status") or {}).get("recovered", {}).get("facts", -1)
    return elapsed, int(recovered)


# -- h) trigger latency -------------------------------------------------------------------------

LATENCY_MIN_EXAMPLES = 5


def self_labeled(prompt: str, i: int) -> TraceEvent:
    """Trace `i` of a prompt, carrying its expected answer (an example without a rating)."""
    return TraceEvent.build(
        TraceData(
            prompt=prompt,
            trace_id=f"{prompt}-{i}",
            inputs={"ticket": f"ticket {i}"},
            outputs="billing",
            expectations={"expected_response": "billing"},
        )
    )


async def timed_triggers(
    bootstrap: str, topics: Topics, prompts: list[str], traces_of: Callable[[str], list[TraceEvent]]
) -> list[float]:
    """Per prompt: its traces (`traces_of`), the last one timed, then the next prompt 50-150 ms
    later; each latency ends when that prompt's `requested` event is fetched."""
    import random

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    await producer.start()
    await consumer.start()
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    timed = set(prompts)  # not the background load's prompts

    async def collect() -> None:
        while len(arrived) < len(prompts):
            batches = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    data = json.loads(record.value)["data"]
                    if data["status"] == "requested" and data["prompt"] in timed:
                        arrived.setdefault(data["prompt"], now)

    try:
        partitions = [TopicPartition(topics.optimizations, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        collecting = asyncio.create_task(collect())
        rng = random.Random(5)
        for prompt in prompts:
            events = traces_of(prompt)
            for i, event in enumerate(events):
                if i == len(events) - 1:
                    sent[prompt] = time.perf_counter()
                await producer.send_and_wait(topics.traces, key=event.key, value=event.to_json())
            await asyncio.sleep(rng.uniform(0.05, 0.15))
        await asyncio.wait_for(collecting, timeout=120)
    finally:
        await consumer.stop()
        await producer.stop()
    return [arrived[p] - sent[p] for p in prompts]


def trigger_latency(
    bootstrap: str, n_prompts: int, directory: Path, load_per_s: int
) -> tuple[list[float], float]:
    """h: the latencies, while other prompts' traces arrive at `load_per_s` (0: an idle worker);
    and the background rate reached."""
    from daemon.broker import free_port

    prefix = fresh_prefix("h")
    topics = Topics(prefix)
    create_topics(bootstrap, topics.all(), PARTITIONS)
    prompts = [f"latency_{i}" for i in range(n_prompts)]
    timed = policy_entries(prompts, 50, min_examples=LATENCY_MIN_EXAMPLES)
    text = f"prompts:\n{timed}\n{policy_entries(PROMPTS, 50)}"
    policy = write_policy(directory, f"latency-{load_per_s}", text)
    port = free_port()
    with WorkerProcess("ingest", bootstrap, prefix, policy=policy, web_port=port) as worker:
        wait_ready(worker, port)
        with BackgroundTraces(bootstrap, topics.traces, load_per_s) as load:
            latencies = timed_triggers(
                bootstrap,
                topics,
                prompts,
                lambda prompt: [self_labeled(prompt, i) for i in range(LATENCY_MIN_EXAMPLES)],
            )
            return asyncio.run(latencies), load.rate()


class BackgroundTraces:
    """A thread producing traces of the throughput prompts at a steady rate (ticks of 10 ms)."""

    def __init__(self, bootstrap: str, topic: str, per_s: int) -> None:
        self.bootstrap, self.topic, self.per_s = bootstrap, topic, per_s
        self.stop = threading.Event()
        self.sent = 0
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        self.started = time.monotonic()
        while not self.stop.wait(0.01):
            due = int((time.monotonic() - self.started) * self.per_s)
            for i in range(self.sent, due):
                event = bench_trace(PROMPTS[i % len(PROMPTS)], f"load-{i}", i)
                producer.send(self.topic, key=event.key, value=event.to_json())
            self.sent = max(self.sent, due)
        producer.flush()
        producer.close()

    def rate(self) -> float:
        return self.sent / max(time.monotonic() - self.started, 1e-9)

    def __enter__(self) -> BackgroundTraces:
        if self.per_s > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


# -- i) two ingest workers ----------------------------------------------------------------------

SCALE_PROMPTS = [f"scale_{i}" for i in range(12)]
SCALE_PARTITIONS = 4


def workers_rate(bootstrap: str, prefix: str, n: int, policy: Path, k: int) -> tuple[float, list[int]]:
    """k ingest workers started together in one group over n produced events: records/s from
    the first batch's start to the last batch's end, and the records each worker handled."""
    from daemon.broker import free_port

    app_id = f"bench-scale-{uuid.uuid4().hex[:8]}"
    workers = [
        WorkerProcess(
            "ingest",
            bootstrap,
            prefix,
            policy=policy,
            app_id=app_id,
            web_port=free_port(),
            partitions=SCALE_PARTITIONS,
        )
        for _ in range(k)
    ]
    try:
        lines: list[list[dict[str, Any]]] = [[] for _ in workers]
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        while sum(w[-1]["n"] for w in lines if w) < n:
            if time.monotonic() > deadline:
                raise RuntimeError("the ingest workers did not finish")
            for worker, seen in zip(workers, lines):
                try:
                    while True:
                        seen.append(worker.next(timeout=0.01))
                except queue.Empty:
                    pass
        started = min(w[0]["t0"] for w in lines if w)
        ended = max(w[-1]["t1"] for w in lines if w)
        return n / (ended - started), [w[-1]["n"] if w else 0 for w in lines]
    finally:
        for worker in workers:
            worker.__exit__()


# -- j) ratings on a prompt under a staged rollout ------------------------------------------------

ROLLOUT_PROMPT = "bench_rollout"
ROLLOUT_CANARY, ROLLOUT_PRODUCTION = 2, 1
ROLLOUT_RATING_LAG = 3  # trace k is rated right after trace k + 3
ROLLOUT_TARGET = 0.8


def rollout_policy_yaml() -> str:
    """One prompt, a staged rollout enabled with the policy's defaults (stages 5/25/50 %, 50 new
    votes per arm per stage); the trigger fires once, at 50 examples, as in c."""
    return (
        f"prompts:\n  - name: {ROLLOUT_PROMPT}\n    window: {{max_examples: 50, join_ttl: 1h}}\n"
        "    triggers: {min_examples: 50, min_new_examples: 1000000, cooldown: 1h}\n"
        "    promotion: {rollout: {enabled: true}}\n"
    )


def canary_started() -> PromotionEvent:
    """The optimizer role's announcement that starts the rollout (built before the stream: the
    rollout counts traces from its time on)."""
    from handlers.promotion import promotion_event

    return promotion_event(
        ROLLOUT_PROMPT,
        "canary_started",
        "bench: canary at 5% of traffic",
        source="bench/ingest",
        from_version=ROLLOUT_PRODUCTION,
        to_version=ROLLOUT_CANARY,
        traffic_share=0.05,
    )


def rated_stream(n: int) -> list[tuple[str, CloudEvent]]:
    """n events of ROLLOUT_PROMPT as (topic suffix, event): traces without expectations (they
    wait for their rating), trace k rated (five-point, the same sequence on both arms) right
    after trace k + ROLLOUT_RATING_LAG; versions alternate canary / production trace by trace."""
    events: list[tuple[str, CloudEvent]] = []
    k = 0
    while len(events) < n:
        trace = TraceData(
            prompt=ROLLOUT_PROMPT,
            prompt_version=ROLLOUT_CANARY if k % 2 else ROLLOUT_PRODUCTION,
            trace_id=f"rt-{k}",
            inputs={"ticket": f"I was charged twice for order {k}, please refund"},
            outputs="billing",
        )
        events.append(("traces", TraceEvent.build(trace)))
        rated = k - ROLLOUT_RATING_LAG
        if rated >= 0:
            rating = RatingData(
                prompt=ROLLOUT_PROMPT, trace_id=f"rt-{rated}", rating=1 + (rated // 2) % 5, rater="sme"
            )
            events.append(("ratings", RatingEvent.build(rating)))
        k += 1
    return events[:n]


def produce_events(bootstrap: str, prefix: str, events: Sequence[tuple[str, CloudEvent]]) -> None:
    """`events` ((topic suffix, event) pairs) on the topics of `prefix`, in order."""
    from kafka import KafkaProducer

    topics = Topics(prefix)
    create_topics(bootstrap, topics.all(), PARTITIONS)
    names = {"traces": topics.traces, "ratings": topics.ratings, "promotions": topics.promotions}
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    for topic, event in events:
        producer.send(names[topic], key=event.key, value=event.to_json())
    producer.flush()
    producer.close()


def rollout_rates(
    bootstrap: str, n: int, repeat: int, directory: Path
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, Any], int]:
    """j: (events/s, events per worker CPU second) of the same rated stream with its canary
    watched and unwatched (each mode's runs), the watched worker's last rollout status, and the
    stream's rating count."""
    from daemon.broker import free_port

    watched, unwatched = fresh_prefix("jw"), fresh_prefix("ju")
    started = directory / "canary_started.json"
    started.write_bytes(canary_started().to_json())  # before the stream: its traces are compared
    stream = rated_stream(n)
    produce_events(bootstrap, watched, stream)
    produce_events(bootstrap, unwatched, stream)
    n_ratings = sum(topic == "ratings" for topic, _ in stream)
    policy = write_policy(directory, "rollout", rollout_policy_yaml())
    runs: dict[str, list[tuple[float, float]]] = {"unwatched": [], "watched": []}
    status: dict[str, Any] = {}
    for _ in range(repeat):
        for mode, prefix, first in (("unwatched", unwatched, None), ("watched", watched, started)):
            port = free_port()
            with WorkerProcess(
                "ingest", bootstrap, prefix, policy=policy, web_port=port, first_event=first
            ) as worker:
                lines = worker.progress_until(n)
                runs[mode].append((ingest_rate(lines), cpu_rate(lines)))
                prompt = ((get_json(port, "/status") or {}).get("prompts") or {}).get(ROLLOUT_PROMPT) or {}
            rollout = prompt.get("rollout")
            if mode == "unwatched" and rollout is not None:
                raise RuntimeError(f"the unwatched prompt has a rollout: {rollout}")
            if mode == "watched":
                votes = (rollout or {}).get("canary", {}).get("n", 0) + (rollout or {}).get(
                    "production", {}
                ).get("n", 0)
                if rollout is None or rollout["state"] != "canary" or votes < 0.95 * n_ratings:
                    raise RuntimeError(
                        f"the watched run did not watch the stream ({n_ratings} ratings): {rollout}"
                    )
                status = rollout
    return runs, status, n_ratings


# -- the run --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events of a-e, i and j")
    parser.add_argument(
        "--restart-facts", default="100000,1000000", help="f: facts in the table, comma-separated"
    )
    parser.add_argument(
        "--rss-events", type=int, default=1_000_000, help="g: events (RSS at 1/10, 1/2 and all)"
    )
    parser.add_argument("--latency-prompts", type=int, default=100, help="h: prompts, one threshold each")
    parser.add_argument(
        "--latency-load", type=int, default=4000, help="h: other events/s in the second latency run"
    )
    parser.add_argument(
        "--sections", default="abcdefghij", help="which of a-j to run (default all), e.g. --sections bcd"
    )
    parser.add_argument(
        "--repeat", type=int, default=2, help="a-e, j: rounds over the modes; each mode's best round counts"
    )
    parser.add_argument("--bootstrap", default=os.environ.get("GEPA_STREAM_BENCH_BOOTSTRAP"))
    parser.add_argument("--worker", choices=["raw", "faust", "ingest"], help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default=fresh_prefix("c"), help=argparse.SUPPRESS)
    parser.add_argument("--policy", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--first-event", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--app-id", help=argparse.SUPPRESS)
    parser.add_argument("--web-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--partitions", type=int, default=PARTITIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_third_parties()
    if args.worker == "raw":
        asyncio.run(run_raw(args.bootstrap, Topics(args.prefix), args.events))
        return
    if args.worker:
        if not args.web_port:
            from daemon.broker import free_port

            args.web_port = free_port()
        (run_bare_faust if args.worker == "faust" else run_ingest)(args, Path(tempfile.mkdtemp()))
        return

    from daemon.broker import EmbeddedBroker

    broker = None
    if not args.bootstrap:
        broker = EmbeddedBroker().start()
        args.bootstrap = broker.bootstrap_servers
    try:
        acceptance = run_sections(args, Path(tempfile.mkdtemp()))
    finally:
        if broker:
            broker.stop()
    print("\nacceptance")
    for line in acceptance:
        print(f"  {line}")


def run_sections(args: argparse.Namespace, directory: Path) -> list[str]:
    """The selected sections, in order, each printing its figures; the acceptance lines they allow."""
    sections, bootstrap, n = set(args.sections), args.bootstrap, args.events
    acceptance: list[str] = []
    rates: dict[str, float] = {}
    if sections & set("abcde"):
        started = time.perf_counter()
        produce(bootstrap, Topics(args.prefix), n)
        print(f"produced {n:,} events in {time.perf_counter() - started:.1f}s on {bootstrap}", flush=True)

    def meter(mode: str) -> float:
        with WorkerProcess(mode, bootstrap, args.prefix, events=n) as worker:
            return float(worker.next()["events_per_s"])

    def ingest(max_examples: int) -> float:
        policy = write_policy(directory, f"window-{max_examples}", policy_yaml(PROMPTS, max_examples))
        with WorkerProcess("ingest", bootstrap, args.prefix, policy=policy) as worker:
            return ingest_rate(worker.progress_until(n))

    measures = {
        "a": ("raw aiokafka consumer", lambda: meter("raw")),
        "b": ("bare Faust agent, 1 table write/event", lambda: meter("faust")),
        "c": ("daemon ingest, 50-example windows", lambda: ingest(50)),
        "d": ("daemon ingest, 5,000-example windows", lambda: ingest(5000)),
        "e": ("daemon ingest, 50-example windows, GEPA job in flight", lambda: ingest_beside_gepa(ingest)),
    }
    chosen = [key for key in measures if key in sections]
    runs: dict[str, list[float]] = {key: [] for key in chosen}
    for _ in range(args.repeat):  # rounds a-e, a-e, ...: a slow spell of the machine hits all modes alike
        for key in chosen:
            runs[key].append(measures[key][1]())
    for key in chosen:
        rates[key] = max(runs[key])
        each = ", ".join(f"{rate:,.0f}" for rate in runs[key])
        print(f"{key}) {measures[key][0]:<55} {rates[key]:>10,.0f} events/s   (best of {each})", flush=True)
    if {"b", "c"} <= rates.keys():
        ratio = rates["c"] / rates["b"]
        acceptance.append(f"c / b = {ratio:.2f}   (target >= 1.5, goal 2.3: daemon ingest vs bare Faust)")
    if {"c", "d"} <= rates.keys():
        acceptance.append(
            f"d / c = {rates['d'] / rates['c']:.2f}   (target >= 0.9: 5,000- vs 50-example windows)"
        )
    if {"c", "e"} <= rates.keys():
        acceptance.append(f"e / c = {rates['e'] / rates['c']:.2f}   (ingest while a GEPA job runs vs idle)")
    if {"a", "b"} <= rates.keys():
        acceptance.append(f"b / a = {rates['b'] / rates['a']:.3f}   (what Faust itself costs)")

    if "f" in sections:
        for n_facts in (int(x) for x in args.restart_facts.split(",") if x):
            seconds, recovered = restart_to_ready(bootstrap, n_facts, directory)
            print(f"f) restart to ready with {n_facts:>9,} facts: {seconds:6.1f} s ({recovered:,} recovered)")
            goal = "   (target < 15 s)" if n_facts == 100_000 else ""
            acceptance.append(f"restart to ready, {n_facts:,} facts = {seconds:.1f} s{goal}")

    if "g" in sections:
        m = args.rss_events
        rss = rss_growth(bootstrap, m, directory)
        for target, mb in rss.items():
            print(f"g) RSS after {target:>9,} events: {mb:7.1f} MB", flush=True)
        acceptance.append(f"RSS {m:,} / {m // 10:,} events = {rss[m] / rss[m // 10]:.3f}   (target < 1.10)")

    if "h" in sections:
        for load_per_s in (0, args.latency_load):
            latencies, reached = trigger_latency(bootstrap, args.latency_prompts, directory, load_per_s)
            cuts = statistics.quantiles(latencies, n=100)
            p50, p99 = cuts[49], cuts[98]
            beside = f"beside {reached:,.0f} other events/s" if load_per_s else "idle"
            print(
                f"h) trigger latency over {len(latencies)} prompts, {beside}: "
                f"p50 {p50:.3f} s, p99 {p99:.3f} s, max {max(latencies):.3f} s",
                flush=True,
            )
            acceptance.append(f"trigger latency p99, {beside} = {p99:.3f} s   (target < 1 s)")

    if "i" in sections:
        prefix = fresh_prefix("i")
        produce(bootstrap, Topics(prefix), n, SCALE_PROMPTS, SCALE_PARTITIONS)
        policy = write_policy(directory, "scale", policy_yaml(SCALE_PROMPTS, 50))
        one, _ = workers_rate(bootstrap, prefix, n, policy, 1)
        two, shares = workers_rate(bootstrap, prefix, n, policy, 2)
        print(
            f"i) one ingest worker {one:,.0f} events/s; two {two:,.0f} events/s (records per worker: {shares})"
        )
        acceptance.append(f"two workers / one = {two / one:.2f}")

    if "j" in sections:
        runs_j, rollout, n_ratings = rollout_rates(bootstrap, n, args.repeat, directory)
        best = {mode: max(rate for rate, _ in rates) for mode, rates in runs_j.items()}
        cpu = {mode: max(per_cpu for _, per_cpu in rates) for mode, rates in runs_j.items()}
        for mode, label in (
            ("unwatched", "ratings on an unwatched prompt"),
            ("watched", "ratings on a prompt whose canary is watched"),
        ):
            each = ", ".join(f"{rate:,.0f}" for rate, _ in runs_j[mode])
            print(
                f"j) {label:<55} {best[mode]:>10,.0f} events/s   (best of {each}); "
                f"{cpu[mode]:,.0f} per worker CPU s",
                flush=True,
            )
        print(
            f"j) the watched rollout at the end: {rollout['state']}, canary v{rollout['canary']['version']} "
            f"{rollout['canary']['n']:,} votes, production v{rollout['production']['version']} "
            f"{rollout['production']['n']:,} votes, of {n_ratings:,} ratings; "
            f"bounds [{rollout['lower']:+.3f}, {rollout['upper']:+.3f}]",
            flush=True,
        )
        ratio = best["watched"] / best["unwatched"]
        verdict = "PASS" if ratio >= ROLLOUT_TARGET else "FAIL"
        acceptance.append(
            f"rollout watched / unwatched = {ratio:.2f}   (target >= {ROLLOUT_TARGET}: {verdict}; "
            "rated events/s of a prompt under a staged rollout vs unwatched)"
        )
        acceptance.append(
            f"rollout watched / unwatched per worker CPU second = {cpu['watched'] / cpu['unwatched']:.2f}"
            "   (the same, unmoved by other load on the machine)"
        )
    return acceptance


def ingest_beside_gepa(ingest: Callable[[int], float]) -> float:
    """e: the 50-example ingest rate while a real GEPA job process optimizes beside it."""
    with GepaJobInFlight(Path(tempfile.mkdtemp())) as job:
        rate = ingest(50)
        if not job.still_optimizing():
            raise RuntimeError("the GEPA job ended before the measurement did; raise its budget")
    return rate


def rss_growth(bootstrap: str, m: int, directory: Path) -> dict[int, float]:
    """g: the ingest worker's RSS (MB) after m/10, m/2 and m events with fixed windows (medians
    of the samples over the last 10 % of the events before each mark)."""
    prefix = fresh_prefix("g")
    produce(bootstrap, Topics(prefix), m, ratings=False)
    policy = write_policy(directory, "rss", policy_yaml(PROMPTS, 50, join_ttl="5s"))
    with WorkerProcess("ingest", bootstrap, prefix, policy=policy) as worker:
        lines = worker.progress_until(m)
    rss = {}
    for target in (m // 10, m // 2, m):
        last = next(i for i, line in enumerate(lines) if line["n"] >= target)
        near = [line["rss_kb"] for line in lines[: last + 1] if line["n"] > 0.9 * target]
        rss[target] = statistics.median(near) / 1024
    return rss


if __name__ == "__main__":
    main()
