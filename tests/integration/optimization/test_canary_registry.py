"""The registry side of a staged rollout on a real sqlite MLflow store: the rules' changes move
the `canary` alias and its share tag, promote it, and an abort leaves production untouched and
blocks the template."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from daemon import prompt_versions
from daemon.jobs.commands import apply_command
from handlers.promotion import blocked_twin, judge_candidate
from optimization.comparison import Comparison
from schemas import CommandData
from schemas.config import PromotionPolicy, RolloutPolicy
from schemas.events import CANARY_ALIAS, TRAFFIC_SHARE_TAG

POLICY = PromotionPolicy(rollout=RolloutPolicy(enabled=True, stages=[0.1, 0.5]))
PASSED = Comparison("promoted", 30, 0.5, 0.8, 0.3, 0.6, 0.1, 0.5, 0.95, "better")


def _start(name: str, template: str) -> int:
    """A candidate registered and passed by the gate: it becomes the canary."""
    version = prompt_versions.register_candidate(name, template, f"req-{template}", {}).version
    registry = prompt_versions.registry(name)
    prompt_versions.apply(name, judge_candidate(PASSED, POLICY, registry, version, registry.production))
    return version


def test_a_canary_walks_its_stages_into_production_and_an_aborted_one_is_blocked(mlflow_store) -> None:
    mlflow.genai.register_prompt(name="staged", template="Route {{ticket}}.")
    prompt_versions.ensure_production("staged")
    assert _start("staged", "Route {{ticket}} better.") == 2
    state = prompt_versions.registry("staged")
    assert (state.production, state.canary, state.share) == (1, 2, 0.1)
    assert MlflowClient().get_prompt_version("staged", "2").tags[TRAFFIC_SHARE_TAG] == "0.1"

    advance = CommandData(
        prompt="staged", action="canary_advance", version=2, traffic_share=0.1, requested_by="rollout"
    )
    assert apply_command("staged", advance, POLICY).traffic_share == 0.5  # type: ignore[union-attr]
    assert apply_command("staged", advance, POLICY) is None  # replayed: the share moved on
    assert prompt_versions.registry("staged").share == 0.5
    promoted = apply_command("staged", CommandData(prompt="staged", action="canary_advance"), POLICY)
    assert promoted is not None and promoted.decision == "promoted"
    state = prompt_versions.registry("staged")
    assert (state.production, state.previous, state.canary, state.share) == (2, 1, None, None)
    assert TRAFFIC_SHARE_TAG not in MlflowClient().get_prompt_version("staged", "2").tags

    assert _start("staged", "Route {{ticket}} worse.") == 3
    abort = CommandData(
        prompt="staged", action="canary_abort", version=3, requested_by="rollout", reason="worse live"
    )
    aborted = apply_command("staged", abort, POLICY)
    assert aborted is not None and (aborted.decision, aborted.from_version, aborted.to_version) == (
        "canary_aborted",
        3,
        2,
    )
    state = prompt_versions.registry("staged")
    assert (state.production, state.canary, state.blocked) == (2, None, {3: "rollout"})
    with pytest.raises(MlflowException):  # the alias is gone, not only ignored
        MlflowClient().get_prompt_version_by_alias("staged", CANARY_ALIAS)
    twin = prompt_versions.register_candidate("staged", "Route {{ticket}} worse.", "req-twin", {}).version
    assert blocked_twin(prompt_versions.registry("staged"), twin) == (3, "rollout")
