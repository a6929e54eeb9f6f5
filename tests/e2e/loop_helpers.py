"""Shared set-up of the end-to-end tests: a registered weak prompt and an SME feed for it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jsonschema
import mlflow
from kafka import KafkaProducer

from handlers.ingest import Ingest, Request
from handlers.snapshot import snapshot_chunks
from optimization.models import complete_text
from optimization.offline.datasets import SEED_ROUTER_PROMPT, support_tickets
from schemas import RatingData, RatingEvent, Topics, TraceData, TraceEvent, event_json_schemas, parse_event
from schemas.config import load_policy_file
from schemas.events import OptimizationData, OptimizationEvent, SnapshotRef, TriggerInfo
from tests.daemon_harness import Daemon, read_topic

ROUTER_POLICY = """
  - name: {name}
    backend: {backend}
    {program}
    {predict_fn}
    task_model: {task_model}
    reflection_model: {reflector}
    input_keys: [ticket]
    scorers: [exact_match]
    window: {{max_examples: 500}}
    triggers: {{min_examples: {n}, min_new_examples: 1000, cooldown: 1h}}
    budget: {{max_metric_calls: {calls}, max_wall_time: 5m, num_threads: 4, max_attempts: {attempts}}}
    promotion: {{mode: {mode}, min_eval_examples: 10, holdout_fraction: 0.35{guard}{rollout}{segments}}}
"""


def write_policy(path: Path, name: str, **settings: Any) -> Path:
    """A policy file with one router prompt (see `router_policy`)."""
    path.write_text("prompts:" + router_policy(name, **settings))
    return path


def write_policies(path: Path, prompts: dict[str, dict[str, Any]]) -> Path:
    """A policy file with one router prompt per name, each with its settings."""
    path.write_text(
        "prompts:" + "".join(router_policy(name, **settings) for name, settings in prompts.items())
    )
    return path


def router_policy(
    name: str,
    *,
    n: int = 60,
    backend: str = "mlflow",
    program: str = "",
    task_model: str = "offline/support-router",
    reflector: str = "offline/reflector",
    calls: int = 60,
    mode: str = "auto",
    attempts: int = 3,
    guard: str = "",
    rollout: str = "",
    segments: str = "",
    predict_fn: str = "",
) -> str:
    """The policy entry of a support router prompt, optimized by GEPA after `n` rated traces."""
    return ROUTER_POLICY.format(
        name=name,
        backend=backend,
        program=f"program: {program}" if program else "",
        predict_fn=f"predict_fn: {predict_fn}" if predict_fn else "",
        task_model=task_model,
        reflector=reflector,
        n=n,
        calls=calls,
        mode=mode,
        attempts=attempts,
        guard=f", guard: {guard}" if guard else "",
        rollout=f", rollout: {rollout}" if rollout else "",
        segments=f", segments: {segments}" if segments else "",
    )


def register_seed(tracking_uri: str, name: str) -> None:
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.genai.register_prompt(name=name, template=SEED_ROUTER_PROMPT, commit_message="weak seed")


def sme_feed(topics: Topics, name: str, n: int = 60) -> list[tuple[str, bytes | None, bytes]]:
    """n production traces answered by the weak seed prompt, each rated by an SME: right
    answers 'excellent', wrong ones 'poor' with the correction."""
    records = []
    for i, ticket in enumerate(support_tickets(n)):
        text = ticket["inputs"]["ticket"]
        answer = complete_text("offline/support-router", SEED_ROUTER_PROMPT.replace("{{ticket}}", text))
        expected = ticket["expectations"]["expected_response"]
        trace = TraceEvent.build(
            TraceData(
                prompt=name, prompt_version=1, trace_id=f"{name}-{i}", inputs={"ticket": text}, outputs=answer
            )
        )
        right = answer == expected
        rating = RatingEvent.build(
            RatingData(
                prompt=name,
                trace_id=f"{name}-{i}",
                rating="excellent" if right else "poor",
                correction=None if right else expected,
                comment=None if right else f"this is a {expected} ticket",
                rater="sme-1",
            )
        )
        records += [
            (topics.traces, trace.key, trace.to_json()),
            (topics.ratings, rating.key, rating.to_json()),
        ]
    return records


def live_feed(
    topics: Topics, name: str, version: int, ratings: list[str], start: int
) -> list[tuple[str, bytes | None, bytes]]:
    """Production traces answered by `version` (ids `<name>-v<version>-<i>` from `start`), each
    rated by an SME: the right route for excellent/good, a wrong one otherwise."""
    records = []
    tickets = support_tickets(140)
    for i, value in enumerate(ratings, start):
        trace_id = f"{name}-v{version}-{i}"
        ticket = tickets[i % len(tickets)]
        expected = ticket["expectations"]["expected_response"]
        answer = (
            expected
            if value in ("excellent", "good")
            else ("billing" if expected != "billing" else "technical")
        )
        trace = TraceEvent.build(
            TraceData(
                prompt=name,
                prompt_version=version,
                trace_id=trace_id,
                inputs=ticket["inputs"],
                outputs=answer,
            )
        )
        rating = RatingEvent.build(RatingData(prompt=name, trace_id=trace_id, rating=value, rater="sme-1"))
        records += [
            (topics.traces, trace.key, trace.to_json()),
            (topics.ratings, rating.key, rating.to_json()),
        ]
    return records


def wait_for_events(
    daemon: Daemon, topic: str, done: Any, timeout: float = 420.0, *, fail_on_failed_job: bool = True
) -> list[Any]:
    """Read `topic` until `done(events)` holds; a `failed` job ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        events = read_topic(daemon.bootstrap, topic, idle_s=0.5)
        if done(events):
            return events
        failed = [
            e.data.error
            for e in read_topic(daemon.bootstrap, daemon.topics.optimizations, idle_s=0.2)
            if e.data.status == "failed"
        ]
        if fail_on_failed_job and failed:
            raise AssertionError(f"a job failed while waiting on {topic}: {failed}")
        if time.monotonic() > deadline:
            jobs = [e.data for e in read_topic(daemon.bootstrap, daemon.topics.optimizations, idle_s=0.5)]
            logs = "\n".join(p.read_text()[-3000:] for p in daemon.workdir.glob("state/jobs/*/job.log"))
            raise AssertionError(
                f"timed out waiting on {topic}: {[e.data for e in events]}\njobs: {jobs}\njob logs: {logs}"
            )
        if daemon.process is not None and daemon.process.poll() is not None:
            raise AssertionError(f"daemon exited:\n{daemon.log.read_text()[-5000:]}")
        time.sleep(0.5)


def validate_against_schemas(events: list[Any]) -> None:
    schemas = event_json_schemas()
    for event in events:
        jsonschema.validate(event.model_dump(mode="json", exclude_none=True), schemas[event.type])


def first_request(policy: Path, records: list[tuple[str, bytes | None, bytes]]) -> Request:
    """The request the ingest role fires on this feed (its pure handler, fed in order)."""
    ingest = Ingest(load_policy_file(policy), "roles-test")
    for _, _, raw in records:
        step = ingest.handle(parse_event(raw), time.time())
        if step.request is not None:
            return step.request
    raise AssertionError("the feed never fires a trigger")


def announce_request(bootstrap: str, topics: Topics, request: Request) -> str:
    """What the ingest role does on a trigger: the window's chunks, then `requested` pointing at them."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        chunks = [
            producer.send(topics.snapshots, key=c.key, value=c.to_json())
            for c in snapshot_chunks(request.request_id, request.prompt, request.examples)
        ]
        written = [future.get(timeout=30) for future in chunks]
        event = OptimizationEvent.build(
            OptimizationData(
                request_id=request.request_id,
                prompt=request.prompt,
                status="requested",
                trigger=TriggerInfo(rule=request.fire.rule, values=request.fire.values),
                snapshot=SnapshotRef(
                    topic=topics.snapshots,
                    partition=written[0].partition,
                    offsets=[w.offset for w in written],
                    n_examples=len(request.examples),
                    sha256=request.sha256,
                ),
                budget=request.budget,
            ),
            id=f"{request.request_id}:requested",
        )
        producer.send(topics.optimizations, key=event.key, value=event.to_json()).get(timeout=30)
    finally:
        producer.close()
    return request.request_id


def optimizer_shares(optimizers: list[Daemon], topic: str) -> list[set[int]]:
    """The optimizations partitions each replica owns now."""
    return [
        {
            int(tp.rpartition("/")[2])
            for tp in (o.status().get("optimizer", {}).get("assigned") or [])
            if tp.rpartition("/")[0] == topic
        }
        for o in optimizers
    ]
