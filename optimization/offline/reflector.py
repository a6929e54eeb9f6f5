"""The offline reflection model (demo/test only): turns GEPA feedback into rule lines.

It reads the current instruction and the reflective examples (inputs, the
model's output, feedback/expectations), asks each offline skill which rule
would fix a wrong answer, and appends the rules the instruction lacks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from optimization.offline.rules import parse_expected
from optimization.offline.skills import SKILLS

MAX_NEW_RULES = 3
"""Rules added per reflection, like a model that fixes a few things at a time."""


def _leaves(value: Any) -> list[str]:
    """All string leaves of a nested value, in order."""
    if isinstance(value, Mapping):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list | tuple):
        return [leaf for item in value for leaf in _leaves(item)]
    return [] if value is None else [str(value)]


def _split_example(example: Mapping[str, Any]) -> tuple[str, str, str, str | None]:
    """(input text, output text, feedback text, expected answer) of one reflective example."""
    inputs, outputs, feedback = [], [], []
    expected = None
    for key, value in example.items():
        name = str(key).lower()
        if name.startswith("input"):
            inputs += _leaves(value)
        elif name.startswith(("output", "generated")):
            outputs += _leaves(value)
        elif name.startswith("expectation") and isinstance(value, Mapping):
            expected = value.get("expected_response")
        else:
            feedback += _leaves(value)
    feedback_text = "\n".join(feedback)
    expected = parse_expected(feedback_text) or (str(expected) if expected not in (None, "") else None)
    return "\n".join(inputs), "\n".join(outputs), feedback_text, expected


def _is_perfect(example: Mapping[str, Any]) -> bool:
    score = next((v for k, v in example.items() if str(k).lower() == "score"), None)
    return isinstance(score, int | float) and score >= 1.0


def propose_instruction(current_instruction: str, examples: Sequence[Mapping[str, Any]]) -> str:
    """The current instruction plus the rules that fix the failing examples (at most MAX_NEW_RULES),
    placed before the first template placeholder line so the input stays last."""
    known = current_instruction.lower()
    new_rules: list[str] = []
    for example in examples:
        if _is_perfect(example):
            continue
        query, output, _, expected = _split_example(example)
        for skill in SKILLS.values():
            for rule in skill.rules_for(query, output, expected):
                if rule.lower() not in known and rule not in new_rules:
                    new_rules.append(rule)
    if not new_rules:
        return current_instruction
    lines = current_instruction.rstrip().splitlines()
    at = next((i for i, line in enumerate(lines) if "{{" in line), len(lines))  # keep template inputs last
    return "\n".join([*lines[:at], *new_rules[:MAX_NEW_RULES], *lines[at:]])
