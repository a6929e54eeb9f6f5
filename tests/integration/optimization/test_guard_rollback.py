"""The registry side of the live guard on a real sqlite MLflow store: a rollback naming the
version it expects does nothing once production moved on, a guard rollback tags the version,
and a job's gate never promotes a template the guard rolled back."""

from __future__ import annotations

from pathlib import Path

import mlflow

from daemon import prompt_versions
from daemon.jobs.commands import apply_command
from daemon.jobs.execute import ProgressFile, _gate_and_promote
from daemon.jobs.run_dir import RunDir
from daemon.jobs.spec import HeldOut, JobSpec, RegisteredVersion
from handlers.promotion import Outcome, blocked_twin
from schemas import CommandData
from schemas.config import PromotionPolicy, PromptPolicy
from schemas.events import PRODUCTION_ALIAS

REGRESSED = "Route {{ticket}}; a rule that was worse live."
POLICY = PromotionPolicy()


def _versions(name: str) -> None:
    for template in ("Route {{ticket}}.", REGRESSED):
        mlflow.genai.register_prompt(name=name, template=template)
    prompt_versions.ensure_production(name)  # the latest: version 2 ...
    mlflow.genai.set_prompt_alias(name, PRODUCTION_ALIAS, 1)  # ... back on 1, then promoted
    assert prompt_versions.move_production(name, 2) == 1


def test_guard_rollbacks_are_conditional_and_the_gate_never_brings_the_template_back(
    mlflow_store, tmp_path: Path
) -> None:
    """One store for both halves (creating an MLflow store is most of the cost)."""
    _versions("guarded")
    stale = CommandData(prompt="guarded", action="rollback", version=7, requested_by="guard", reason="stats")
    assert apply_command("guarded", stale, POLICY) is None
    assert prompt_versions.production("guarded").version == 2
    command = CommandData(
        prompt="guarded", action="rollback", version=2, requested_by="guard", reason="live guard: worse"
    )
    assert apply_command("guarded", command, POLICY) == Outcome(
        "rolled_back", "live guard: worse", "roll_back", 2, 1, block=True
    )
    assert prompt_versions.production("guarded").version == 1
    assert (
        prompt_versions.versions("guarded")[1].tags[prompt_versions.TAG_GUARD_ROLLBACK] == "live guard: worse"
    )
    assert apply_command("guarded", command, POLICY) is None  # replayed: production is no longer 2

    _versions("router")
    assert apply_command(
        "router",
        CommandData(prompt="router", action="rollback", version=2, requested_by="guard", reason="worse live"),
        POLICY,
    )
    twin = prompt_versions.register_candidate("router", REGRESSED, "req-3", {})
    other = prompt_versions.register_candidate("router", "Route {{ticket}} with a new rule.", "req-4", {})
    assert blocked_twin(prompt_versions.registry("router"), twin.version) == (2, "guard")
    assert blocked_twin(prompt_versions.registry("router"), other.version) is None
    spec = JobSpec(
        request_id="req-3",
        prompt="router",
        policy=PromptPolicy(name="router"),
        tracking_uri=mlflow.get_tracking_uri(),
        window_size=40,
    )
    better = HeldOut(baseline=[0.0] * 20, candidate=[1.0] * 20)
    registered = [RegisteredVersion(name="router", version=twin.version, uri=twin.uri, parent_version=1)]
    [decision] = _gate_and_promote(
        RunDir(tmp_path), spec, registered, better, None, ProgressFile(RunDir(tmp_path), "router", 1)
    )
    assert decision.decision == "rejected"
    assert "version 2, which the live guard rolled back" in decision.reason
    assert prompt_versions.production("router").version == 1
    spec = spec.model_copy(update={"request_id": "req-4"})
    registered = [RegisteredVersion(name="router", version=other.version, uri=other.uri, parent_version=1)]
    (tmp_path / "4").mkdir()
    [decision] = _gate_and_promote(
        RunDir(tmp_path / "4"), spec, registered, better, None, ProgressFile(RunDir(tmp_path), "router", 1)
    )
    assert decision.decision == "promoted"
    assert prompt_versions.production("router").version == other.version
