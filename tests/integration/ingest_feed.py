"""A deterministic mixed feed for the ingest tests, with the outcome it must produce."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field

from schemas import RatingData, RatingEvent, Topics, TraceData, TraceEvent

CONFIG = """
prompts:
  - name: router_a
    input_keys: [ticket]
    window: {max_examples: 2000}
    triggers: {min_examples: 300, min_new_examples: 100, cooldown: 1h}
  - name: router_b
    input_keys: [ticket]
    window: {max_examples: 2000}
    triggers: {min_examples: 250, min_new_examples: 100, cooldown: 1h}
  - name: router_c
    input_keys: [ticket]
    window: {max_examples: 2000}
    triggers: {min_examples: 1000, min_new_examples: 100, cooldown: 1h}
"""

SHARES = {"router_a": 900, "router_b": 700, "router_c": 400}  # traces per prompt; 2,000 in all
MALFORMED_KINDS = (
    "not_json",
    "bad_envelope",
    "unknown_type",
    "invalid_data",
    "oversize",
    "unknown_prompt",
    "wrong_topic",
)


@dataclass
class Feed:
    records: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    labeled: Counter = field(default_factory=Counter)
    dead_letters: Counter = field(default_factory=Counter)
    should_fire: set[str] = field(default_factory=set)
    valid: Counter = field(default_factory=Counter)  # (type, topic) -> records that must be handled


def _malformed(kind: str, i: int, topics: Topics) -> tuple[str, bytes | None, bytes]:
    good = TraceEvent.build(
        TraceData(prompt="router_a", trace_id=f"bad-{i}", inputs={"ticket": "x"}, outputs="y")
    )
    obj = json.loads(good.to_json())
    if kind == "not_json":
        return topics.traces, b"router_a", b"\x89PNG not json {" + bytes([i % 256])
    if kind == "bad_envelope":
        del obj["specversion"]
    elif kind == "unknown_type":
        obj["type"] = "gepa.trace.v0"
    elif kind == "invalid_data":
        obj["data"]["inputs"] = "not an object"
    elif kind == "oversize":
        obj["data"]["outputs"] = "z" * 600_000
    elif kind == "unknown_prompt":
        obj["subject"] = obj["data"]["prompt"] = "router_unknown"
    elif kind == "wrong_topic":
        return topics.ratings, b"router_a", json.dumps(obj).encode()
    return topics.traces, b"router_a", json.dumps(obj).encode()


def build_feed(topics: Topics, seed: int = 7) -> Feed:
    """2,000 traces and 1,000 ratings for 3 prompts, 200 malformed records of every kind
    interleaved, and 100 redeliveries (which must change nothing)."""
    rng = random.Random(seed)
    feed = Feed()
    good: list[tuple[str, bytes | None, bytes]] = []
    rated_pool: list[tuple[str, str]] = []
    labeled: dict[str, set[str]] = {p: set() for p in SHARES}
    for prompt, n in SHARES.items():
        for i in range(n):
            trace_id = f"{prompt}-{i}"
            expectations = {"expected_response": "billing"} if i % 5 == 0 else {}
            if expectations:
                labeled[prompt].add(trace_id)
            event = TraceEvent.build(
                TraceData(
                    prompt=prompt,
                    trace_id=trace_id,
                    inputs={"ticket": f"ticket {i}"},
                    outputs="general",
                    expectations=expectations,
                )
            )
            good.append((topics.traces, event.key, event.to_json()))
            rated_pool.append((prompt, trace_id))
    for prompt, trace_id in rng.sample(rated_pool, 1000):
        event = RatingEvent.build(
            RatingData(
                prompt=prompt,
                trace_id=trace_id,
                rating=rng.choice(["excellent", "good", "fair", "poor", 3]),
                rater="sme",
            )
        )
        good.append((topics.ratings, event.key, event.to_json()))
        labeled[prompt].add(trace_id)
    rng.shuffle(good)  # ratings before and after their traces
    redeliveries = rng.sample(good, 100)
    stream = good + redeliveries
    for i in range(200):
        kind = MALFORMED_KINDS[i % len(MALFORMED_KINDS)]
        stream.insert(rng.randrange(len(stream)), _malformed(kind, i, topics))
        feed.dead_letters[kind] += 1
    feed.records = stream
    feed.valid = Counter(
        ("gepa.trace.v1" if topic == topics.traces else "gepa.rating.v1", topic)
        for topic, _, _ in good + redeliveries
    )
    feed.labeled = Counter({p: len(ids) for p, ids in labeled.items()})
    thresholds = {"router_a": 300, "router_b": 250, "router_c": 1000}
    feed.should_fire = {p for p, n in feed.labeled.items() if n >= thresholds[p]}
    return feed
