"""A policy file for many prompts: `defaults` every prompt inherits, `patterns` matched by name,
an explicit name over a pattern over defaults, overlapping patterns refused at load, and each
setting's source for `policy explain`."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from schemas.config import PolicyBook, PolicyFile, globs_overlap

FILE = """
defaults:
  task_model: openai/gpt-4.1-mini
  triggers: {min_examples: 100}
prompts:
  - name: support_router
    input_keys: [ticket]
    triggers: {min_examples: 50}
patterns:
  - match: "support_*"
    input_keys: [ticket]
    triggers: {cooldown: 5m}
  - match: "billing_??"
"""


def _file(text: str = FILE) -> PolicyFile:
    return PolicyFile.model_validate(yaml.safe_load(text))


def test_an_explicit_name_beats_a_pattern_beats_defaults_beats_the_built_in() -> None:
    policies = _file()
    listed, matched = policies.prompt("support_router"), policies.prompt("support_fr")
    assert listed is not None and matched is not None
    assert (listed.task_model, listed.triggers.min_examples, listed.triggers.cooldown.total_seconds()) == (
        "openai/gpt-4.1-mini",
        50,
        600,
    )
    assert (matched.name, matched.input_keys, matched.triggers.min_examples) == (
        "support_fr",
        ["ticket"],
        100,
    )
    assert matched.triggers.cooldown.total_seconds() == 300 and matched.window.max_examples == 500
    assert policies.prompt("billing_de") is not None and policies.prompt("billing_dev") is None
    assert policies.prompt("other") is None


def test_explain_names_the_source_of_every_setting() -> None:
    policy, sources = _file().explain("support_fr")  # type: ignore[misc]
    assert policy.name == "support_fr"
    assert sources["name"] == sources["input_keys"] == sources["triggers.cooldown"] == "patterns (support_*)"
    assert sources["task_model"] == sources["triggers.min_examples"] == "defaults"
    assert sources["window.max_examples"] == "built-in"
    _, listed = _file().explain("support_router")  # type: ignore[misc]
    assert (listed["triggers.min_examples"], listed["task_model"]) == ("prompts (support_router)", "defaults")
    assert _file().explain("nobody") is None


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("support_*", "*_fr", True),
        ("support_*", "billing_*", False),
        ("a?c", "a*", True),
        ("ab", "a?c", False),
        ("*x*", "*y*", True),
        ("a*b", "a*c", False),
        ("??", "a*", True),
        ("?", "ab*", False),
    ],
)
def test_two_globs_overlap_when_some_name_matches_both(a: str, b: str, overlap: bool) -> None:
    assert globs_overlap(a, b) is overlap and globs_overlap(b, a) is overlap


def test_overlapping_patterns_bad_settings_and_a_defaulted_name_are_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="'support_\\*' and '\\*_fr' can both match one name"):
        _file("patterns: [{match: 'support_*'}, {match: '*_fr'}]")
    with pytest.raises(
        ValidationError, match=r"patterns\[0\] \(support_\*\): triggers.cooldown: invalid duration"
    ):
        _file("patterns: [{match: 'support_*', triggers: {cooldown: soon}}]")
    with pytest.raises(ValidationError, match="defaults: `name` is not a default"):
        _file("defaults: {name: x}\nprompts: [{name: a}]")
    with pytest.raises(ValidationError, match="match"):
        _file("patterns: [{match: 'support_[ab]'}]")  # only * and ?
    with pytest.raises(ValidationError, match="triggers.min_examples"):
        _file("defaults: {triggers: {min_examples: many}}")


def test_the_book_resolves_a_matched_name_once_and_lists_what_it_knows() -> None:
    book = PolicyBook(_file())
    assert list(book) == ["support_router"]
    assert "support_de" in book and "nobody" not in book
    first: Any = book["support_de"]
    assert book["support_de"] is first and list(book) == ["support_router", "support_de"]
    with pytest.raises(KeyError):
        book["nobody"]
