"""Plain records shared by the optimizer library and the daemon's job planning (`handlers/jobs.py`),
free of MLflow and DSPy so the pure layer can use them: an SME judgement, the text of an output."""

from __future__ import annotations

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
