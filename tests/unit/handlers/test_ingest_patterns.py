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
