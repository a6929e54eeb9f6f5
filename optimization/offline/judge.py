"""The offline judge model (demo/test only): answers MLflow's built-in judge prompts with the offline heuristics.

`offline/judge` as a scorer name selects the offline scorers of `optimization.offline.scorers`
directly; served as a chat model (the fake provider's `judge`), it reads the
correctness and guidelines prompts MLflow's `Correctness`/`Guidelines` judges send and
answers their JSON (`{"rationale", "result": "yes"|"no"}`) from the same heuristics,
so a judge reached through litellm scores like the offline one ("yes" = score 1.0).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities import Feedback

_TAG_RE = r"<{0}>(.*?)</{0}>"


def _tag(name: str, text: str) -> str | None:
    match = re.search(_TAG_RE.format(name), text, re.DOTALL)
    return match.group(1).strip() if match else None


def _feedback(result: object) -> Feedback:
    """An offline scorer's result, which is always one Feedback (MLflow types a scorer's result wider)."""
    from mlflow.entities import Feedback

    if not isinstance(result, Feedback):
        raise TypeError(f"offline/judge: a scorer answered {type(result).__name__}, not a Feedback")
    return result


def _passes(feedback: Feedback) -> bool:
    return isinstance(feedback.value, int | float) and feedback.value >= 1.0


def _verdict(feedback: Feedback) -> str:
    return json.dumps({"rationale": feedback.rationale, "result": "yes" if _passes(feedback) else "no"})


def judge_prompt(prompt: str) -> str:
    """The JSON verdict on one MLflow judge prompt; ValueError for a prompt the offline judge cannot read."""
    from optimization.offline.scorers import (  # MLflow only once a judge prompt is read
        PROFESSIONALISM_GUIDELINE,
        offline_correctness,
        offline_guidelines,
        offline_professionalism,
    )

    question, claim, document = _tag("question", prompt), _tag("claim", prompt), _tag("document", prompt)
    if claim is not None and document is not None:
        output = document.removeprefix(f"{question} - ") if question is not None else document
        return _verdict(
            _feedback(offline_correctness(outputs=output, expectations={"expected_response": claim}))
        )
    guidelines = re.findall(_TAG_RE.format("guideline"), prompt, re.DOTALL)
    response = _tag("response", prompt)
    if guidelines and response is not None:
        request = _tag("request", prompt) or ""
        verdicts = [
            _feedback(offline_professionalism(outputs=response))
            if guideline.strip() == PROFESSIONALISM_GUIDELINE
            else _feedback(offline_guidelines(guideline.strip())(inputs=request, outputs=response))
            for guideline in guidelines
        ]
        failed = [v for v in verdicts if not _passes(v)]
        return _verdict(failed[0] if failed else verdicts[0])
    raise ValueError("offline/judge: not an MLflow correctness or guidelines judge prompt")
