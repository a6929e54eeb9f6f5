"""The promotion rules (handlers/promotion.py): what a passing candidate and each command decide,
and which registry change they need, on registry states built by hand."""

from __future__ import annotations

from handlers.promotion import Outcome, Registry, gate, judge_candidate, judge_command, segment_scores
from optimization.comparison import Comparison
from schemas.config import PromotionPolicy, RolloutPolicy, SegmentPolicy
from schemas.events import CommandAction, CommandData

AUTO = PromotionPolicy()
MANUAL = PromotionPolicy(mode="manual")
ROLLOUT = PromotionPolicy(rollout=RolloutPolicy(enabled=True, stages=[0.05, 0.25, 0.5]))
TEMPLATES = {1: "a", 2: "b", 3: "b", 4: "c"}


def passed(decision: str = "promoted") -> Comparison:
    return Comparison(decision, 30, 0.5, 0.8, 0.3, 0.6, 0.1, 0.5, 0.95, "better")  # type: ignore[arg-type]


def command(action: CommandAction, **fields: object) -> CommandData:
    return CommandData(prompt="p", action=action, **fields)  # type: ignore[arg-type]


def test_a_passing_candidate_takes_production_in_auto_mode() -> None:
    outcome = judge_candidate(passed(), AUTO, Registry(production=1, templates=TEMPLATES), 4, 1)
    assert outcome == Outcome("promoted", "better", "move_production", 1, 4)


def test_a_failing_candidate_changes_nothing() -> None:
    for verdict in ("rejected", "inconclusive"):
        outcome = judge_candidate(passed(verdict), AUTO, Registry(production=1), 4, 1)
        assert (outcome.decision, outcome.change) == (verdict, "none")


def test_manual_mode_waits_for_approval() -> None:
    outcome = judge_candidate(passed(), MANUAL, Registry(production=1, templates=TEMPLATES), 4, 1)
    assert (outcome.decision, outcome.change) == ("awaiting_approval", "await_approval")


def test_a_template_a_watch_took_out_is_rejected_whoever_blocked_it() -> None:
    for watcher, words in (("guard", "the live guard rolled back"), ("rollout", "a canary rollout aborted")):
        registry = Registry(production=1, blocked={2: watcher}, templates=TEMPLATES)
        outcome = judge_candidate(passed(), AUTO, registry, 3, 1)
        assert (outcome.decision, outcome.change) == ("rejected", "none")
        assert f"version 2, which {words}" in outcome.reason


def test_with_a_rollout_a_passing_candidate_becomes_the_canary_at_the_first_share() -> None:
    outcome = judge_candidate(passed(), ROLLOUT, Registry(production=1, templates=TEMPLATES), 4, 1)
    assert (outcome.decision, outcome.change, outcome.traffic_share) == (
        "canary_started",
        "start_canary",
        0.05,
    )
    replacing = judge_candidate(
        passed(), ROLLOUT, Registry(production=1, canary=2, share=0.25, templates=TEMPLATES), 4, 1
    )
    assert "replaces the canary version 2" in replacing.reason


def test_approve_promotes_the_newest_waiting_version_or_starts_its_canary() -> None:
    registry = Registry(production=1, awaiting=(2, 4))
    assert judge_command(command("approve"), MANUAL, registry) == Outcome(
        "promoted", "approved", "move_production", 1, 4
    )
    assert judge_command(command("approve", version=2), ROLLOUT, registry).change == "start_canary"  # type: ignore[union-attr]
    assert judge_command(command("approve", version=3), MANUAL, registry) is None
    assert judge_command(command("reject"), MANUAL, registry) == Outcome(
        "rejected", "rejected by an operator", "clear_awaiting", None, 4
    )


def test_a_rollback_happens_only_while_production_is_the_version_named() -> None:
    registry = Registry(production=4, previous=1)
    stale = command("rollback", version=2, requested_by="guard")
    assert judge_command(stale, AUTO, registry) is None
    guard = judge_command(
        command("rollback", version=4, requested_by="guard", reason="worse"), AUTO, registry
    )
    assert guard == Outcome("rolled_back", "worse", "roll_back", 4, 1, block=True)
    person = judge_command(command("rollback", requested_by="alice"), AUTO, registry)
    assert person is not None and not person.block
    assert judge_command(command("rollback"), AUTO, Registry(production=1)) is None


def test_the_canary_advances_stage_by_stage_then_takes_production() -> None:
    at = {share: Registry(production=1, canary=4, share=share) for share in (0.05, 0.25, 0.5)}
    first = judge_command(command("canary_advance"), ROLLOUT, at[0.05])
    assert first == Outcome("canary_advanced", first.reason, "set_share", 1, 4, traffic_share=0.25)  # type: ignore[union-attr]
    assert judge_command(command("canary_advance"), ROLLOUT, at[0.25]).traffic_share == 0.5  # type: ignore[union-attr]
    last = judge_command(command("canary_advance"), ROLLOUT, at[0.5])
    assert last is not None and (last.decision, last.change, last.to_version) == (
        "promoted",
        "promote_canary",
        4,
    )


def test_a_canary_command_for_another_version_or_share_does_nothing() -> None:
    registry = Registry(production=1, canary=4, share=0.25)
    for stale in (
        command("canary_advance", version=3),
        command("canary_advance", traffic_share=0.05, requested_by="rollout"),
        command("canary_abort", version=2),
    ):
        assert judge_command(stale, ROLLOUT, registry) is None
    assert judge_command(command("canary_abort"), ROLLOUT, Registry(production=1)) is None


def test_an_abort_sends_traffic_back_and_blocks_the_template_only_when_the_watch_decided() -> None:
    registry = Registry(production=1, canary=4, share=0.25)
    watch = judge_command(
        command("canary_abort", version=4, traffic_share=0.25, requested_by="rollout", reason="worse"),
        ROLLOUT,
        registry,
    )
    assert watch == Outcome("canary_aborted", "worse", "abort_canary", 4, 1, traffic_share=0.25, block=True)
    person = judge_command(command("canary_abort", requested_by="alice"), ROLLOUT, registry)
    assert person is not None and not person.block


def test_the_gate_applies_the_segment_rule_only_when_the_policy_names_one() -> None:
    baseline = [1.0] * 70 + [0.0] * 30 + [1.0] * 70 + [0.0] * 30
    candidate = [0.0] * 30 + [1.0] * 40 + [0.0] * 30 + [1.0] * 100  # `de` loses 30 points, `en` gains 30
    labels = ["de"] * 100 + ["en"] * 100
    segmented = PromotionPolicy(segments=SegmentPolicy(by="attributes.language"), min_improvement=0.0)
    assert gate(baseline, candidate, PromotionPolicy(min_improvement=0.0), segments=labels).segments == ()
    judged = gate(baseline, candidate, segmented, segments=labels)
    [de] = [s for s in segment_scores(judged) if s.harmed]
    assert (de.segment, de.n, de.difference) == ("de", 100, -0.3)
