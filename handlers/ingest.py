"""Ingest: one validated event in -> the state changes and events it implies (docs/architecture.md, flow steps 1-4).

The daemon applies a `Step` in order: 1. emit the snapshot and `requested` event
(awaiting acks), 2. write the facts and trigger state to its tables, 3. delete the
facts that left the window. Events first: a crash between 1 and 2 replays the
same generation, hence the same request id, which downstream dedupes. `handle` is
all or nothing: an event that raises leaves no trace in memory, so the windows always
equal what the tables hold.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from handlers.facts import Fact, FactKey, RatingFact, TraceFact, decode_record
from handlers.guard import GuardSpec, PromptGuard, Vote, decide, describe
from handlers.promotion import promotion_event
from handlers.snapshot import snapshot_sha256
from handlers.stored_json import stored_json
from handlers.trigger import Fire, Skip, TriggerState, evaluate
from handlers.window import PromptWindow, WindowFigures
from schemas import event_ids
from schemas.config import PolicyFile, PromptPolicy
from schemas.errors import GepaStreamError
from schemas.events import (
    Budget,
    CloudEvent,
    CommandData,
    CommandEvent,
    Example,
    OptimizationEvent,
    PromotionData,
    PromotionEvent,
    RatingEvent,
    TraceEvent,
)

GUARD_SOURCE = "gepa-stream/guard"


@dataclass(frozen=True, slots=True)
class Request:
    """An optimization to announce: the frozen window and why."""

    request_id: str
    prompt: str
    fire: Fire
    examples: list[Example]
    sha256: str
    budget: Budget


@dataclass(slots=True)
class Step:
    puts: list[tuple[FactKey, bytes]] = field(default_factory=list)
    deletes: list[FactKey] = field(default_factory=list)
    trigger_state: TriggerState | None = None
    request: Request | None = None
    skipped: tuple[str, str] | None = None  # (prompt, reason) of a manual request that cannot run
    guard: GuardStep | None = None
    prompt: str | None = None  # the policy prompt when the event names a dspy predictor prompt


@dataclass(slots=True)
class GuardStep:
    """What a guard changed: its spec, its vote facts, and the events its decision emits
    (a promotion event, or in auto mode a rollback command for the optimizer role)."""

    prompt: str
    spec: GuardSpec
    puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    deletes: list[bytes] = field(default_factory=list)
    events: list[PromotionEvent | CommandEvent] = field(default_factory=list)


def vote_key(prompt: str, trace_id: str, rater: str) -> bytes:
    """The guard-vote table key: one rating identity (rated trace + rater) of one prompt."""
    return stored_json((prompt, trace_id, rater))


class UnknownPrompt(GepaStreamError, LookupError):
    """The event names a prompt the policy file does not manage."""


class Ingest:
    """All windows and trigger states of the partitions this worker owns."""

    def __init__(self, policies: PolicyFile, app_id: str) -> None:
        self.policies = {p.name: p for p in policies.prompts}
        self.app_id = app_id
        self.windows: dict[str, PromptWindow] = {}
        self.triggers: dict[str, TriggerState] = {}
        self.guards: dict[str, PromptGuard] = {}

    def policy(self, prompt: str) -> PromptPolicy:
        policy = self.policies.get(prompt)
        if policy is None:
            raise UnknownPrompt(
                f"prompt {prompt!r} is not in the policy file (known: {', '.join(self.policies)})"
            )
        return policy

    def window(self, prompt: str) -> PromptWindow:
        window = self.windows.get(prompt)
        if window is None:
            window = self.windows[prompt] = PromptWindow(prompt, self.policy(prompt).window)
        return window

    def trigger_state(self, prompt: str) -> TriggerState:
        return self.triggers.setdefault(prompt, TriggerState())

    # -- recovery ------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything before a rebuild from the tables (after a rebalance)."""
        self.windows.clear()
        self.triggers.clear()
        self.guards.clear()

    def restore_record(self, raw: bytes, now: float) -> None:
        """Merge one stored trace record back into its window (after recovery)."""
        trace, votes = decode_record(raw)
        for fact in ([trace] if trace is not None else []) + votes:
            if fact.prompt in self.policies:
                self.window(fact.prompt).add(fact, now)

    def restore_trigger(self, prompt: str, state: TriggerState) -> None:
        self.triggers[prompt] = state
        if prompt in self.policies:
            self.window(prompt).watermark = state.watermark

    def restore_guard(self, prompt: str, spec: GuardSpec) -> None:
        if prompt in self.policies:
            self.guards[prompt] = PromptGuard(
                spec, self.guards[prompt].votes if prompt in self.guards else {}
            )

    def restore_vote(self, key: bytes, raw: bytes) -> None:
        """One stored guard vote back into its guard (specs are restored first)."""
        prompt = orjson.loads(key)[0]
        guard = self.guards.get(prompt)
        vote = Vote.decode(raw)
        if guard is not None:
            guard.votes[(vote.trace_id, vote.rater)] = vote

    # -- events --------------------------------------------------------------------------

    def handle(self, event: CloudEvent, now: float) -> Step:
        """Apply one event, all or nothing: if anything raises (UnknownPrompt for a prompt outside
        the policy file, or a bug), the windows, trigger states and guards are as they were before."""
        named: str | None = getattr(event.data, "prompt", None)
        if named is None:  # an event about no prompt changes no window
            return self._handle(event, now)
        prompt = self.policy_prompt(named) or named
        window, state, guard = self.windows.get(prompt), self.triggers.get(prompt), self.guards.get(prompt)
        saved_state = replace(state) if state is not None else None
        with (
            window.transaction() if window is not None else nullcontext(),
            guard.transaction() if guard is not None else nullcontext(),
        ):
            try:
                return self._handle(event, now)
            except BaseException:
                if window is None:
                    self.windows.pop(prompt, None)
                if saved_state is None:
                    self.triggers.pop(prompt, None)
                else:
                    self.triggers[prompt] = saved_state
                if guard is None:
                    self.guards.pop(prompt, None)
                else:
                    self.guards[prompt] = guard
                raise

    def _handle(self, event: CloudEvent, now: float) -> Step:
        if isinstance(event, (TraceEvent, RatingEvent)):
            fact: Fact = (
                TraceFact.from_event(event) if isinstance(event, TraceEvent) else RatingFact.from_event(event)
            )
            return self._on_fact(fact, now)
        if isinstance(event, CommandEvent):
            return self._on_command(event, now)
        if isinstance(event, OptimizationEvent):
            return self._on_optimization(event, now)
        if isinstance(event, PromotionEvent):
            return self._on_promotion(event, now)
        return Step()

    def _on_fact(self, fact: Fact, now: float) -> Step:
        """Merge the fact; write its trace's record unless nothing changed or it was dropped
        at once (then its deletion is queued instead)."""
        window = self.window(fact.prompt)
        step = Step()
        if window.add(fact, now):
            record = window.record(fact.trace_id)
            if record is not None:
                step.puts.append(record)
                self._guard_votes(fact.prompt, fact.trace_id, step, now)
        self._consider(fact.prompt, now, step, manual=False)
        return step

    def _on_command(self, event: CommandEvent, now: float) -> Step:
        step = Step()
        self.policy(event.data.prompt)
        if event.data.action == "optimize":
            self._consider(event.data.prompt, now, step, manual=True)
        return step

    def _on_optimization(self, event: OptimizationEvent, now: float) -> Step:
        """A job of ours finished: clear the in-flight mark, start the cooldown."""
        data = event.data
        state = self.trigger_state(data.prompt)
        if data.status not in ("completed", "failed", "skipped") or state.in_flight != data.request_id:
            return Step()
        state.in_flight = None
        state.last_finished_at = now
        state.last_status = data.status
        if data.status == "completed" and data.baseline_score is not None and state.baseline_score is None:
            state.baseline_score = data.baseline_score
        return Step(trigger_state=state)

    def _on_promotion(self, event: PromotionEvent, now: float) -> Step:
        """A promotion starts the prompt's live guard (replacing any other); a rollback ends it
        and re-arms the triggers. The promoted score becomes the score_drop baseline."""
        data = event.data
        prompt = self.policy_prompt(data.prompt)
        step = Step(prompt=prompt)
        if prompt is None:
            return step
        state = self.trigger_state(prompt)
        if data.decision in ("promoted", "rolled_back") and data.candidate_score is not None:
            state.baseline_score = data.candidate_score
            step.trigger_state = state
        if data.decision == "promoted" and data.to_version is not None:
            self._start_guard(prompt, event, step, now)
        elif data.decision == "rolled_back":
            self._end_guard(prompt, data, step, now)
        return step

    def policy_prompt(self, name: str) -> str | None:
        """The policy prompt an event names: itself, or for the dspy backend the program whose
        predictor prompt `<prompt>_<predictor>` it is (the longest such name)."""
        if name in self.policies:
            return name
        owners = [
            p.name for p in self.policies.values() if p.backend == "dspy" and name.startswith(f"{p.name}_")
        ]
        return max(owners, key=len, default=None)

    # -- the live guard ------------------------------------------------------------------

    def _start_guard(self, prompt: str, event: PromotionEvent, step: Step, now: float) -> None:
        """1. ignore a replay, an older promotion, or the same promotion announced once per
        dspy predictor; 2. drop the replaced guard's votes; 3. take the replaced version's
        rated traces in the window as its reference; 4. decide at once (usually: watch)."""
        data = event.data
        policy = self.policy(prompt).promotion
        current = self.guards.get(prompt)
        promoted_at = event.time.timestamp()
        if not policy.guard.enabled or data.to_version is None:
            return
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
                return
        spec = GuardSpec(event.id, promoted_at, data.to_version, data.from_version, policy.mode)
        guard = PromptGuard(spec)
        change = GuardStep(prompt, spec)
        if current is not None:
            change.deletes = [vote_key(prompt, *key) for key in current.votes]
        window = self.window(prompt)
        for trace_id, trace in window.traces.items():
            if trace.prompt_version is not None and guard.watches(trace.prompt_version):
                change.puts += self._merge_votes(guard, prompt, trace_id, trace.prompt_version, window)
        self.guards[prompt] = guard
        self._decide(prompt, guard, change, now)
        step.guard = change

    def _end_guard(self, prompt: str, data: PromotionData, step: Step, now: float) -> None:
        """Production left the watched version: the guard ends (its own rollback, or a person's)
        and the triggers are re-armed against the version now in production."""
        guard = self.guards.get(prompt)
        if guard is None or guard.spec.decision not in (None, "rolled_back", "regression_suspected"):
            return
        if data.from_version != guard.spec.new_version:
            return
        interval = guard.interval(self.policy(prompt).promotion.guard.confidence)
        state = self.trigger_state(prompt)
        state.baseline_score = interval.mean_old
        step.trigger_state = state
        if guard.spec.decision == "rolled_back":
            return
        guard.spec.decision, guard.spec.decided_at, guard.spec.reason = "rolled_back", now, data.reason
        step.guard = GuardStep(prompt, guard.spec)

    def _guard_votes(self, prompt: str, trace_id: str, step: Step, now: float) -> None:
        """A rated trace of a watched version: record its votes, then decide (also once the
        watch has outlived `max_watch.duration`)."""
        guard = self.guards.get(prompt)
        if guard is None or not guard.watching:
            return
        window = self.window(prompt)
        trace = window.traces.get(trace_id)
        change = GuardStep(prompt, guard.spec)
        if trace is not None and trace.prompt_version is not None and guard.watches(trace.prompt_version):
            change.puts = self._merge_votes(guard, prompt, trace_id, trace.prompt_version, window)
        expired = (
            now - guard.spec.promoted_at
            >= self.policy(prompt).promotion.guard.max_watch.duration.total_seconds()
        )
        if change.puts or expired:
            self._decide(prompt, guard, change, now)
            step.guard = change

    @staticmethod
    def _merge_votes(
        guard: PromptGuard, prompt: str, trace_id: str, version: int, window: PromptWindow
    ) -> list[tuple[bytes, bytes]]:
        puts = []
        for rater, rating in window.ratings.get(trace_id, {}).items():
            vote = Vote(trace_id, rater, version, rating.score)
            if guard.add(vote):
                puts.append((vote_key(prompt, trace_id, rater), vote.encode()))
        return puts

    def _decide(self, prompt: str, guard: PromptGuard, change: GuardStep, now: float) -> None:
        """Apply the guard's policy; a decision ends the watch and is announced."""
        policy = self.policy(prompt).promotion.guard
        interval = guard.interval(policy.confidence)
        spec = guard.spec
        decision = decide(interval, policy, spec.mode, now - spec.promoted_at)
        if decision is None:
            return
        reason = describe(interval, decision, policy, spec.new_version, spec.old_version)
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
            change.events.append(CommandEvent.build(command, id=event_id, source=GUARD_SOURCE))
            return
        change.events.append(
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

    def guard_status(self, prompt: str) -> dict[str, Any] | None:
        """The guard of a prompt for /status and /metrics: its spec and live statistics."""
        guard = self.guards.get(prompt)
        if guard is None:
            return None
        interval = guard.interval(self.policy(prompt).promotion.guard.confidence)
        return {**asdict(guard.spec), "state": guard.spec.decision or "watching", **asdict(interval)}

    def _consider(self, prompt: str, now: float, step: Step, *, manual: bool) -> None:
        """Expire, evaluate the trigger, and on firing freeze the window into a Request."""
        window = self.window(prompt)
        window.expire(now)
        step.deletes.extend(window.pending_deletes)
        window.pending_deletes.clear()
        policy = self.policy(prompt)
        state = self.trigger_state(prompt)
        decision = evaluate(policy.triggers, state, window.figures(), now, manual=manual)
        if isinstance(decision, Skip):
            step.skipped = (prompt, decision.reason)
        elif isinstance(decision, Fire):
            examples = window.examples()
            digest = snapshot_sha256(examples)
            state.generation += 1
            request_id = event_ids.request_id(self.app_id, prompt, state.generation, digest)
            state.in_flight = request_id
            state.last_fired_at = now
            state.watermark = window.newest_labeled_at()
            window.watermark = state.watermark
            step.trigger_state = state
            step.request = Request(
                request_id=request_id,
                prompt=prompt,
                fire=decision,
                examples=examples,
                sha256=digest,
                budget=Budget(
                    max_metric_calls=policy.budget.max_metric_calls,
                    max_wall_time_s=policy.budget.max_wall_time.total_seconds(),
                    max_cost_usd=policy.budget.max_cost_usd,
                ),
            )

    def figures(self, prompt: str) -> WindowFigures:
        return self.window(prompt).figures()
