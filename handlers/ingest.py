"""Ingest: one validated event in -> the state changes and events it implies (docs/architecture.md,
flow steps 1-4; the live watches of steps 12-14 are handlers/watches.py's, fed from here).

The daemon applies a `Step` in order: 1. emit the snapshot and `requested` event
(awaiting acks), 2. write the facts and trigger state to its tables, 3. delete the
facts that left the window. Events first: a crash between 1 and 2 replays the
same generation, hence the same request id, which downstream dedupes. `handle` is
all or nothing: an event that raises leaves no trace in memory, so the windows always
equal what the tables hold.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from handlers.facts import Fact, FactKey, RatingFact, TraceFact, decode_record
from handlers.snapshot import snapshot_sha256
from handlers.trigger import Fire, Skip, TriggerState, evaluate
from handlers.watches import WatchChanges, Watches, WatchStep
from handlers.window import PromptWindow, WindowFigures
from schemas import event_ids
from schemas.config import PolicyBook, PolicyFile, PromptPolicy
from schemas.errors import GepaStreamError
from schemas.events import (
    Budget,
    CloudEvent,
    CommandEvent,
    Example,
    OptimizationEvent,
    PromotionEvent,
    RatingEvent,
    TraceEvent,
)


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
    guard: WatchStep | None = None
    rollout: WatchStep | None = None
    prompt: str | None = None  # the policy prompt when the event names a dspy predictor prompt

    def watch(self, changes: WatchChanges) -> None:
        self.guard, self.rollout = changes.guard or self.guard, changes.rollout or self.rollout

    @property
    def watch_steps(self) -> list[WatchStep]:
        return [w for w in (self.guard, self.rollout) if w is not None]


class UnknownPrompt(GepaStreamError, LookupError):
    """The event names a prompt the policy file does not manage."""


class Ingest:
    """All windows and trigger states of the partitions this worker owns."""

    def __init__(self, policies: PolicyFile, app_id: str) -> None:
        self.policies = PolicyBook(policies)
        self.app_id = app_id
        self.windows: dict[str, PromptWindow] = {}
        self.triggers: dict[str, TriggerState] = {}
        self.watches = Watches()

    def reload(self, policies: PolicyFile, now: float) -> None:
        """A new policy file, without a restart: new events, triggers and watches read it from
        now on, and each window takes its new limits at once (the trimmed records are deleted
        with the prompt's next event, on its partition). A prompt the file no longer manages
        keeps its state until the file manages it again; its events are dead letters meanwhile."""
        self.policies.replace(policies)
        for prompt, window in self.windows.items():
            policy = self.policies.get(prompt)
            if policy is not None:
                window.set_policy(policy.window, now)

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
        self.watches.reset()

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

    # -- events --------------------------------------------------------------------------

    def handle(self, event: CloudEvent, now: float) -> Step:
        """Apply one event, all or nothing: if anything raises (UnknownPrompt for a prompt outside
        the policy file, or a bug), the windows, trigger states and watches are as they were before."""
        named: str | None = getattr(event.data, "prompt", None)
        if named is None:  # an event about no prompt changes no window
            return self._handle(event, now)
        prompt = self.policy_prompt(named) or named
        window, state = self.windows.get(prompt), self.triggers.get(prompt)
        saved_state = replace(state) if state is not None else None
        with (
            window.transaction() if window is not None else nullcontext(),
            self.watches.transaction(prompt),
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
                step.watch(
                    self.watches.on_rated_trace(
                        fact.prompt, fact.trace_id, self.policy(fact.prompt).promotion, window, now
                    )
                )
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
        """A promotion starts, moves or ends the prompt's live watches (handlers/watches.py); the
        promoted score becomes the score_drop baseline, and a watch that ends re-arms it."""
        data = event.data
        prompt = self.policy_prompt(data.prompt)
        step = Step(prompt=prompt)
        if prompt is None:
            return step
        state = self.trigger_state(prompt)
        if data.decision in ("promoted", "rolled_back") and data.candidate_score is not None:
            state.baseline_score = data.candidate_score
            step.trigger_state = state
        if data.candidate_cost is not None:  # a job's gate measured both versions
            state.last_gate = {
                "decision": data.decision,
                "to_version": data.to_version,
                "baseline": data.baseline_cost.model_dump() if data.baseline_cost is not None else None,
                "candidate": data.candidate_cost.model_dump(),
            }
            step.trigger_state = state
        changes = self.watches.on_promotion(
            prompt, event, self.policy(prompt).promotion, self.window(prompt), state, now
        )
        step.watch(changes)
        if changes.rearmed:
            step.trigger_state = state
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

    def guard_status(self, prompt: str) -> dict[str, Any] | None:
        return self.watches.guard_status(prompt, self.policy(prompt).promotion)

    def rollout_status(self, prompt: str, now: float) -> dict[str, Any] | None:
        return self.watches.rollout_status(prompt, self.policy(prompt).promotion, now)

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
