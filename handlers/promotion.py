"""Every promotion rule and every promotion event, in one room (docs/architecture.md, step 9).

The rules are pure: they read what the daemon read of the registry (`Registry`) and say what
to decide and which registry change it needs (`Outcome`); `daemon.prompt_versions.apply`
makes the change, then the daemon announces `promotion_event(...)` (register before promote,
change the registry before announcing). The rules:

- the gate: the paired held-out comparison under the prompt's promotion policy (`gate`);
- a passing candidate (`judge_candidate`): a template the live guard rolled back or a canary
  aborted is rejected; manual mode waits for approval; with a rollout it becomes the canary at
  the first stage's share; else it takes `production`;
- an operator's or a watcher's command (`judge_command`): approve / reject a version awaiting
  approval, roll `production` back, advance or abort the canary. A command that names a version
  (or a canary share) no longer current does nothing, so stale and replayed commands are safe.

Consumers (deployers, the ops page, the live guard and the rollout watch) read promotion events
as one kind of fact, so `promotion_event` is the one function that fills them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from schemas.config import PromotionPolicy
from schemas.events import (
    CommandData,
    PromotionData,
    PromotionDecision,
    PromotionEvent,
    SegmentScore,
    VersionCost,
)

if TYPE_CHECKING:  # at run time `gate` imports it: scipy.stats is ~64 MB, and an ingest worker never gates
    from optimization.comparison import Comparison

WATCHERS = ("guard", "rollout")
"""`requested_by` of the commands the daemon's own live watches send: their verdicts block the
version's template from promotion (a person's rollback or abort does not)."""

Change = Literal[
    "none",  # the decision leaves the registry as it is (rejected, inconclusive)
    "move_production",  # `production` -> to_version (remembering the version it replaces)
    "await_approval",  # tag to_version as awaiting an `approve` command
    "clear_awaiting",  # a rejected approval: the tag goes
    "roll_back",  # `production` from from_version back to to_version
    "start_canary",  # share tag on to_version, then the `canary` alias on it
    "set_share",  # the canary's share tag -> traffic_share
    "promote_canary",  # `production` -> the canary, `canary` alias and its share removed
    "abort_canary",  # `canary` alias and share removed, production untouched
]


@dataclass(frozen=True, slots=True)
class Registry:
    """What the rules read of one prompt name's registry: versions by number."""

    production: int | None = None
    previous: int | None = None  # the version production replaced (what a rollback returns to)
    awaiting: tuple[int, ...] = ()  # versions awaiting approval, oldest first
    canary: int | None = None
    share: float | None = None  # the canary's traffic share
    blocked: dict[int, str] = field(default_factory=dict)  # version -> the watcher that took it out
    templates: dict[int, str] = field(default_factory=dict)  # version -> template (for twins)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision on one prompt name and the registry change it needs."""

    decision: PromotionDecision
    reason: str
    change: Change
    from_version: int | None = None
    to_version: int | None = None
    traffic_share: float | None = None
    block: bool = False  # tag the version leaving traffic as blocked (a watcher's verdict)


def gate(
    baseline: Sequence[float],
    candidate: Sequence[float],
    policy: PromotionPolicy,
    seed: int = 0,
    segments: Sequence[str | None] | None = None,
    baseline_cost: VersionCost | None = None,
    candidate_cost: VersionCost | None = None,
) -> Comparison:
    """The paired comparison's promoted / rejected / inconclusive with the statistics behind it
    (deterministic per seed); with the policy's `segments` and a label per example, no segment
    may be worse beyond doubt; with both versions' costs, the candidate stays within the policy's
    `max_template_tokens` and `max_cost_increase`."""
    from optimization.comparison import compare_paired

    rule = policy.segments
    by_segment: dict[str, Any] = (
        {}
        if rule is None or segments is None
        else {
            "segments": segments,
            "segment_min_examples": rule.min_examples,
            "max_segments": rule.max_segments,
        }
    )
    return compare_paired(
        baseline,
        candidate,
        min_improvement=policy.min_improvement,
        confidence=policy.confidence,
        min_eval_examples=policy.min_eval_examples,
        seed=seed,
        baseline_cost=baseline_cost,
        candidate_cost=candidate_cost,
        max_template_tokens=policy.max_template_tokens,
        max_cost_increase=policy.max_cost_increase,
        **by_segment,
    )


def segment_scores(comparison: Comparison) -> list[SegmentScore]:
    """The gate's per-segment results as the promotion event carries them."""
    return [
        SegmentScore(
            segment=r.segment,
            n=r.n,
            baseline_score=r.baseline_score,
            candidate_score=r.candidate_score,
            difference=r.mean_difference,
            upper=r.upper,
            harmed=r.harmed,
        )
        for r in comparison.segments
    ]


def blocked_twin(registry: Registry, version: int) -> tuple[int, str] | None:
    """Another version with this version's template that a live watch took out of traffic, and
    why: promoting this one would bring the regression straight back."""
    template = registry.templates.get(version)
    return next(
        (
            (other, why)
            for other, why in sorted(registry.blocked.items())
            if other != version and registry.templates.get(other) == template
        ),
        None,
    )


def judge_candidate(
    comparison: Comparison, policy: PromotionPolicy, registry: Registry, version: int, parent: int | None
) -> Outcome:
    """1. the gate's verdict; 2. a passing candidate whose template is blocked is rejected;
    3. manual mode waits for approval; 4. a rollout starts the canary; 5. else production moves."""
    if comparison.decision != "promoted":
        return Outcome(comparison.decision, comparison.reason, "none", parent, version)
    twin = blocked_twin(registry, version)
    if twin is not None:
        reason = f"the same template as version {twin[0]}, which {_blocked_by(twin[1])}; {comparison.reason}"
        return Outcome("rejected", reason, "none", parent, version)
    if policy.mode == "manual":
        return Outcome("awaiting_approval", comparison.reason, "await_approval", parent, version)
    return _promote(policy, registry, version, comparison.reason)


def _promote(policy: PromotionPolicy, registry: Registry, version: int, reason: str) -> Outcome:
    """Production moves to `version`, or with a rollout the canary starts (replacing a running
    one: the newer candidate passed the gate against production on fresher data)."""
    production = registry.production
    if not policy.rollout.enabled:
        return Outcome("promoted", reason, "move_production", production, version)
    share = policy.rollout.stages[0]
    if registry.canary is not None and registry.canary != version:
        reason = f"{reason}; replaces the canary version {registry.canary}"
    return Outcome(
        "canary_started",
        f"{reason}; canary at {share:.0%} of traffic",
        "start_canary",
        production,
        version,
        traffic_share=share,
    )


def _blocked_by(watcher: str) -> str:
    return "a canary rollout aborted" if watcher == "rollout" else "the live guard rolled back"


def judge_command(command: CommandData, policy: PromotionPolicy, registry: Registry) -> Outcome | None:
    """The outcome of a command on one prompt name, or None when there is nothing to do (no version
    awaiting approval, production or the canary no longer the version or share it names)."""
    action, version, reason = command.action, command.version, command.reason
    by_watcher = command.requested_by in WATCHERS
    if action == "rollback":
        if registry.production is None or registry.previous is None:
            return None
        if version is not None and version != registry.production:
            return None
        why = reason or f"production rolled back from {registry.production} to {registry.previous}"
        return Outcome(
            "rolled_back", why, "roll_back", registry.production, registry.previous, block=by_watcher
        )
    if action in ("canary_advance", "canary_abort"):
        return _judge_canary(command, policy, registry)
    waiting = [v for v in registry.awaiting if version is None or v == version]
    if not waiting:
        return None
    target = waiting[-1]
    if action == "approve":
        return _promote(policy, registry, target, "approved")
    return Outcome("rejected", "rejected by an operator", "clear_awaiting", None, target)


def _judge_canary(command: CommandData, policy: PromotionPolicy, registry: Registry) -> Outcome | None:
    """Advance to the next stage's share (after the last: promote), or abort; only while the
    canary is the version, and at the share, the command names."""
    canary, share = registry.canary, registry.share
    if canary is None or share is None:
        return None
    if (command.version is not None and command.version != canary) or (
        command.traffic_share is not None and command.traffic_share != share
    ):
        return None
    if command.action == "canary_abort":
        why = command.reason or f"canary version {canary} aborted at {share:.0%} of traffic"
        return Outcome(
            "canary_aborted",
            why,
            "abort_canary",
            canary,
            registry.production,
            traffic_share=share,
            block=command.requested_by in WATCHERS,
        )
    later = [stage for stage in policy.rollout.stages if stage > share]
    why = command.reason or f"canary version {canary} advanced from {share:.0%} of traffic"
    if later:
        return Outcome(
            "canary_advanced", why, "set_share", registry.production, canary, traffic_share=later[0]
        )
    return Outcome("promoted", why, "promote_canary", registry.production, canary, traffic_share=1.0)


def promotion_event(
    prompt: str,
    decision: PromotionDecision,
    reason: str,
    *,
    source: str,
    event_id: str | None = None,
    from_version: int | None = None,
    to_version: int | None = None,
    baseline_score: float | None = None,
    candidate_score: float | None = None,
    improvement: float | None = None,
    ci_low: float | None = None,
    ci_high: float | None = None,
    n_eval: int | None = None,
    request_id: str | None = None,
    traffic_share: float | None = None,
    segments: list[SegmentScore] | None = None,
    baseline_cost: VersionCost | None = None,
    candidate_cost: VersionCost | None = None,
) -> PromotionEvent:
    """The `gepa.promotion.v1` event of one decision on `prompt` (a fresh id unless `event_id`:
    every decision the daemon announces has a deterministic one, see `schemas/event_ids.py`)."""
    return PromotionEvent.build(
        PromotionData(
            prompt=prompt,
            decision=decision,
            from_version=from_version,
            to_version=to_version,
            baseline_score=baseline_score,
            candidate_score=candidate_score,
            improvement=improvement,
            ci_low=ci_low,
            ci_high=ci_high,
            n_eval=n_eval,
            request_id=request_id,
            traffic_share=traffic_share,
            segments=segments or [],
            baseline_cost=baseline_cost,
            candidate_cost=candidate_cost,
            reason=reason,
        ),
        id=event_id,
        source=source,
    )
