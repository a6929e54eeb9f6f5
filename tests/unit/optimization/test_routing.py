"""The router's pure parts: the stable key hash, the share split, stickiness as the share grows, and
reading the share tag (no registry here; `tests/integration/optimization/test_routing.py` has it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mlflow.entities.model_registry import PromptVersion

from optimization.routing import Route, RoutingTable, bucket, parse_share
from schemas.events import CANARY_ALIAS, PRODUCTION_ALIAS, TRAFFIC_SHARE_TAG
from schemas.third_parties import quiet_third_parties

ROOT = Path(__file__).resolve().parents[3]
KEYS = [f"user-{i}" for i in range(10_000)]
V1 = PromptVersion("support_router", 1, "Route: {{ticket}}")
V2 = PromptVersion("support_router", 2, "Route this ticket: {{ticket}}", tags={TRAFFIC_SHARE_TAG: "0.25"})


def table(share: float) -> RoutingTable:
    return RoutingTable("support_router", V1, V2, share)


def canary_keys(share: float, keys: list[str] = KEYS) -> set[str]:
    routes = {key: table(share).route(key) for key in keys}
    return {key for key, route in routes.items() if route.alias == CANARY_ALIAS}


def test_bucket_is_in_unit_interval_and_the_same_in_another_process() -> None:
    values = [bucket("support_router", key) for key in KEYS[:200]]
    assert all(0.0 <= value < 1.0 for value in values)
    # a fresh interpreter has another hash seed: the builtin `hash` would differ there, blake2b does not
    code = "from optimization.routing import bucket; print([bucket('support_router', f'user-{i}') for i in range(200)])"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"}
    quiet_third_parties(env)
    other = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    assert other.returncode == 0, other.stderr[-2000:]
    assert eval(other.stdout) == values  # noqa: S307 (a list of floats we printed)


def test_bucket_depends_on_the_prompt_name() -> None:
    """Two prompts' canaries do not pick the same users (the name is hashed with the key)."""
    same = sum(bucket("a", key) < 0.25 and bucket("b", key) < 0.25 for key in KEYS)
    assert abs(same / len(KEYS) - 0.25 * 0.25) < 0.02


@pytest.mark.parametrize("share", [0.05, 0.25, 0.5, 0.9])
def test_the_share_split_is_within_tolerance_over_10000_keys(share: float) -> None:
    fraction = len(canary_keys(share)) / len(KEYS)
    # binomial sd at n=10,000 is at most 0.005: 4 sd
    assert abs(fraction - share) < 0.02


def test_a_key_keeps_its_arm_on_every_call() -> None:
    first = [table(0.25).route(key) for key in KEYS[:1000]]
    again = [table(0.25).route(key) for key in KEYS[:1000]]
    assert first == again


def test_a_growing_share_only_moves_keys_onto_the_canary() -> None:
    stages = [canary_keys(share) for share in (0.05, 0.25, 0.5)]
    assert stages[0] <= stages[1] <= stages[2]
    assert len(stages[0]) < len(stages[1]) < len(stages[2])


@given(
    key=st.text(max_size=40),
    low=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    high=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_monotone_share_for_any_key(key: str, low: float, high: float) -> None:
    """On the canary at a share means on the canary at every larger share."""
    low, high = sorted((low, high))
    if table(low).route(key).alias == CANARY_ALIAS:
        assert table(high).route(key).alias == CANARY_ALIAS


def test_routes_carry_the_version_and_its_template() -> None:
    routes = {table(0.5).route(key).alias: table(0.5).route(key) for key in KEYS[:100]}
    assert routes[PRODUCTION_ALIAS] == Route(PRODUCTION_ALIAS, 1, V1)
    assert routes[CANARY_ALIAS].version == 2
    assert routes[CANARY_ALIAS].format(ticket="my app crashes") == "Route this ticket: my app crashes"


def test_no_canary_sends_everything_to_production() -> None:
    plain = RoutingTable("support_router", V1)
    assert {plain.route(key).version for key in KEYS} == {1}


@pytest.mark.parametrize(
    ("value", "share"),
    [("0.05", 0.05), ("0.25", 0.25), (" 0.5 ", 0.5), ("0.999", 0.999)],
)
def test_a_share_in_the_open_unit_interval_is_read(value: str, share: float) -> None:
    assert parse_share(value) == (share, None)


@pytest.mark.parametrize("value", [None, "", "five percent", "0", "1", "1.0", "-0.1", "1.5", "nan", "inf"])
def test_a_missing_invalid_or_out_of_range_share_is_no_canary(value: str | None) -> None:
    share, problem = parse_share(value)
    assert share == 0.0 and problem is not None and TRAFFIC_SHARE_TAG in problem
