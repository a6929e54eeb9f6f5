"""A deployer as its own process, for the staged-rollout e2e: it routes `--requests` requests
with `optimization.routing.PromptRouter` (sticky per user key, share from the registry),
answers each with the version it chose, and sends the trace (with that `prompt_version`) and an
SME's rating drawn from the version's hidden quality, then exits.

    python -m tests.e2e.deployer BOOTSTRAP TRACKING_URI PROMPT --quality 1=0.55,2=0.9 --start 0 --requests 400

Request i is user `user-<i>` and trace `<prompt>-req-<i>`: a burst sent again is the same
facts, and its rating is drawn from a generator seeded by the trace id, so a redelivered burst
carries the same ratings. Prints one JSON line: requests served per version.
"""

from __future__ import annotations

import argparse
import json
import random
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
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--topic-prefix", default="gepa.")
    args = parser.parse_args()
    quality = {int(v): float(q) for v, q in (pair.split("=") for pair in args.quality.split(","))}
    topics = Topics(args.topic_prefix)
    router = PromptRouter(args.prompt, tracking_uri=args.tracking_uri, ttl_s=0.5)
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=5)
    served: Counter[int] = Counter()
    for i in range(args.start, args.start + args.requests):
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
    producer.close()
    print(json.dumps({str(v): n for v, n in sorted(served.items())}))


if __name__ == "__main__":
    main()
