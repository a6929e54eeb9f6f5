"""Repeated instructions in a reflected template: exact and near repeats go, distinct rules,
template variables and short lines stay, and a clean template comes back unchanged."""

from __future__ import annotations

from optimization.offline.reflector import note
from optimization.rule_dedup import remove_repeated_rules

RULES = """Route the ticket {{ticket}} to billing, technical, account or shipping.
Rule: if the ticket mentions "refund" or "invoice", the category is billing.
Rule: if the ticket mentions "crash" or "error", the category is technical.
"""


def test_a_clean_template_is_unchanged() -> None:
    assert remove_repeated_rules(RULES).template == RULES and remove_repeated_rules(RULES).removed == ()


def test_exact_and_near_repeats_go_and_the_first_stays() -> None:
    template = (
        RULES
        + '- Rule: If the ticket mentions "refund" or "invoice", the category is billing!\n'
        + 'Rule: the category is billing, if the ticket mentions "invoice" or "refund".\n'
    )
    done = remove_repeated_rules(template)
    assert done.template == RULES and len(done.removed) == 2


def test_rules_that_differ_in_a_content_word_are_both_kept() -> None:
    template = (
        'Rule: if the ticket mentions "refund", the category is billing.\n'
        'Rule: if the ticket mentions "password", the category is account.\n'
    )
    assert remove_repeated_rules(template).removed == ()


def test_template_variables_and_short_lines_are_never_removed() -> None:
    template = "Rules:\nTicket: {{ticket}}\nRules:\nTicket: {{ticket}}\n"
    assert remove_repeated_rules(template).template == template


def test_a_verbose_reflectors_repeated_notes_go() -> None:
    template = RULES + "\n".join(
        [
            f'Rule: if the ticket mentions "{w}", the category is shipping.\n{note(30)}'
            for w in ("parcel", "courier")
        ]
    )
    done = remove_repeated_rules(template)
    assert done.removed == (note(30),) and done.template.count("Note:") == 1
