"""The SME-rating metric: scores a new output by its similarity to the rated outputs of the same input.

score = s * (mean rating weighted by similarity**4) + (1 - s) * prior, where s is
the highest similarity to any rated output: an output close to an 'excellent'
answer scores near 1, close to a 'poor' one near 0, unrelated near the prior.
SME comments become GEPA feedback. No judge model is needed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from mlflow.entities import Feedback
from mlflow.genai.scorers import Scorer, scorer

from optimization.data import canonical_key
from optimization.offline.rules import format_expected
from optimization.records import RatedExample, output_text, tokens
from optimization.scorers import resolve_scorers
from optimization.template_agent import PredictFn, as_keyword_predict_fn
from schemas.ratings import normalize_rating

SHARPNESS = 4
"""Similarities are raised to this power as weights, so the closest rated outputs dominate."""

GOOD_RATING = 0.75
"""Rated outputs at or above this are shown to GEPA as the answer to aim for."""


def similarity(left: str, right: str) -> float:
    """Token-multiset overlap (Dice coefficient) in [0, 1]; 1.0 for identical texts."""
    a, b = tokens(left), tokens(right)
    if not a and not b:
        return 1.0
    counts: dict[str, int] = defaultdict(int)
    for token in b:
        counts[token] += 1
    shared = 0
    for token in a:
        if counts[token] > 0:
            counts[token] -= 1
            shared += 1
    return 2 * shared / (len(a) + len(b))


class SMERatingMetric:
    """Reusable metric built from rated examples; use `.score(...)`, or `.as_scorer()` for MLflow/GEPA."""

    def __init__(self, rated: Sequence[RatedExample], prior: float = 0.5) -> None:
        if not rated:
            raise ValueError("feedback: no rated examples to build the SME-rating metric from")
        self.prior = prior
        self._by_input: dict[str, list[RatedExample]] = defaultdict(list)
        for example in rated:
            self._by_input[canonical_key(example.inputs)].append(example)

    def score(self, inputs: dict[str, Any], output: Any) -> tuple[float, str]:
        """(score in [0, 1], feedback text) of `output` for `inputs`."""
        rated = self._by_input.get(canonical_key(inputs), [])
        if not rated:
            return self.prior, "No SME ratings exist for this input."
        text = output_text(output)
        similarities = [similarity(text, example.output) for example in rated]
        closest = max(similarities)
        weights = [s**SHARPNESS for s in similarities]
        weighted = (
            sum(w * e.rating for w, e in zip(weights, rated)) / sum(weights) if closest > 0 else self.prior
        )
        value = closest * weighted + (1 - closest) * self.prior
        return round(value, 6), self._feedback(rated, similarities)

    @staticmethod
    def _feedback(rated: list[RatedExample], weights: list[float]) -> str:
        lines = [
            f"SMEs rated an answer {example.rating:.2f} (similarity to this one {weight:.2f})"
            + (f"; comment: {example.comment}" if example.comment else "")
            for example, weight in sorted(zip(rated, weights), key=lambda pair: -pair[1])
        ]
        best = max(rated, key=lambda example: example.rating)
        if best.rating >= GOOD_RATING:
            lines.append(f"The best-rated answer for this input. {format_expected(best.output)}")
        return "\n".join(lines)

    def as_scorer(self, name: str = "sme_rating") -> Scorer:
        """This metric as an MLflow scorer (inputs, outputs) -> Feedback."""

        def sme_rating(inputs: dict[str, Any], outputs: Any) -> Feedback:
            value, feedback = self.score(inputs, outputs)
            return Feedback(value=value, rationale=feedback)

        return scorer(sme_rating, name=name)


def rated_examples(
    feedback: Sequence[dict[str, Any]], predict_fn: PredictFn | None = None
) -> list[RatedExample]:
    """Feedback items as rated examples (ratings normalized with `schemas.ratings`); ValueError names the item."""
    if not feedback:
        raise ValueError("feedback: no feedback items given")
    call = as_keyword_predict_fn(predict_fn) if predict_fn is not None else None
    rated = []
    for index, item in enumerate(feedback):
        if not isinstance(item, dict) or not isinstance(item.get("inputs"), dict) or not item["inputs"]:
            raise ValueError(f"feedback[{index}]: expected a dict with a non-empty 'inputs' dict")
        if "sme_rating" not in item and "correction" not in item:
            raise ValueError(f"feedback[{index}]: needs 'sme_rating' or 'correction'")
        comment = item.get("comment")
        if item.get("correction"):
            rated.append(RatedExample(item["inputs"], str(item["correction"]), 1.0, comment))
        if "sme_rating" not in item:
            continue
        try:
            rating = normalize_rating(item["sme_rating"], item.get("scale", "five_point"))
        except ValueError as error:
            raise ValueError(f"feedback[{index}].sme_rating: {error}") from None
        if "outputs" in item:
            output = output_text(item["outputs"])
        elif call is not None:
            output = output_text(call(**item["inputs"]))
        else:
            raise ValueError(f"feedback[{index}]: no 'outputs' and no predict_fn to produce the rated answer")
        rated.append(RatedExample(item["inputs"], output, rating, comment))
    return rated


def sme_scorer_for(records: Sequence[dict[str, Any]], predict_fn: PredictFn | None = None) -> Scorer | None:
    """The `sme_rating` scorer built from the rated items among `records` (those with `sme_rating` or
    `correction`), or None when there are none."""
    rated = [r for r in records if "sme_rating" in r or r.get("correction")]
    return SMERatingMetric(rated_examples(rated, predict_fn)).as_scorer() if rated else None


def resolve_rated_scorers(
    specs: Sequence[Any] | None,
    records: Sequence[dict[str, Any]],
    judge_model: str,
    predict_fn: PredictFn | None = None,
) -> list[Scorer]:
    """`resolve_scorers`, with `sme_rating` built from the rated items among `records` when it is asked for."""
    wanted = "sme_rating" in (specs or [])
    return resolve_scorers(
        specs, judge_model=judge_model, sme_scorer=sme_scorer_for(records, predict_fn) if wanted else None
    )
