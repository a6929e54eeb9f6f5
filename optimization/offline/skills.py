"""Task behaviour and domain knowledge of the offline (demo/test) models.

Each skill answers like a model that follows the rules present in its
instructions and otherwise makes a plausible mistake, and knows which rule
fixes a wrong answer (the offline reflector's "world knowledge").
Deterministic, no network: for demos and tests only.
"""

from __future__ import annotations

import re
from typing import Protocol

from optimization.offline.rules import Rule, best_rule, format_rule, mentions, parse_rules

ROUTER_LEXICON: dict[str, tuple[str, ...]] = {
    "billing": ("refund", "invoice", "charge", "charged", "payment", "receipt", "credit card"),
    "shipping": ("delivery", "package", "tracking", "courier", "shipped", "parcel", "arrive"),
    "technical": ("error", "crash", "crashes", "bug", "app", "loading", "website"),
    "account": ("password", "login", "log in", "username", "profile", "two-factor", "locked"),
}
"""Support-ticket categories and the words that signal them."""

ROUTER_CONFUSION: dict[str, str] = {
    "billing": "account",
    "shipping": "billing",
    "technical": "account",
    "account": "technical",
}
"""The plausible wrong category the router picks for a category it has no rule for."""

AGENT_TOPICS: tuple[tuple[str, ...], ...] = (
    ("return", "returns", "returning"),
    ("refund", "refunds"),
    ("track", "tracking"),
    ("internationally", "international", "abroad", "overseas"),
    ("password", "reset"),
    ("cancel", "cancellation"),
    ("warranty", "broken", "defective"),
    ("hours", "open"),
    ("payment", "pay"),
)
"""Topic keywords the support agent's rules are keyed on."""

_STOPWORDS = frozenset(
    "a an and are can do does for from how i in is it me my of on or our the to what when where which who why "
    "will with you your yours this that there their have has was were be been".split()
)


class Skill(Protocol):
    """What an offline task model does, and how its reflector repairs it."""

    def answer(self, instructions: str, query: str) -> str:
        """The answer to `query` following the rules in `instructions`."""
        ...

    def rules_for(self, query: str, output: str, expected: str | None) -> list[str]:
        """Rule lines that would make the answer to `query` right (empty when none applies)."""
        ...


def _category_of(text: str) -> str | None:
    """The category whose signal words occur most in `text`."""
    hits = {
        category: sum(mentions(text, word) for word in words) for category, words in ROUTER_LEXICON.items()
    }
    category, count = max(hits.items(), key=lambda item: item[1])
    return category if count else None


class SupportRouter:
    """Routes a support ticket to billing/shipping/technical/account (offline demo model)."""

    def answer(self, instructions: str, query: str) -> str:
        """The category of the best-matching rule, else a plausible wrong one."""
        rule = best_rule([r for r in parse_rules(instructions) if self._target(r)], query)
        if rule is not None:
            return self._target(rule) or ""
        truth = _category_of(query)
        return ROUTER_CONFUSION.get(truth or "", "general")

    def rules_for(self, query: str, output: str, expected: str | None) -> list[str]:
        """The rule for the wanted (or, without feedback, the evident) category of a misrouted ticket."""
        answered = output.strip().lower()
        if expected is None and answered not in (*ROUTER_LEXICON, "general"):
            return []
        wanted = expected.strip().lower() if expected else _category_of(query)
        if wanted not in ROUTER_LEXICON or wanted == answered:
            return []
        return [format_rule("ticket", ROUTER_LEXICON[wanted], f"the category is {wanted}.")]

    @staticmethod
    def _target(rule: Rule) -> str | None:
        match = re.search(r"category is (\w+)", rule.action, re.IGNORECASE)
        return match.group(1).lower() if match and match.group(1).lower() in ROUTER_LEXICON else None


_OPERATIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "add": (("+", "plus"), "add the numbers"),
    "subtract": (("-", "minus"), "subtract the second number from the first"),
    "multiply": (("*", "x", "times"), "multiply the numbers"),
    "divide": (("/", "divided by"), "divide the first number by the second"),
}
_QUESTION_RE = re.compile(
    r"(-?\d+(?:\.\d+)?)\s*(\+|-|\*|/|x|plus|minus|times|divided by)\s*(-?\d+(?:\.\d+)?)", re.I
)


class MathSolver:
    """Answers "What is A op B?" questions; knows only addition unless a rule names the operation (offline demo model)."""

    def answer(self, instructions: str, query: str) -> str:
        """The result, computed with addition unless a rule names the question's operation."""
        parsed = self._parse(query)
        if parsed is None:
            return "I don't know"
        left, operation, right = parsed
        known = {"add"} | {
            name for name, (_, verb) in _OPERATIONS.items() if self._has_rule(instructions, verb)
        }
        applied = operation if operation in known else "add"
        return _format_number(_apply(applied, left, right))

    def rules_for(self, query: str, output: str, expected: str | None) -> list[str]:
        """The rule naming the operation of a wrongly answered question."""
        parsed = self._parse(query)
        if parsed is None:
            return []
        left, operation, right = parsed
        if output.strip() == _format_number(_apply(operation, left, right)):
            return []
        symbols, verb = _OPERATIONS[operation]
        return [format_rule("question", symbols, f"{verb}.")]

    @staticmethod
    def _has_rule(instructions: str, verb: str) -> bool:
        return any(verb in rule.action.lower() for rule in parse_rules(instructions))

    @staticmethod
    def _parse(query: str) -> tuple[float, str, float] | None:
        match = _QUESTION_RE.search(query)
        if match is None:
            return None
        token = match.group(2).lower()
        operation = next(name for name, (symbols, _) in _OPERATIONS.items() if token in symbols)
        return float(match.group(1)), operation, float(match.group(3))


def _apply(operation: str, left: float, right: float) -> float:
    if operation == "subtract":
        return left - right
    if operation == "multiply":
        return left * right
    if operation == "divide":
        return left / right if right else float("nan")
    return left + right


def _format_number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.2f}"


class SupportAgent:
    """Answers customer questions in free text; states a policy only when a rule gives it (offline demo model)."""

    def answer(self, instructions: str, query: str) -> str:
        """The answer text of the best-matching rule, else a polite generic answer."""
        rule = best_rule([r for r in parse_rules(instructions) if self._answer_text(r)], query)
        if rule is not None:
            return self._answer_text(rule) or ""
        topic = " ".join(_content_words(query)[:3]) or "your request"
        return f"Thank you for reaching out about {topic}. Please contact our support team for more details."

    def rules_for(self, query: str, output: str, expected: str | None) -> list[str]:
        """A rule keyed on the query's topic words that answers with the expected text."""
        if not expected or len(expected.split()) < 3 or expected.strip() == output.strip():
            return []
        keywords = [
            word for topic in AGENT_TOPICS if any(mentions(query, w) for w in topic) for word in topic
        ]
        keywords = keywords or _content_words(query)[:2]
        return [format_rule("query", keywords, f"answer: {expected.strip()}")] if keywords else []

    @staticmethod
    def _answer_text(rule: Rule) -> str | None:
        match = re.match(r"answer:\s*(.+)$", rule.action, re.IGNORECASE | re.DOTALL)
        return match.group(1).strip() if match else None


def _content_words(text: str) -> list[str]:
    """Distinct non-stopwords of `text`, longest first (stable)."""
    words = dict.fromkeys(
        w for w in re.findall(r"[a-z][a-z'-]+", text.lower()) if w not in _STOPWORDS and len(w) > 3
    )
    return sorted(words, key=len, reverse=True)


SKILLS: dict[str, Skill] = {
    "support-router": SupportRouter(),
    "math": MathSolver(),
    "support-agent": SupportAgent(),
}
"""Offline task models by name (`offline/<name>`)."""
