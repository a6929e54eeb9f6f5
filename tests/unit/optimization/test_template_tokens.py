"""Template length in tokens: litellm's bundled cl100k_base, no network."""

from __future__ import annotations

import os
import subprocess
import sys

from optimization.model_calls import template_tokens


def test_counts_cl100k_tokens() -> None:
    assert template_tokens("") == 0
    assert template_tokens("hello world") == 2
    assert template_tokens("Answer the ticket {{question}} politely.") == 8


def test_special_token_text_counts_as_plain_text() -> None:
    assert template_tokens("<|endoftext|>") > 1


def test_grows_with_appended_rules() -> None:
    base = "Route the ticket: {{query}}"
    longer = base + "\n- Rule: billing questions go to billing." * 10
    assert template_tokens(longer) > template_tokens(base) + 60


def test_needs_no_network() -> None:
    """The BPE file comes from litellm's package; a process with every proxy pointing nowhere (and
    tiktoken's own cache unset) still counts."""
    env = {
        **os.environ,
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    env.pop("TIKTOKEN_CACHE_DIR", None)
    env.pop("DATA_GYM_CACHE_DIR", None)
    code = "from optimization.model_calls import template_tokens; print(template_tokens('hello world'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
