"""Scorers: resolve names / `module:function` / objects to MLflow scorer objects, and read their results.

Names: `exact_match`, `correctness`, `professionalism`, `guidelines:<text>`,
`sme_rating`. With a judge model `offline/*`, `correctness`,
`professionalism` and `guidelines:` are deterministic heuristic judges
(offline demo/test judges, not LLMs) so everything runs without network.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from mlflow.entities import Feedback
from mlflow.genai.scorers import Correctness, Guidelines, Scorer, scorer

from optimization.import_ref import load_ref
from optimization.models import parse_model
from optimization.offline.rules import format_expected
from optimization.offline.scorers import (
    PROFESSIONALISM_GUIDELINE,
    offline_correctness,
    offline_guidelines,
    offline_professionalism,
)
from optimization.records import expected_response, normalize_answer, output_text

SCORER_NAMES = (
    "exact_match",
    "correctness",
    "professionalism",
    "guidelines:<text>",
    "sme_rating",
    "module:function",
)


@scorer(name="exact_match")
def exact_match(outputs: Any, expectations: dict[str, Any]) -> Feedback:
    """1.0 when the output equals the expected response after normalization."""
    wanted = expected_response(expectations)
    if wanted is None:
        return Feedback(value=0.0, rationale="No expected_response to compare with.")
    ok = normalize_answer(output_text(outputs)) == normalize_answer(wanted)
    rationale = "Correct." if ok else f"Got {output_text(outputs)!r}. {format_expected(wanted)}"
    return Feedback(value=1.0 if ok else 0.0, rationale=rationale)


def as_scorer(target: Any, label: str = "scorer") -> Scorer:
    """An MLflow Scorer from a Scorer object or a plain function over inputs/outputs/expectations."""
    if isinstance(target, Scorer):
        return target
    if callable(target):
        return scorer(target, name=getattr(target, "__name__", label))
    raise ValueError(f"scorers: {label!r} is neither a scorer object, a function, nor a known name")


def resolve_scorers(
    specs: Sequence[str | Scorer | Callable[..., Any]] | None,
    judge_model: str = "databricks-claude-sonnet-4",
    sme_scorer: Scorer | None = None,
    default: Sequence[str] = ("correctness",),
) -> list[Scorer]:
    """Turn names, `module:function` strings and objects into scorer objects.

    `judge_model` drives the LLM judges (offline/* selects the offline judges);
    `sme_rating` needs `sme_scorer` (built from rated examples). Unknown names
    raise ValueError naming the `scorers` argument.
    """
    offline = parse_model(judge_model, "judge_model").is_offline
    uri = parse_model(judge_model, "judge_model").mlflow_uri
    resolved = []
    for spec in specs if specs else list(default):
        if not isinstance(spec, str):
            resolved.append(as_scorer(spec))
        elif spec == "exact_match":
            resolved.append(exact_match)
        elif spec == "correctness":
            resolved.append(offline_correctness if offline else Correctness(model=uri))
        elif spec == "professionalism":
            resolved.append(
                offline_professionalism
                if offline
                else Guidelines(name="professionalism", guidelines=PROFESSIONALISM_GUIDELINE, model=uri)
            )
        elif spec.startswith("guidelines:") and spec[len("guidelines:") :].strip():
            text = spec[len("guidelines:") :].strip()
            resolved.append(offline_guidelines(text) if offline else Guidelines(guidelines=text, model=uri))
        elif spec == "sme_rating":
            if sme_scorer is None:
                raise ValueError(
                    "scorers: 'sme_rating' needs rated examples (use HumanFeedbackOptimizer or pass an SMERatingMetric scorer)"
                )
            resolved.append(sme_scorer)
        elif re.fullmatch(r"[\w.]+:\w+", spec):
            resolved.append(as_scorer(load_ref(spec, "scorers"), spec))
        else:
            raise ValueError(f"scorers: unknown scorer {spec!r} (known: {', '.join(SCORER_NAMES)})")
    return resolved


def score_value(result: Any) -> tuple[float, str]:
    """(score in [0, 1], rationale) of one scorer result: number, bool, yes/no, Feedback or a list of them."""
    if isinstance(result, list):
        parts = [score_value(item) for item in result]
        return (sum(p[0] for p in parts) / len(parts) if parts else 0.0), " ".join(
            p[1] for p in parts if p[1]
        )
    rationale = ""
    if isinstance(result, Feedback):
        if result.error is not None:
            raise RuntimeError(f"scorer {result.name!r} failed: {result.error}")
        rationale = result.rationale or ""
        result = result.value
    if isinstance(result, str):
        lowered = result.strip().lower()
        if lowered in ("yes", "no", "true", "false", "pass", "fail"):
            return float(lowered in ("yes", "true", "pass")), rationale
        raise ValueError(f"scorer returned a non-numeric value {result!r}")
    return min(1.0, max(0.0, float(result))), rationale


def run_scorers(
    scorers: Sequence[Scorer], inputs: dict[str, Any], outputs: Any, expectations: dict[str, Any] | None
) -> tuple[float, str]:
    """Mean score of `scorers` on one example and their rationales as one feedback text."""
    scores, notes = [], []
    for item in scorers:
        value, rationale = score_value(
            item.run(inputs=inputs, outputs=outputs, expectations=expectations or {})
        )
        scores.append(value)
        notes.append(f"{item.name} ({value:.2f}): {rationale}" if rationale else f"{item.name}: {value:.2f}")
    return sum(scores) / len(scores), "\n".join(notes)
