"""The offline demo/test judges: deterministic heuristics standing in for MLflow's LLM judges
(`correctness`, `professionalism`, `guidelines:<text>`) when the judge model is `offline/*`, and
read by the offline judge model (`offline/judge.py`) so MLflow's own judge prompts get the same
verdicts. They depend on records and rules only, never on the model layer."""

from __future__ import annotations

import re
from typing import Any

from mlflow.entities import Feedback
from mlflow.genai.scorers import Scorer, scorer

from optimization.offline.rules import format_expected
from optimization.records import expected_response, output_text, tokens

PROFESSIONALISM_GUIDELINE = "The response is polite and professional: courteous, no slang, no shouting (all caps or '!!'), and complete sentences."
_SLANG = frozenset("lol gonna wanna dude whatever u ur omg btw idk nope yeah".split())


@scorer(name="correctness")
def offline_correctness(outputs: Any, expectations: dict[str, Any]) -> Feedback:
    """Offline demo/test judge: share of the expected response's words present in the output."""
    wanted = expected_response(expectations)
    if wanted is None:
        return Feedback(value=0.0, rationale="No expected_response to judge against.")
    expected_words = set(tokens(wanted))
    got = set(tokens(output_text(outputs)))
    value = len(expected_words & got) / len(expected_words) if expected_words else float(not got)
    if value >= 1.0:
        return Feedback(value=1.0, rationale="The response states every fact of the expected response.")
    missing = ", ".join(sorted(expected_words - got)[:12])
    return Feedback(
        value=round(value, 4), rationale=f"The response misses: {missing}. {format_expected(wanted)}"
    )


@scorer(name="professionalism")
def offline_professionalism(outputs: Any) -> Feedback:
    """Offline demo/test judge: penalizes slang, shouting and one-word answers."""
    text = output_text(outputs)
    problems = []
    if _SLANG & set(tokens(text)):
        problems.append("uses slang")
    if "!!" in text or any(len(word) > 3 and word.isupper() for word in text.split()):
        problems.append("shouts")
    if len(text.split()) < 3:
        problems.append("is too terse")
    value = max(0.0, 1.0 - 0.5 * len(problems))
    return Feedback(
        value=value,
        rationale="Professional." if not problems else "The response " + " and ".join(problems) + ".",
    )


def _stem(word: str) -> str:
    """A crude stem (drops -ing/-ed/-s) so 'refunds' meets 'refund'."""
    for suffix in ("ing", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def offline_guidelines(guideline: str, name: str = "guidelines") -> Scorer:
    """Offline demo/test judge for a guideline: each phrase quoted in the guideline must appear in the output;
    a guideline without quotes is judged as relevance (the output shares a content word with the request)."""
    phrases = re.findall(r"['\"]([^'\"]+)['\"]", guideline)

    def judge(inputs: Any, outputs: Any) -> Feedback:
        text = output_text(outputs).lower()
        if phrases:
            missing = [phrase for phrase in phrases if phrase.lower() not in text]
            value = 1 - len(missing) / len(phrases)
            return Feedback(
                value=value,
                rationale="Follows the guideline."
                if not missing
                else f"Missing {missing} required by: {guideline}",
            )
        request_words = {_stem(word) for word in tokens(inputs) if len(word) > 3}
        ok = bool(request_words & {_stem(word) for word in tokens(text)})
        return Feedback(
            value=float(ok),
            rationale="Addresses the request." if ok else f"Does not address the request ({guideline})",
        )

    return scorer(judge, name=name)
