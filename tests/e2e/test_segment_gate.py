"""End to end, the gate's segment rule (issue 24): one daemon, one feed, two prompts.

The world (tests/e2e/segment_world.py): the rules GEPA learns from wrong English answers fix
the English tickets and misfire on a third of the German ones, which the baseline got right.
The prompt whose policy segments the held-out examples by the trace attribute `language` is
`rejected`, naming `de`; the same world without `promotion.segments` is `promoted` — what the
segment rule prevents. A fast test checks the world itself (no daemon), so a failure of the
end-to-end one points at the wiring rather than at the world.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pytest

from handlers.split import split_examples
from optimization.comparison import compare_paired
from optimization.offline.datasets import SEED_ROUTER_PROMPT
from optimization.offline.skills import SupportRouter
from schemas import RatingData, RatingEvent, Topics, TraceData, TraceEvent
from schemas.events import Example
from tests.daemon_harness import QUICK_JOIN_ENV, Daemon, produce, read_topic
from tests.e2e.loop_helpers import register_seed, validate_against_schemas, wait_for_events, write_policies
from tests.e2e.segment_world import (
    SEGMENTED,
    UNSEGMENTED,
    route,
    seed_answer,
    tickets,
)

pytestmark = pytest.mark.e2e

PER_LANGUAGE = 120
"""Tickets a language: at the held-out fraction, ~40 held-out examples a segment."""
HOLDOUT = 0.35
"""`holdout_fraction` of the test policies (tests/e2e/loop_helpers.py)."""


def heldout_tickets() -> list[dict[str, str]]:
    """The world's held-out tickets, as the job's split (by trace id) must find them."""
    world, now = tickets(PER_LANGUAGE), datetime.now(UTC)
    examples = [
        Example(trace_id=f"ticket-{i}", inputs={"ticket": t["ticket"]}, time=now) for i, t in enumerate(world)
    ]
    heldout = {e.trace_id for e in split_examples(examples, HOLDOUT).heldout}
    return [t for i, t in enumerate(world) if f"ticket-{i}" in heldout]


def test_the_rules_the_reflector_learns_fix_en_and_break_de() -> None:
    """The world without the daemon: the rules the offline reflector writes for the seed's wrong
    answers (one a category), on the held-out tickets, through the gate's statistics."""
    learned = sorted(
        {
            rule
            for t in tickets(PER_LANGUAGE)
            for rule in SupportRouter().rules_for(t["ticket"], seed_answer(t["ticket"]), t["category"])
        }
    )
    assert len(learned) == 4, learned
    candidate = SEED_ROUTER_PROMPT.replace("Ticket:", "\n".join(learned) + "\nTicket:")
    heldout = heldout_tickets()
    labels = [t["language"] for t in heldout]
    base = [float(seed_answer(t["ticket"]) == t["category"]) for t in heldout]
    cand = [
        float(route(candidate.replace("{{ticket}}", t["ticket"]), t["ticket"]) == t["category"])
        for t in heldout
    ]

    def mean(scores: list[float], language: str) -> float:
        picked = [s for s, label in zip(scores, labels, strict=True) if label == language]
        return sum(picked) / len(picked)

    assert (mean(base, "de"), mean(cand, "en")) == (1.0, 1.0)
    assert mean(base, "en") < 0.2 and 0.5 < mean(cand, "de") < 0.8
    segmented = compare_paired(base, cand, min_eval_examples=10, segments=labels)
    assert segmented.decision == "rejected" and "segment(s) de " in segmented.reason, segmented.reason
    assert [s.segment for s in segmented.segments if s.harmed] == ["de"]
    assert compare_paired(base, cand, min_eval_examples=10).decision == "promoted"


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
        records += [
            (topics.traces, trace.key, trace.to_json()),
            (topics.ratings, rating.key, rating.to_json()),
        ]
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
                "predict_fn": "tests.e2e.segment_world:predict_segments",
                "segments": "{by: attributes.language, min_examples: 10, max_segments: 20}",
            },
            UNSEGMENTED: {**common, "predict_fn": "tests.e2e.segment_world:predict_no_segments"},
        },
    )
    daemon = Daemon(  # the two prompts' jobs side by side: the suite's time
        kafka_bootstrap,
        policy,
        tmp_path,
        env={
            **QUICK_JOIN_ENV,
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "GEPA_STREAM_MAX_CONCURRENT_JOBS": "2",
        },
    )
    tracking = daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"]
    for name in (SEGMENTED, UNSEGMENTED):
        register_seed(tracking, name)
    daemon.start()
    try:
        produce(
            kafka_bootstrap, segment_feed(daemon.topics, SEGMENTED) + segment_feed(daemon.topics, UNSEGMENTED)
        )
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
    assert len(registered) == 2 and {
        r.data.prompt: (r.data.parent_version, r.data.version) for r in registered
    } == {
        SEGMENTED: (1, 2),
        UNSEGMENTED: (1, 2),
    }

    # with the segment rule: better on average, worse beyond doubt on `de` -> rejected, naming it
    rejected = by_prompt[SEGMENTED]
    assert rejected.decision == "rejected", rejected.reason
    assert rejected.candidate_score > rejected.baseline_score and rejected.ci_low > 0, rejected
    assert "worse beyond doubt on segment(s) de " in rejected.reason, rejected.reason
    segments = {s.segment: s for s in rejected.segments}
    assert sorted(segments) == ["de", "en"], rejected.segments
    de, en = segments["de"], segments["en"]
    assert de.harmed and de.upper < 0 and de.candidate_score < de.baseline_score == 1.0, de
    assert not en.harmed and en.candidate_score > en.baseline_score, en
    # the labels came from the stream: every held-out example carries its own trace's language
    expected = Counter(t["language"] for t in heldout_tickets())
    assert {s.segment: s.n for s in rejected.segments} == expected, rejected.segments
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
