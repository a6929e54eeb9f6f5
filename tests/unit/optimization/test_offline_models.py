"""The offline demo/test models: rules in, behaviour out; the reflector writes the missing rule."""

import dspy

from optimization.models import make_lm
from optimization.offline import (
    format_expected,
    format_rule,
    parse_rules,
    propose_instruction,
    respond_to_prompt,
)
from optimization.offline.engine import prompt_input

BILLING_RULE = format_rule("ticket", ["refund", "charged"], "the category is billing.")


def test_rules_round_trip() -> None:
    (rule,) = parse_rules(f"Route tickets.\n{BILLING_RULE}\nTicket: x")
    assert rule.keywords == ("refund", "charged") and "billing" in rule.action


def test_router_needs_the_rule_for_a_category() -> None:
    ticket = "Ticket: I was charged twice"
    assert respond_to_prompt("support-router", f"Route the ticket.\n{ticket}") != "billing"
    assert respond_to_prompt("support-router", f"Route the ticket.\n{BILLING_RULE}\n{ticket}") == "billing"


def test_math_knows_addition_and_learns_other_operations_from_rules() -> None:
    assert respond_to_prompt("math", "Question: What is 2+3?") == "5"
    assert respond_to_prompt("math", "Question: What is 3*5?") == "8"
    rule = format_rule("question", ["*", "times"], "multiply the numbers.")
    assert respond_to_prompt("math", f"{rule}\nQuestion: What is 3*5?") == "15"


def test_support_agent_states_the_answer_its_rule_gives() -> None:
    rule = format_rule("query", ["return"], "answer: You can return items within 30 days.")
    assert (
        respond_to_prompt("support-agent", f"{rule}\nQuery: Can I return this?")
        == "You can return items within 30 days."
    )
    assert "30 days" not in respond_to_prompt("support-agent", "Query: Can I return this?")


def test_prompt_input_is_the_last_line_after_its_label() -> None:
    assert (
        prompt_input(f"Answer professionally.\n{BILLING_RULE}\nQuery: Where is it: now?")
        == "Where is it: now?"
    )


def test_reflector_writes_the_rule_the_feedback_asks_for_before_the_input_line() -> None:
    example = {
        "inputs": {"ticket": "I want a refund"},
        "outputs": "account",
        "score": 0.0,
        "rationales": {"exact_match": format_expected("billing")},
    }
    new = propose_instruction("Route the ticket.\nTicket: {{ticket}}", [example])
    assert "the category is billing" in new and new.splitlines()[-1] == "Ticket: {{ticket}}"
    assert propose_instruction(new, [example]) == new  # nothing new to add


def test_reflector_skips_perfect_examples() -> None:
    example = {"inputs": {"ticket": "I want a refund"}, "outputs": "account", "score": 1.0}
    assert propose_instruction("Route.", [example]) == "Route."


def test_dspy_signature_call_follows_instructions() -> None:
    program = dspy.Predict(dspy.Signature("ticket -> category", f"Route tickets.\n{BILLING_RULE}"))
    with dspy.context(lm=make_lm("offline/support-router")):
        assert program(ticket="I was charged twice").category == "billing"
    with dspy.context(lm=make_lm("offline/support-router"), adapter=dspy.JSONAdapter()):
        assert program(ticket="I was charged twice").category == "billing"
