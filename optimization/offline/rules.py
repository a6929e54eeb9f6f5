"""The text conventions the offline (demo/test) models read and write.

A rule is one line of an instruction, e.g.
``Rule: if the ticket mentions "refund" or "invoice", the category is billing.``
The offline task models apply only the rules present in their instructions;
the offline reflector writes such lines. Metrics that know the wanted answer
say so in their feedback as ``Expected answer: "<json string>"`` so the
reflector can read it back, as a real model would read a judge's rationale.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_RULE_RE = re.compile(
    r"^\s*[-*]?\s*rule:\s*if the [\w ]+? mentions (?P<keywords>(?:\"[^\"]+\"(?:,\s*|\s+or\s+)?)+),?\s*(?P<action>.+?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_RULE_LINE_RE = re.compile(r"^\s*[-*]?\s*rule:.*$\n?", re.IGNORECASE | re.MULTILINE)
_EXPECTED_RE = re.compile(r"Expected answer: (\"(?:[^\"\\]|\\.)*\")")


@dataclass(frozen=True)
class Rule:
    """One parsed rule: the keywords that trigger it and what to do."""

    keywords: tuple[str, ...]
    action: str

    def matches(self, text: str) -> int:
        """Number of this rule's keywords present in `text` (0 = rule does not apply)."""
        return sum(1 for keyword in self.keywords if mentions(text, keyword))


def mentions(text: str, keyword: str) -> bool:
    """Whether `keyword` occurs in `text` as a whole word (case-insensitive)."""
    pattern = r"(?<!\w)" + re.escape(keyword.lower()) + r"(?!\w)"
    return re.search(pattern, text.lower()) is not None


def format_rule(subject: str, keywords: list[str] | tuple[str, ...], action: str) -> str:
    """Render a rule line in the syntax `parse_rules` reads."""
    quoted = [f'"{keyword}"' for keyword in keywords]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f"Rule: if the {subject} mentions {listed}, {action}"


def parse_rules(text: str) -> list[Rule]:
    """All rules stated in `text`, in order."""
    return [
        Rule(tuple(re.findall(r"\"([^\"]+)\"", match["keywords"])), match["action"])
        for match in _RULE_RE.finditer(text)
    ]


def strip_rules(text: str) -> str:
    """`text` without its rule lines (what remains is the task and its input)."""
    return _RULE_LINE_RE.sub("", text)


def best_rule(rules: list[Rule], text: str) -> Rule | None:
    """The rule with the most keyword hits in `text`; the first one wins ties."""
    scored = [(rule.matches(text), -index, rule) for index, rule in enumerate(rules)]
    hits, _, rule = max(scored, default=(0, 0, None), key=lambda item: (item[0], item[1]))
    return rule if hits else None


def format_expected(answer: str) -> str:
    """The feedback phrase stating the wanted answer."""
    return f"Expected answer: {json.dumps(answer)}"


def parse_expected(text: str) -> str | None:
    """The wanted answer stated in feedback `text` by `format_expected`, if any."""
    match = _EXPECTED_RE.search(text)
    return json.loads(match.group(1)) if match else None
