"""Shared demo data: customer questions with the answers support wants (5 topics, several phrasings each)."""

from __future__ import annotations

ANSWERS = {
    "returns": "You can return items within 30 days of delivery for a full refund.",
    "refunds": "We offer full refunds to the original payment method within 5 business days.",
    "tracking": "Track your order from the Orders page using the tracking link in your confirmation email.",
    "international": "We ship internationally to over 40 countries and delivery takes 7 to 14 days.",
    "password": "Reset your password from the login page by clicking Forgot password.",
}

QUESTIONS = [
    ("How do I return an item?", "returns"),
    ("Can I return shoes I bought last week?", "returns"),
    ("What is the process for returning a gift?", "returns"),
    ("Is it possible to return a jacket?", "returns"),
    ("What's your refund policy?", "refunds"),
    ("When will I get my refund?", "refunds"),
    ("Do you give refunds on sale items?", "refunds"),
    ("How are refunds paid?", "refunds"),
    ("How do I track my order?", "tracking"),
    ("Where can I find tracking for my package?", "tracking"),
    ("Can I track a gift order?", "tracking"),
    ("Is there tracking for express orders?", "tracking"),
    ("Do you ship internationally?", "international"),
    ("Can you send my order abroad?", "international"),
    ("How long does international shipping take?", "international"),
    ("Do you deliver overseas?", "international"),
    ("How do I reset my password?", "password"),
    ("I forgot my password", "password"),
    ("The password reset link is not arriving", "password"),
    ("Can I change my password?", "password"),
]
"""(question, topic) pairs; the wanted answer is ANSWERS[topic]."""


def support_records() -> list[dict]:
    """The questions as `{"inputs": {"query"}, "expectations": {"expected_response"}}` records."""
    return [{"inputs": {"query": q}, "expectations": {"expected_response": ANSWERS[t]}} for q, t in QUESTIONS]
