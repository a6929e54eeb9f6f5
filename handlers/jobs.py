"""Job planning: a frozen window -> what one optimization run needs (records, rated outputs,
scorer specs), independent of the backend's I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handlers.split import Split, split_examples
from optimization.records import RatedExample, output_text
from schemas.config import PromptPolicy
from schemas.errors import GepaStreamError
from schemas.events import Example

EXPECTATION_SCORERS = frozenset({"exact_match", "correctness"})


class NotEnoughData(GepaStreamError, ValueError):
    """The snapshot cannot support an optimization run (the job ends `failed` with this cause)."""


@dataclass(frozen=True, slots=True)
class JobPlan:
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    rated: list[RatedExample]
    scorers: list[str]
    n_examples: int
    segments: list[str | None] | None = None  # the held-out examples' labels under `promotion.segments`


def record(example: Example, input_keys: list[str]) -> dict[str, Any]:
    """The `{"inputs", "expectations"}` record the optimizer library scores. An output every
    rater called perfect (`excellent`, `up`, 5/5) is its own expected response."""
    inputs = {k: example.inputs[k] for k in input_keys if k in example.inputs} or dict(example.inputs)
    expectations = dict(example.expectations)
    if "expected_response" not in expectations and example.rating == 1.0 and example.outputs is not None:
        expectations["expected_response"] = output_text(example.outputs)
    return {"inputs": inputs, "expectations": expectations}


def segment_of(example: Example, by: str) -> str | None:
    """An example's segment label: `attributes.<key>` or `inputs.<key>` (a scalar, as text)."""
    source, _, key = by.partition(".")
    value = (example.attributes if source == "attributes" else example.inputs).get(key)
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)[:256]


def rated_outputs(examples: list[Example], input_keys: list[str]) -> list[RatedExample]:
    """Every rated output as the SME-rating metric's evidence; an expected response (e.g. an
    SME's correction) counts as an 'excellent' answer for its input."""
    rated = []
    for example in examples:
        inputs = record(example, input_keys)["inputs"]
        comment = "; ".join(example.comments) or None
        if example.rating is not None and example.outputs is not None:
            rated.append(RatedExample(inputs, output_text(example.outputs), example.rating, comment))
        expected = example.expectations.get("expected_response")
        if expected is not None:
            rated.append(RatedExample(inputs, output_text(expected), 1.0, comment))
    return rated


def plan_job(examples: list[Example], policy: PromptPolicy) -> JobPlan:
    """1. keep the examples the scorers can score, 2. split them by trace id, 3. build records."""
    scorers = list(policy.scorers)
    keys, rule = policy.input_keys, policy.promotion.segments
    if EXPECTATION_SCORERS.intersection(scorers) and "sme_rating" not in scorers:
        usable = [e for e in examples if record(e, keys)["expectations"]]
        if not usable:
            raise NotEnoughData(f"scorers {scorers} need expectations, and no example in the window has any")
    else:
        usable = list(examples)
    split: Split = split_examples(usable, policy.promotion.holdout_fraction)
    if not split.train or not split.val or not split.heldout:
        raise NotEnoughData(f"{len(usable)} usable examples are too few for train/val/held-out parts")
    return JobPlan(
        train=[record(e, keys) for e in split.train],
        val=[record(e, keys) for e in split.val],
        heldout=[record(e, keys) for e in split.heldout],
        rated=rated_outputs(examples, keys),
        scorers=scorers,
        n_examples=len(examples),
        segments=None if rule is None else [segment_of(e, rule.by) for e in split.heldout],
    )
