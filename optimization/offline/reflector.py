"""The offline reflection model (demo/test only): turns GEPA feedback into rule lines.

It reads the current instruction and the reflective examples (inputs, the
model's output, feedback/expectations), asks each offline skill which rule
would fix a wrong answer, and appends the rules the instruction lacks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from optimization.offline.rules import parse_expected
from optimization.offline.skills import SKILLS

MAX_NEW_RULES = 3
"""Rules added per reflection, like a model that fixes a few things at a time."""
NOTE_WORDS = (
    "remember that every customer deserves a careful and complete reading of their message before any "
    "decision is made about where it should go next and who should answer it"
).split()
"""The words a verbose reflector's notes cycle through (they mention no category's signal word)."""


def note(words: int) -> str:
    """A `Note:` line of `words` words: what a verbose reflection model writes after each rule (the
    offline task models ignore it; it only makes the template longer)."""
    return "Note: " + " ".join(NOTE_WORDS[i % len(NOTE_WORDS)] for i in range(words)) + "."


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


def propose_instruction(
    current_instruction: str, examples: Sequence[Mapping[str, Any]], notes: int = 0
) -> str:
    """The current instruction plus the rules that fix the failing examples (at most MAX_NEW_RULES),
    placed before the first template placeholder line so the input stays last; with `notes`, each
    new rule is followed by a `Note:` line of that many words (a verbose model's prompt growth)."""
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
    added = [
        line for rule in new_rules[:MAX_NEW_RULES] for line in ([rule, note(notes)] if notes else [rule])
    ]
    return "\n".join([*lines[:at], *added, *lines[at:]])


_GEPA_PROMPT_RE = re.compile(
    r"I provided an assistant with the following instructions to perform a task for me:\n```\n(?P<instruction>.*?)\n```\n\n"
    r"The following are examples of different task inputs.*?:\n```\n(?P<examples>.*)\n```\n\nYour task is to write a new instruction",
    re.DOTALL,
)
_HEADING_RE = re.compile(r"^(#{1,6}) (.*)$")


def parse_gepa_reflection_prompt(prompt: str) -> tuple[str, list[dict[str, Any]]] | None:
    """(current instruction, examples) of GEPA's default reflection prompt (what MLflow's optimizer
    sends), or None when `prompt` is not one. The markdown examples are read back into dicts."""
    match = _GEPA_PROMPT_RE.search(prompt)
    if match is None:
        return None
    examples = [
        _markdown_tree(block)
        for block in re.split(r"^# Example \d+\n", match["examples"], flags=re.MULTILINE)
        if block.strip()
    ]
    return match["instruction"], examples


def _markdown_tree(block: str) -> dict[str, Any]:
    """GEPA's rendering of one example (`## key` / `### sub-key` headings over text) as nested dicts."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any], str]] = []  # (heading level, parent dict, key)
    for line in block.splitlines():
        heading = _HEADING_RE.match(line)
        if heading is None:
            if stack:
                _, parent, key = stack[-1]
                parent[key] = (
                    f"{parent[key]}\n{line}" if isinstance(parent[key], str) and parent[key] else line
                )
            continue
        level, key = len(heading[1]), heading[2].strip()
        while stack and stack[-1][0] >= level:
            stack.pop()
        parent = root
        if stack:
            _, grandparent, parent_key = stack[-1]
            if not isinstance(grandparent[parent_key], dict):
                grandparent[parent_key] = {}
            parent = grandparent[parent_key]
        parent[key] = ""
        stack.append((level, parent, key))
    return {key: _scalar(key, value) for key, value in root.items()}


def _scalar(key: str, value: Any) -> Any:
    """Strip text leaves; the score is read back as a number (the reflector skips perfect examples)."""
    if isinstance(value, dict):
        return {k: _scalar(k, v) for k, v in value.items()}
    text = value.strip()
    if key.lower() == "score":
        try:
            return float(text)
        except ValueError:
            return text
    return text
