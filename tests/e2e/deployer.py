"""A deployer as its own process, for the staged-rollout e2e: it routes `--requests` requests
with `optimization.routing.PromptRouter` (sticky per user key, share from the registry),
answers each with the version it chose, and sends the trace (with that `prompt_version`) and an
SME's rating drawn from the version's hidden quality, then exits.

    python -m tests.e2e.deployer BOOTSTRAP TRACKING_URI PROMPT --quality 1=0.55,2=0.9 --start 0 --requests 400

Request i is user `user-<i>` and trace `<prompt>-req-<i>`: a burst sent again is the same
facts, and its rating is drawn from a generator seeded by the trace id, so a redelivered burst
carries the same ratings. Prints one JSON line: requests served per version.

With `--bursts` instead of `--requests` it serves one burst per line of stdin (`START REQUESTS`),
each with a router made for it (as a fresh process would: the registry's share as it is now),
printing each burst's JSON line, until stdin closes: one process's start-up for many bursts.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter

from kafka import KafkaProducer

from optimization.routing import PromptRouter
from schemas import RatingData, RatingEvent, Topics, TraceData, TraceEvent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("tracking_uri")
    parser.add_argument("prompt")
    parser.add_argument("--quality", required=True, help="version=P(excellent), comma-separated")
    parser.add_argument("--start", type=int, default=0)
    how_many = parser.add_mutually_exclusive_group(required=True)
    how_many.add_argument("--requests", type=int)
    how_many.add_argument("--bursts", action="store_true", help="bursts from stdin: START REQUESTS a line")
    parser.add_argument("--topic-prefix", default="gepa.")
    args = parser.parse_args()
    quality = {int(v): float(q) for v, q in (pair.split("=") for pair in args.quality.split(","))}
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=5)
    try:
        bursts = (
            ((int(a), int(b)) for a, b in (line.split() for line in sys.stdin if line.strip()))
            if args.bursts
            else iter([(args.start, args.requests)])
        )
        for start, requests in bursts:
            served = burst(producer, args, quality, start, requests)
            print(json.dumps({str(v): n for v, n in sorted(served.items())}), flush=True)
    finally:
        producer.close()


def burst(
    producer: KafkaProducer, args: argparse.Namespace, quality: dict[int, float], start: int, requests: int
) -> Counter[int]:
    """Requests `start` .. `start + requests - 1`, routed by a new router, sent and flushed."""
    topics = Topics(args.topic_prefix)
    router = PromptRouter(args.prompt, tracking_uri=args.tracking_uri, ttl_s=0.5)
    served: Counter[int] = Counter()
    for i in range(start, start + requests):
        route = router.choose(f"user-{i}")
        trace_id = f"{args.prompt}-req-{i}"
        good = random.Random(trace_id).random() < quality[route.version]
        trace = TraceEvent.build(
            TraceData(
                prompt=args.prompt,
                prompt_version=route.version,
                trace_id=trace_id,
                inputs={"ticket": f"ticket {i}"},
                outputs="billing" if good else "unsure",
            )
        )
        rating = RatingEvent.build(
            RatingData(
                prompt=args.prompt, trace_id=trace_id, rating="excellent" if good else "poor", rater="sme-1"
            )
        )
        producer.send(topics.traces, key=trace.key, value=trace.to_json())
        producer.send(topics.ratings, key=rating.key, value=rating.to_json())
        served[route.version] += 1
    producer.flush()
    return served


if __name__ == "__main__":
    main()
