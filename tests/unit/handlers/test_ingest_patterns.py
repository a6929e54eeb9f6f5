"""A prompt matched by a pattern is managed exactly like a listed one: its events fill a window
under the pattern's settings; a name no pattern matches is still unknown."""

from __future__ import annotations

import pytest

from handlers.ingest import Ingest, UnknownPrompt
from schemas.config import PolicyFile
from tests.unit.handlers.helpers import NOW, rating, trace


def test_a_matched_prompt_fills_its_window_under_the_patterns_settings() -> None:
    policies = PolicyFile.model_validate(
        {
            "defaults": {"window": {"max_examples": 50}},
            "patterns": [
                {
                    "match": "tenant_*",
                    "triggers": {"min_examples": 2, "min_new_examples": 2, "cooldown": "0s"},
                }
            ],
        }
    )
    ingest = Ingest(policies, "app")
    ingest.handle(trace("t1", prompt="tenant_acme"), NOW)
    ingest.handle(rating("t1", "good", prompt="tenant_acme"), NOW)
    ingest.handle(trace("t2", prompt="tenant_acme"), NOW)
    step = ingest.handle(rating("t2", "poor", prompt="tenant_acme"), NOW)
    assert ingest.figures("tenant_acme").n_examples == 2
    assert ingest.window("tenant_acme").policy.max_examples == 50
    assert step.request is not None and step.request.prompt == "tenant_acme"  # its trigger fired
    with pytest.raises(UnknownPrompt):
        ingest.handle(trace("t3", prompt="other"), NOW)


def test_a_reload_trims_windows_at_once_and_moves_thresholds_without_losing_state() -> None:
    listed = {
        "name": "p",
        "window": {"max_examples": 10},
        "triggers": {"min_examples": 9, "min_new_examples": 1, "cooldown": "0s"},
    }
    ingest = Ingest(PolicyFile.model_validate({"prompts": [listed]}), "app")
    for i in range(6):
        ingest.handle(trace(f"t{i}", t=i), NOW + i)
        ingest.handle(rating(f"t{i}", "good", t=i), NOW + i)
    assert ingest.figures("p").n_examples == 6
    smaller = {
        **listed,
        "window": {"max_examples": 4},
        "triggers": {"min_examples": 4, "min_new_examples": 1, "cooldown": "0s"},
    }
    ingest.reload(PolicyFile.model_validate({"prompts": [smaller], "patterns": [{"match": "q_*"}]}), NOW + 10)
    assert ingest.figures("p").n_examples == 4  # trimmed at once, the oldest first
    assert sorted(ingest.window("p").pending_deletes) != []  # their records go with the next event
    step = ingest.handle(trace("t9", t=20), NOW + 20)
    assert len(step.deletes) == 2
    assert step.request is not None  # the new min_examples (4) holds at the prompt's next event
    ingest.handle(trace("x1", prompt="q_new"), NOW + 21)  # a prompt the new file manages
    assert ingest.figures("q_new").n_examples == 0
