"""Instructions a reflected template repeats, removed before the candidate is evaluated: GEPA
appends what reflection writes, and a reflection model that restates a rule, or ends every rule
with the same reminder, makes the prompt longer and every call dearer without teaching it
anything (gepa-ai/gepa#271).

Method: line by line, a line is a repeat of an earlier one when their normalized texts are
equal (case, spacing, list markers and punctuation ignored) or near-equal: the same words in
both, by token-set Jaccard similarity >= `NEAR` (0.9). Why this and not an edit distance or
embeddings: it is deterministic, needs no model, and its threshold has a plain meaning — two
rules that differ in one content word out of ten score 9/11 = 0.82 and are both kept, so a rule
for "refund" never swallows the one for "invoice", while a restated rule with the same words in
another order, or with a repeated word, is caught. Lines with a template variable (`{{...}}`)
and lines of fewer than `MIN_WORDS` words (headings, separators) are never removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NEAR = 0.9
MIN_WORDS = 4
_MARKER = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_WORD = re.compile(r"[\w']+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Deduplicated:
    """A template without its repeated instructions, and the lines removed (in order)."""

    template: str
    removed: tuple[str, ...]


def _words(line: str) -> list[str]:
    return _WORD.findall(_MARKER.sub("", line).lower())


def remove_repeated_rules(template: str) -> Deduplicated:
    """The template with each line that repeats an earlier one (module docstring) removed."""
    kept: list[str] = []
    seen: list[tuple[str, frozenset[str]]] = []
    removed = []
    for line in template.splitlines():
        words = _words(line)
        if len(words) < MIN_WORDS or "{{" in line:
            kept.append(line)
            continue
        text, bag = " ".join(words), frozenset(words)
        if any(
            text == other or len(bag & other_bag) / len(bag | other_bag) >= NEAR for other, other_bag in seen
        ):
            removed.append(line)
            continue
        seen.append((text, bag))
        kept.append(line)
    if not removed:
        return Deduplicated(template, ())
    ending = "\n" if template.endswith("\n") else ""
    return Deduplicated("\n".join(kept) + ending, tuple(removed))
