"""End to end, the gate's limits (issue 24): a verbose reflection model (`offline/reflector?notes=60`:
every rule it adds comes with a 60-word note) makes GEPA's candidates grow with every reflection.
`limits_choose` takes the path real users take: litellm model strings (`openai/support-router`,
`openai/reflector`) to the fake OpenAI-compatible provider, whose reflector is as verbose, so the
tokens behind its limits are the usage the provider reports; `limits_reject` runs the offline models.

- `limits_choose`, `max_template_tokens: 385`: GEPA's best (all four category rules and notes, ~430 tokens)
  is beyond the limit; the job registers the best candidate within it (fewer rules, shorter), which
  the gate promotes, and the promotion event says which candidate was chosen and why, with both
  versions' template tokens and tokens per call;
- `limits_reject`, `max_template_tokens: 100` and `max_cost_increase: 0.5`: no proposed candidate
  is within (one rule and its note is already ~130 tokens), so GEPA's best is registered and the
  gate rejects it, naming both limits and their figures.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from optimization.model_calls import template_tokens
from optimization.offline.datasets import SEED_ROUTER_PROMPT
from optimization.offline.provider import FakeProvider
from tests.daemon_harness import QUICK_JOIN_ENV, Daemon, produce, read_topic
from tests.e2e.loop_helpers import (
    register_seed,
    router_policy,
    sme_feed,
    validate_against_schemas,
    wait_for_events,
)

pytestmark = pytest.mark.e2e

NOTES = 60
VERBOSE = f"offline/reflector?notes={NOTES}"
CHOOSE, REJECT = "limits_choose", "limits_reject"


def _policy(name: str, limits: str, **models: str) -> str:
    entry = router_policy(name, calls=120, **models)
    assert "holdout_fraction: 0.35" in entry
    return entry.replace("holdout_fraction: 0.35", f"holdout_fraction: 0.35, {limits}")


@pytest.fixture
def verbose_provider() -> Iterator[FakeProvider]:
    with FakeProvider(reflector_notes=NOTES) as provider:
        yield provider


def test_the_longest_candidate_is_not_chosen_and_one_beyond_the_limits_is_rejected(
    kafka_bootstrap: str, tmp_path: Path, verbose_provider: FakeProvider
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "prompts:"
        + _policy(
            CHOOSE,
            "max_template_tokens: 385",
            task_model="openai/support-router",
            reflector="openai/reflector",
        )
        + _policy(REJECT, "max_template_tokens: 100, max_cost_increase: 0.5", reflector=f'"{VERBOSE}"')
    )
    env = {
        **QUICK_JOIN_ENV,
        "GEPA_STREAM_MAX_CONCURRENT_JOBS": "2",  # the two prompts' jobs side by side: the suite's time
        "OPENAI_BASE_URL": verbose_provider.base_url,
        "OPENAI_API_KEY": verbose_provider.api_key,
        "DSPY_CACHEDIR": str(tmp_path / "dspy-cache"),  # a shared disk cache would answer calls itself
    }
    daemon = Daemon(kafka_bootstrap, policy, tmp_path, env=env)
    tracking = daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"]
    for name in (CHOOSE, REJECT):
        register_seed(tracking, name)
    daemon.start()
    try:
        produce(kafka_bootstrap, sme_feed(daemon.topics, CHOOSE) + sme_feed(daemon.topics, REJECT))
        wait_for_events(
            daemon,
            daemon.topics.optimizations,
            lambda evs: sum(e.data.status in ("completed", "failed") for e in evs) >= 2,
        )
        promotions = wait_for_events(daemon, daemon.topics.promotions, lambda evs: len(evs) >= 2, timeout=60)
        by_prompt = {e.data.prompt: e.data for e in promotions}
        seed_tokens = template_tokens(SEED_ROUTER_PROMPT)

        chosen = by_prompt[CHOOSE]
        assert chosen.decision == "promoted", chosen.reason
        assert "; chose candidate " in chosen.reason
        assert "the best within max_template_tokens 385; GEPA's best (validation score" in chosen.reason
        assert chosen.baseline_cost is not None and chosen.candidate_cost is not None
        assert chosen.baseline_cost.template_tokens == seed_tokens
        assert seed_tokens < chosen.candidate_cost.template_tokens <= 385
        assert chosen.candidate_cost.calls == chosen.baseline_cost.calls == chosen.n_eval
        assert chosen.candidate_cost.tokens_per_call > chosen.baseline_cost.tokens_per_call > 0
        assert chosen.candidate_cost.cost_per_call_usd == 0.0 and chosen.candidate_cost.cost_unknown
        gepa_best = int(chosen.reason.rsplit(" has ", 1)[1].split(" tokens")[0])
        assert gepa_best > 385  # the longest, best candidate was left out

        mlflow.set_tracking_uri(tracking)
        registered = MlflowClient().get_prompt_version(CHOOSE, str(chosen.to_version))
        assert template_tokens(registered.template) == chosen.candidate_cost.template_tokens
        assert registered.template.count("Note: ") == 1  # the verbose reflector's repeated notes removed ...
        assert "repeated instruction line(s) before evaluation (" in chosen.reason  # ... and said so
        tags = registered.tags
        assert int(tags["gepa_stream.template_tokens"]) == chosen.candidate_cost.template_tokens
        assert int(tags["gepa_stream.baseline_template_tokens"]) == seed_tokens
        assert float(tags["gepa_stream.tokens_per_call"]) == pytest.approx(
            chosen.candidate_cost.tokens_per_call, abs=0.05
        )

        rejected = by_prompt[REJECT]
        assert rejected.decision == "rejected", rejected.reason
        assert rejected.reason.startswith("better beyond doubt but beyond the limit(s): template ")
        assert "tokens > max_template_tokens 100 (baseline " in rejected.reason
        assert "> max_cost_increase +50.0% (tokens per call " in rejected.reason
        assert (
            "none of the " in rejected.reason
            and "candidates GEPA proposed is within max_template_tokens 100" in rejected.reason
        )
        assert rejected.candidate_cost is not None and rejected.candidate_cost.template_tokens > 100

        validate_against_schemas(promotions)
        completed = {
            e.data.prompt: e.data
            for e in read_topic(kafka_bootstrap, daemon.topics.optimizations)
            if e.data.status == "completed"
        }
        assert set(completed) == {CHOOSE, REJECT}
        with urllib.request.urlopen(
            f"http://127.0.0.1:{daemon.port}/ui/api/decisions?prompt={CHOOSE}"
        ) as answer:
            [decision] = json.load(answer)["decisions"]
        assert decision["candidate_cost"]["template_tokens"] == chosen.candidate_cost.template_tokens
        status = daemon.status()["prompts"][CHOOSE]["trigger"]["last_gate"]
        assert status["candidate"]["template_tokens"] == chosen.candidate_cost.template_tokens
        assert status["baseline"]["template_tokens"] == seed_tokens
        served = verbose_provider.stats()["by_model"]  # limits_choose's calls went through litellm
        assert served["reflector"]["requests"] > 0 and served["support-router"]["requests"] >= (
            chosen.candidate_cost.calls + chosen.baseline_cost.calls
        )
    finally:
        daemon.stop()
