"""Plain records shared by the optimizer library and the daemon's job planning (`handlers/jobs.py`),
free of MLflow and DSPy so the pure layer can use them: an SME judgement, the text of an output,
the wanted answer of an example, and the forms answers are compared in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RatedExample:
    """One SME judgement: the inputs, the output rated, its rating normalized to [0, 1], the comment."""

    inputs: dict[str, Any]
    output: str
    rating: float
    comment: str | None = None


def output_text(outputs: Any) -> str:
    """The text of a predict_fn output (a string, or a dict's response/answer field)."""
    if isinstance(outputs, dict):
        for key in ("response", "answer", "output", "content", "category"):
            if key in outputs:
                return str(outputs[key])
        return " ".join(str(value) for value in outputs.values())
    return "" if outputs is None else str(outputs)


def tokens(text: Any) -> list[str]:
    """Lower-case word/number tokens of `text`."""
    return re.findall(r"[a-z0-9]+(?:[.'][a-z0-9]+)*", str(text).lower())


def expected_response(expectations: dict[str, Any] | None) -> str | None:
    """The wanted answer in an expectations dict (`expected_response`, else its only value)."""
    if not expectations:
        return None
    if "expected_response" in expectations:
        return str(expectations["expected_response"])
    return str(next(iter(expectations.values()))) if len(expectations) == 1 else None


def normalize_answer(text: Any) -> str:
    """Case-, space- and trailing-punctuation-insensitive form of an answer."""
    return " ".join(str(text).lower().split()).strip(" .!?\"'")
