"""The live watches of a prompt, fed by its rated traces (docs/architecture.md, flow steps 12-14):
the guard after a cutover (handlers/guard.py) and the staged rollout of a canary
(handlers/rollout.py). Each keeps a spec and its vote facts in the daemon's tables, one pair of
tables per kind; a verdict is announced as a promotion event, or sent to the optimizer role as
a command (the guard's rollback, the rollout's advance or abort) that changes the registry and
announces the outcome, which the watch then follows.

A watch starts on the promotion event that moved traffic (`promoted` starts the guard unless
it ends a rollout, `canary_started` a rollout), replacing an older one of its kind, and ends
on the event that moved traffic away (`rolled_back`; `promoted` or `canary_aborted` of its
canary). After a full rollout no guard starts: the rollout compared the versions on the same
traffic already, and the guard's comparison with the earlier window would blame the new version
for any drift since.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from handlers.facts import TraceFact
from handlers.guard import GuardSpec, PromptGuard, Vote, VoteBook, decide, describe
from handlers.promotion import promotion_event
from handlers.rollout import RULE, Rollout, RolloutSpec, look
from handlers.rollout import apply as follow_rollout
from handlers.rollout import status as rollout_status
from handlers.stored_json import stored_json
from handlers.trigger import TriggerState
from handlers.window import PromptWindow
from schemas import event_ids
from schemas.config import PromotionPolicy
from schemas.events import CommandData, CommandEvent, PromotionEvent

GUARD_SOURCE = "gepa-stream/guard"
ROLLOUT_SOURCE = "gepa-stream/rollout"
WatchKind = Literal["guard", "rollout"]


@dataclass(slots=True)
class WatchStep:
    """What a watch changed: its spec, its vote facts, and the events its verdict emits (a
    promotion event, or a command for the optimizer role)."""

    kind: WatchKind
    prompt: str
    spec: GuardSpec | RolloutSpec
    puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    deletes: list[bytes] = field(default_factory=list)
    events: list[PromotionEvent | CommandEvent] = field(default_factory=list)


@dataclass(slots=True)
class WatchChanges:
    """The steps of one event: at most one per kind, and whether the trigger state changed."""

    guard: WatchStep | None = None
    rollout: WatchStep | None = None
    rearmed: bool = False  # the trigger's baseline moved to the version back in production


def vote_key(prompt: str, trace_id: str, rater: str) -> bytes:
    """A vote table's key: one rating identity (rated trace + rater) of one prompt."""
    return stored_json((prompt, trace_id, rater))


def _merge_votes(
    book: VoteBook[Any], prompt: str, trace_id: str, version: int, window: PromptWindow
) -> list[tuple[bytes, bytes]]:
    """The ratings of one trace in the window as votes of `version`; the changed ones' writes."""
    puts = []
    for rater, rating in window.ratings.get(trace_id, {}).items():
        vote = Vote(trace_id, rater, version, rating.score)
        if book.add(vote):
            puts.append((vote_key(prompt, trace_id, rater), vote.encode()))
    return puts


def _replacing(
    kind: WatchKind,
    prompt: str,
    book: VoteBook[Any],
    replaced: VoteBook[Any] | None,
    window: PromptWindow,
    watched: Callable[[TraceFact], bool],
) -> WatchStep:
    """A new watch's first step: the replaced one's votes deleted, the window's rated traces it
    watches merged as its votes."""
    step = WatchStep(kind, prompt, book.spec)
    if replaced is not None:
        step.deletes = [vote_key(prompt, *key) for key in replaced.votes]
    for trace_id, trace in window.traces.items():
        if trace.prompt_version is not None and watched(trace):
            step.puts += _merge_votes(book, prompt, trace_id, trace.prompt_version, window)
    return step


class Watches:
    """The guards and rollouts of the prompts this worker owns."""

    def __init__(self) -> None:
        self.guards: dict[str, PromptGuard] = {}
        self.rollouts: dict[str, Rollout] = {}

    # -- recovery ------------------------------------------------------------------------

    def reset(self) -> None:
        self.guards.clear()
        self.rollouts.clear()

    def restore(self, kind: WatchKind, prompt: str, raw: bytes) -> None:
        """One stored spec back (before its votes)."""
        if kind == "guard":
            self.guards[prompt] = PromptGuard(GuardSpec.decode(raw))
        else:
            self.rollouts[prompt] = Rollout(RolloutSpec.decode(raw))

    def restore_vote(self, kind: WatchKind, key: bytes, raw: bytes) -> None:
        """One stored vote back into its watch (specs are restored first)."""
        book = (self.guards if kind == "guard" else self.rollouts).get(orjson.loads(key)[0])
        if book is not None:
            book.add(Vote.decode(raw))

    @contextmanager
    def transaction(self, prompt: str) -> Iterator[None]:
        """All or nothing for the prompt's watches: votes, specs, and which watch is current."""
        guard, rollout = self.guards.get(prompt), self.rollouts.get(prompt)
        with ExitStack() as stack:
            for book in (guard, rollout):
                if book is not None:
                    stack.enter_context(book.transaction())
            try:
                yield
            except BaseException:
                for books, book in ((self.guards, guard), (self.rollouts, rollout)):
                    if book is None:
                        books.pop(prompt, None)
                    else:
                        books[prompt] = book  # type: ignore[assignment]
                raise

    # -- events --------------------------------------------------------------------------

    def on_promotion(
        self,
        prompt: str,
        event: PromotionEvent,
        policy: PromotionPolicy,
        window: PromptWindow,
        trigger: TriggerState,
        now: float,
    ) -> WatchChanges:
        """Start, follow or end the prompt's watches on a promotion event (module docstring)."""
        data, changes = event.data, WatchChanges()
        rollout = self.rollouts.get(prompt)
        ends_rollout = (
            rollout is not None and rollout.watching and data.to_version == rollout.spec.canary_version
        )
        if data.decision == "canary_started":
            changes.rollout = self._start_rollout(prompt, event, policy, window, now)
        elif data.decision in ("canary_advanced", "promoted") and ends_rollout and rollout is not None:
            if follow_rollout(rollout, data.decision, data.traffic_share, data.reason, now):
                changes.rollout = WatchStep("rollout", prompt, rollout.spec)
        elif data.decision == "canary_aborted" and rollout is not None and rollout.watching:
            if data.from_version == rollout.spec.canary_version:
                follow_rollout(rollout, data.decision, None, data.reason, now)
                changes.rollout = WatchStep("rollout", prompt, rollout.spec)
                trigger.baseline_score = rollout.interval(policy.rollout.confidence).mean_old
                changes.rearmed = True
        elif data.decision == "promoted" and data.to_version is not None:
            changes.guard = self._start_guard(prompt, event, policy, window, now)
        elif data.decision == "rolled_back":
            changes.guard, changes.rearmed = self._end_guard(prompt, event, policy, trigger, now)
        return changes

    def on_rated_trace(
        self, prompt: str, trace_id: str, policy: PromotionPolicy, window: PromptWindow, now: float
    ) -> WatchChanges:
        """A rated trace of a watched version: record its votes, then let each watch decide (also
        once the guard's watch or the rollout's stage has outlived its time)."""
        trace = window.traces.get(trace_id)
        version = trace.prompt_version if trace is not None else None
        changes = WatchChanges()
        guard = self.guards.get(prompt)
        if guard is not None and guard.watching:
            step = WatchStep("guard", prompt, guard.spec)
            if guard.watches(version) and version is not None:
                step.puts = _merge_votes(guard, prompt, trace_id, version, window)
            expired = now - guard.spec.promoted_at >= policy.guard.max_watch.duration.total_seconds()
            if step.puts or expired:
                self._decide_guard(prompt, guard, policy, step, now)
                changes.guard = step
        rollout = self.rollouts.get(prompt)
        if rollout is not None and rollout.watching:
            step = WatchStep("rollout", prompt, rollout.spec)
            if trace is not None and version is not None and rollout.watches(version, trace.time):
                step.puts = _merge_votes(rollout, prompt, trace_id, version, window)
            if self._look_rollout(prompt, rollout, policy, step, now) or step.puts:
                changes.rollout = step
        return changes

    # -- the guard -----------------------------------------------------------------------

    def _start_guard(
        self, prompt: str, event: PromotionEvent, policy: PromotionPolicy, window: PromptWindow, now: float
    ) -> WatchStep | None:
        """1. ignore a replay, an older promotion, or the same promotion announced once per
        dspy predictor; 2. drop the replaced guard's votes; 3. take the replaced version's
        rated traces in the window as its reference; 4. decide at once (usually: watch)."""
        data = event.data
        current = self.guards.get(prompt)
        promoted_at = event.time.timestamp()
        if not policy.guard.enabled or data.to_version is None:
            return None
        if current is not None:
            same_versions = (current.spec.new_version, current.spec.old_version) == (
                data.to_version,
                data.from_version,
            )
            if (
                current.spec.promotion_id == event.id
                or promoted_at < current.spec.promoted_at
                or (same_versions and current.watching)
            ):
                return None
        guard = PromptGuard(GuardSpec(event.id, promoted_at, data.to_version, data.from_version, policy.mode))
        step = _replacing(
            "guard", prompt, guard, current, window, lambda trace: guard.watches(trace.prompt_version)
        )
        self.guards[prompt] = guard
        self._decide_guard(prompt, guard, policy, step, now)
        return step

    def _end_guard(
        self, prompt: str, event: PromotionEvent, policy: PromotionPolicy, trigger: TriggerState, now: float
    ) -> tuple[WatchStep | None, bool]:
        """Production left the watched version: the guard ends (its own rollback, or a person's)
        and the triggers are re-armed against the version now in production."""
        guard = self.guards.get(prompt)
        if guard is None or guard.spec.decision not in (None, "rolled_back", "regression_suspected"):
            return None, False
        if event.data.from_version != guard.spec.new_version:
            return None, False
        trigger.baseline_score = guard.interval(policy.guard.confidence).mean_old
        if guard.spec.decision == "rolled_back":
            return None, True
        guard.spec.decision, guard.spec.decided_at, guard.spec.reason = "rolled_back", now, event.data.reason
        return WatchStep("guard", prompt, guard.spec), True

    def _decide_guard(
        self, prompt: str, guard: PromptGuard, policy: PromotionPolicy, step: WatchStep, now: float
    ) -> None:
        """Apply the guard's policy; a decision ends the watch and is announced (in auto mode a
        rollback is a command: the optimizer role moves the alias, then announces it)."""
        interval = guard.interval(policy.guard.confidence)
        spec = guard.spec
        decision = decide(interval, policy.guard, spec.mode, now - spec.promoted_at)
        if decision is None:
            return
        reason = describe(interval, decision, policy.guard, spec.new_version, spec.old_version)
        spec.decision, spec.decided_at, spec.reason = decision, now, reason
        event_id = event_ids.guard_verdict(spec.promotion_id, decision)
        if decision == "rolled_back":
            command = CommandData(
                prompt=prompt,
                action="rollback",
                version=spec.new_version,
                requested_by="guard",
                reason=reason,
            )
            step.events.append(CommandEvent.build(command, id=event_id, source=GUARD_SOURCE))
            return
        step.events.append(
            promotion_event(
                prompt,
                decision,
                reason,
                source=GUARD_SOURCE,
                event_id=event_id,
                from_version=spec.old_version,
                to_version=spec.new_version,
                baseline_score=interval.mean_old,
                candidate_score=interval.mean_new,
                improvement=interval.difference,
                ci_low=interval.lower,
                ci_high=interval.upper,
                n_eval=interval.n_new,
            )
        )

    # -- the staged rollout ----------------------------------------------------------------

    def _start_rollout(
        self, prompt: str, event: PromotionEvent, policy: PromotionPolicy, window: PromptWindow, now: float
    ) -> WatchStep | None:
        """1. ignore a replay or an older canary; 2. drop the replaced rollout's votes; 3. take
        the rated traces of either arm since the canary's start in the window; 4. look."""
        data = event.data
        if data.to_version is None or data.from_version is None:
            return None
        current = self.rollouts.get(prompt)
        started_at = event.time.timestamp()
        if current is not None and (
            current.spec.promotion_id == event.id or started_at < current.spec.started_at
        ):
            return None
        rollout = Rollout(RolloutSpec.start(event.id, started_at, data.to_version, data.from_version, policy))
        step = _replacing(
            "rollout",
            prompt,
            rollout,
            current,
            window,
            lambda trace: rollout.watches(trace.prompt_version, trace.time),
        )
        self.rollouts[prompt] = rollout
        self._look_rollout(prompt, rollout, policy, step, now)
        return step

    def _look_rollout(
        self, prompt: str, rollout: Rollout, policy: PromotionPolicy, step: WatchStep, now: float
    ) -> bool:
        """The rule's verdict, sent once as a command at the share it was decided at (the
        optimizer role ignores it if the canary moved on meanwhile); True when one was sent."""
        verdict = look(rollout, policy.rollout, now)
        spec = rollout.spec
        if verdict is None or spec.pending == f"{verdict.action}@{verdict.from_stage}":
            return False
        spec.pending = f"{verdict.action}@{verdict.from_stage}"
        command = CommandData(
            prompt=prompt,
            action="canary_abort" if verdict.action == "abort" else "canary_advance",
            version=spec.canary_version,
            traffic_share=spec.stages[spec.stage],
            requested_by=RULE,
            reason=verdict.reason,
        )
        event_id = event_ids.rollout_verdict(spec.promotion_id, verdict.from_stage, verdict.action)
        step.events.append(CommandEvent.build(command, id=event_id, source=ROLLOUT_SOURCE))
        return True

    # -- status ----------------------------------------------------------------------------

    def guard_status(self, prompt: str, policy: PromotionPolicy) -> dict[str, Any] | None:
        """The guard of a prompt for /status and /metrics: its spec and live statistics."""
        guard = self.guards.get(prompt)
        if guard is None:
            return None
        interval = guard.interval(policy.guard.confidence)
        return {**asdict(guard.spec), "state": guard.spec.decision or "watching", **asdict(interval)}

    def rollout_status(self, prompt: str, policy: PromotionPolicy, now: float) -> dict[str, Any] | None:
        """The rollout of a prompt for /status, /metrics and the ops page."""
        rollout = self.rollouts.get(prompt)
        return None if rollout is None else rollout_status(rollout, policy.rollout, now)
