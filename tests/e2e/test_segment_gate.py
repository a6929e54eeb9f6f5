"""End to end, the gate's segment rule (issue 24): one daemon, one feed, two prompts.

The world (tests/e2e/segment_world.py): the rules GEPA learns from wrong English answers fix
the English tickets and misfire on a third of the German ones, which the baseline got right.
The prompt whose policy segments the held-out examples by the trace attribute `language` is
`rejected`, naming `de`; the same world without `promotion.segments` is `promoted` — what the
segment rule prevents.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pytest

from handlers.split import split_examples
from schemas import RatingData, RatingEvent, Topics, TraceData, TraceEvent
from schemas.events import Example
from tests.daemon_harness import Daemon, produce, read_topic
from tests.e2e.loop_helpers import register_seed, validate_against_schemas, wait_for_events, write_policies
from tests.e2e.segment_world import (
    SEGMENTED,
    UNSEGMENTED,
    predict_no_segments,
    predict_segments,
    seed_answer,
    tickets,
)

pytestmark = pytest.mark.e2e

PER_LANGUAGE = 120
"""Tickets a language: at the held-out fraction, ~40 held-out examples a segment."""
HOLDOUT = 0.35
"""`holdout_fraction` of the test policies (tests/e2e/loop_helpers.py)."""


def _ref(fn: object) -> str:
    return f"{fn.__module__}:{fn.__name__}"  # type: ignore[attr-defined]


def heldout_languages() -> Counter[str]:
    """The languages of the held-out tickets, as the job's split (by trace id) must find them."""
    now = datetime.now(UTC)
    examples = [
        Example(trace_id=f"ticket-{i}", inputs={"ticket": t["ticket"]}, attributes={"language": t["language"]}, time=now)
        for i, t in enumerate(tickets(PER_LANGUAGE))
    ]
    return Counter(e.attributes["language"] for e in split_examples(examples, HOLDOUT).heldout)


def segment_feed(topics: Topics, name: str) -> list[tuple[str, bytes | None, bytes]]:
    """Every ticket of the world answered by the seed prompt, labelled with its language, and
    rated by an SME: right answers 'excellent', wrong ones 'poor' with the right category."""
    records = []
    for i, ticket in enumerate(tickets(PER_LANGUAGE)):
        answer, expected = seed_answer(ticket["ticket"]), ticket["category"]
        trace = TraceEvent.build(
            TraceData(
                prompt=name,
                prompt_version=1,
                trace_id=f"ticket-{i}",  # the same ids for both prompts: the same split
                inputs={"ticket": ticket["ticket"]},
                outputs=answer,
                attributes={"language": ticket["language"]},
            )
        )
        right = answer == expected
        rating = RatingEvent.build(
            RatingData(
                prompt=name,
                trace_id=f"ticket-{i}",
                rating="excellent" if right else "poor",
                correction=None if right else expected,
                rater="sme-1",
            )
        )
        records += [(topics.traces, trace.key, trace.to_json()), (topics.ratings, rating.key, rating.to_json())]
    return records


def test_a_candidate_that_breaks_a_segment_is_rejected_only_with_the_segment_rule(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    n = 2 * PER_LANGUAGE
    common = {"n": n, "calls": 400}
    policy = write_policies(
        tmp_path / "policy.yaml",
        {
            SEGMENTED: {
                **common,
                "predict_fn": _ref(predict_segments),
                "segments": "{by: attributes.language, min_examples: 10, max_segments: 20}",
            },
            UNSEGMENTED: {**common, "predict_fn": _ref(predict_no_segments)},
        },
    )
    daemon = Daemon(
        kafka_bootstrap, policy, tmp_path, env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    )
    tracking = daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"]
    for name in (SEGMENTED, UNSEGMENTED):
        register_seed(tracking, name)
    daemon.start()
    try:
        produce(kafka_bootstrap, segment_feed(daemon.topics, SEGMENTED) + segment_feed(daemon.topics, UNSEGMENTED))
        optimizations = wait_for_events(
            daemon,
            daemon.topics.optimizations,
            lambda evs: sum(e.data.status == "completed" for e in evs) == 2,
        )
        promotions = wait_for_events(daemon, daemon.topics.promotions, lambda evs: len(evs) >= 2, timeout=60)
        registered = read_topic(kafka_bootstrap, daemon.topics.prompts)
    finally:
        daemon.stop()

    by_prompt = {e.data.prompt: e.data for e in promotions}
    assert sorted(by_prompt) == sorted([SEGMENTED, UNSEGMENTED]) and len(promotions) == 2, [
        e.data for e in promotions
    ]
    completed = {e.data.prompt: e.data for e in optimizations if e.data.status == "completed"}
    assert {name: (r.data.parent_version, r.data.version) for name, r in ((r.data.prompt, r) for r in registered)} == {
        SEGMENTED: (1, 2),
        UNSEGMENTED: (1, 2),
    }

    # with the segment rule: better on average, worse beyond doubt on `de` -> rejected, naming it
    rejected = by_prompt[SEGMENTED]
    assert rejected.decision == "rejected", rejected.reason
    assert rejected.candidate_score > rejected.baseline_score and rejected.ci_low > 0, rejected
    assert "de " in rejected.reason and "worse beyond doubt" in rejected.reason, rejected.reason
    segments = {s.segment: s for s in rejected.segments}
    assert sorted(segments) == ["de", "en"], rejected.segments
    de, en = segments["de"], segments["en"]
    assert de.harmed and de.upper < 0 and de.candidate_score < de.baseline_score == 1.0, de
    assert not en.harmed and en.candidate_score > en.baseline_score, en
    # the labels came from the stream: every held-out example carries its own trace's language
    assert {s.segment: s.n for s in rejected.segments} == heldout_languages(), rejected.segments
    assert de.n + en.n == rejected.n_eval == completed[SEGMENTED].n_val, (rejected, completed[SEGMENTED])

    # the same world without segments: promoted
    promoted = by_prompt[UNSEGMENTED]
    assert promoted.decision == "promoted", promoted.reason
    assert promoted.segments == [], promoted.segments
    assert (promoted.from_version, promoted.to_version) == (1, 2)

    mlflow.set_tracking_uri(tracking)
    assert mlflow.genai.load_prompt(f"prompts:/{SEGMENTED}@production", cache_ttl_seconds=0).version == 1
    assert mlflow.genai.load_prompt(f"prompts:/{UNSEGMENTED}@production", cache_ttl_seconds=0).version == 2
    validate_against_schemas([*optimizations, *registered, *promotions])
