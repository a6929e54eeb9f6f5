"""The template diff the ops page shows: line ops, and word runs inside a changed line."""

from __future__ import annotations

from handlers.template_diff import template_diff, word_diff


def test_lines_kept_removed_added_and_changed() -> None:
    old = "Route the ticket.\nAnswer with one word.\nBe brief."
    new = "Route the ticket.\nAnswer with exactly one team name.\nBilling questions go to billing.\nBe brief."
    rows = template_diff(old, new)
    assert [r.op for r in rows] == ["equal", "replace", "insert", "equal"]
    assert rows[1].old == "Answer with one word." and rows[1].new == "Answer with exactly one team name."
    assert ("insert", "exactly ") in rows[1].words or any(
        op == "insert" and "exactly" in text for op, text in rows[1].words
    )
    assert rows[2].new == "Billing questions go to billing."


def test_word_runs_rebuild_both_sides() -> None:
    old, new = "Route every ticket to a team.", "Route each billing ticket to the billing team."
    runs = word_diff(old, new)
    assert "".join(text for op, text in runs if op != "insert") == old
    assert "".join(text for op, text in runs if op != "delete") == new


def test_identical_templates_are_all_equal() -> None:
    assert all(r.op == "equal" for r in template_diff("a\nb", "a\nb"))
