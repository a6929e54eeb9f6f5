"""Deterministic demo data for the offline models: support tickets with their category (demo/test only)."""

from __future__ import annotations

import itertools

from optimization.offline.skills import ROUTER_LEXICON

_TICKET_TEMPLATES = (
    "Hi, I have a problem with the {kw} on my order",
    "Can someone help me? Something is wrong with the {kw}",
    "Question about {kw}: nothing I try works",
    "Urgent: {kw} issue since yesterday",
    "Hello team, the {kw} is not what I expected",
)

SEED_ROUTER_PROMPT = (
    "Route this support ticket to one category: billing, shipping, technical or account. Answer with the category only.\n"
    'Rule: if the ticket mentions "crash", the category is technical.\n'
    "Ticket: {{ticket}}"
)
"""A seed router prompt with one rule (so its baseline is above zero), for demos and tests."""


def support_tickets(n: int) -> list[dict[str, dict[str, str]]]:
    """`n` distinct ticket records `{"inputs": {"ticket"}, "expectations": {"expected_response": category}}`,
    cycling through the categories; deterministic."""
    depth = min(len(words) for words in ROUTER_LEXICON.values())
    keywords = [(category, words[i]) for i in range(depth) for category, words in ROUTER_LEXICON.items()]
    records = []
    for template, (category, word) in itertools.islice(itertools.product(_TICKET_TEMPLATES, keywords), n):
        records.append(
            {"inputs": {"ticket": template.format(kw=word)}, "expectations": {"expected_response": category}}
        )
    if len(records) < n:
        raise ValueError(f"n: at most {len(records)} distinct demo tickets exist")
    return records
