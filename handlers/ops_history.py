"""What the ops page remembers of the daemon's output topics: the decisions on each prompt, the
life of each optimization request and the dead letters by reason.

Bounded (a fixed number of decisions and requests per prompt, of recent dead letters and of
remembered dead-letter ids) and deduplicated by event id, so a redelivered or re-announced
event changes nothing. Pure: the daemon feeds it parsed events.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel

from schemas.events import CloudEvent, DeadLetterEvent, OptimizationEvent, PromotionEvent

DECISIONS_PER_PROMPT = 500
REQUESTS_PER_PROMPT = 20
RECENT_DEAD_LETTERS = 50
DEAD_LETTER_IDS = 20_000
_FOLDED = {"request_id", "prompt", "status", "trigger", "snapshot", "budget", "n_train", "n_val"}
_COPIED = {"metric_calls", "baseline_score", "candidate_score", "version", "error"}
_STATUS_RANK = {"requested": 0, "started": 1, "retrying": 2, "completed": 3, "failed": 3, "skipped": 3}


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One `gepa.promotion.v1` event as the page shows it."""

    id: str
    time: float
    prompt: str
    decision: str
    from_version: int | None
    to_version: int | None
    baseline_score: float | None
    candidate_score: float | None
    improvement: float | None
    ci_low: float | None
    ci_high: float | None
    n_eval: int | None
    reason: str
    request_id: str | None
    traffic_share: float | None = None  # a rollout's decision: the canary's share (aborted: the one it left)
    segments: tuple[dict[str, Any], ...] = ()  # the gate's per-segment results (`promotion.segments`)
    baseline_cost: dict[str, Any] | None = (
        None  # template tokens, tokens and USD per call (the gate's limits)
    )
    candidate_cost: dict[str, Any] | None = None

    @classmethod
    def of(cls, event: PromotionEvent) -> DecisionRecord:
        d = event.data
        return cls(
            id=event.id,
            time=event.time.timestamp(),
            prompt=d.prompt,
            decision=d.decision,
            from_version=d.from_version,
            to_version=d.to_version,
            baseline_score=d.baseline_score,
            candidate_score=d.candidate_score,
            improvement=d.improvement,
            ci_low=d.ci_low,
            ci_high=d.ci_high,
            n_eval=d.n_eval,
            reason=d.reason,
            request_id=d.request_id,
            traffic_share=d.traffic_share,
            segments=tuple(s.model_dump() for s in d.segments),
            baseline_cost=d.baseline_cost.model_dump() if d.baseline_cost is not None else None,
            candidate_cost=d.candidate_cost.model_dump() if d.candidate_cost is not None else None,
        )


@dataclass(slots=True)
class RequestRecord:
    """The latest known state of one optimization request, merged from its lifecycle events."""

    request_id: str
    prompt: str
    status: str
    requested_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    trigger: str | None = None
    n_examples: int | None = None
    budget: dict[str, Any] = field(default_factory=dict)
    metric_calls: int | None = None
    baseline_score: float | None = None
    candidate_score: float | None = None
    version: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def merge(self, event: OptimizationEvent) -> None:
        """Fold one lifecycle event in; an older status arriving late never moves it back."""
        d = event.data
        at = event.time.timestamp()
        if d.status == "requested":
            self.requested_at = at
        elif d.status == "started":
            self.started_at = at
        elif d.status != "retrying":
            self.finished_at = at
        if _STATUS_RANK[d.status] >= _STATUS_RANK[self.status]:
            self.status = d.status
        if d.trigger is not None:
            self.trigger = d.trigger.rule
        if d.snapshot is not None:
            self.n_examples = d.snapshot.n_examples
        if d.budget is not None:
            self.budget = d.budget.model_dump(mode="json", exclude_none=True)
        for name in type(d).model_fields:
            value = getattr(d, name)
            if name in _FOLDED or value is None:
                continue
            if name in _COPIED:
                setattr(self, name, value)
            else:  # fields the event gains later (model usage, what stopped GEPA) still show
                self.extra[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    id: str
    time: float
    reason: str
    source_topic: str
    partition: int
    offset: int
    key: str | None
    error: str


class OpsHistory:
    """Decisions, requests and dead letters, from events in topic order."""

    def __init__(
        self,
        decisions_per_prompt: int = DECISIONS_PER_PROMPT,
        requests_per_prompt: int = REQUESTS_PER_PROMPT,
        recent_dead_letters: int = RECENT_DEAD_LETTERS,
    ) -> None:
        self.decisions_per_prompt = decisions_per_prompt
        self.requests_per_prompt = requests_per_prompt
        self._decisions: dict[str, deque[DecisionRecord]] = {}
        self._decision_ids: dict[str, set[str]] = {}
        self._requests: dict[str, OrderedDict[str, RequestRecord]] = {}
        self.dead_letter_reasons: Counter[str] = Counter()
        self.recent_dead_letters: deque[DeadLetterRecord] = deque(maxlen=recent_dead_letters)
        self._dead_letter_ids: OrderedDict[str, None] = OrderedDict()

    def add(self, event: CloudEvent) -> str | None:
        """Fold one event in; returns the prompt whose decisions changed (None otherwise)."""
        if isinstance(event, PromotionEvent):
            return event.data.prompt if self._add_decision(DecisionRecord.of(event)) else None
        if isinstance(event, OptimizationEvent):
            self._add_request(event)
        elif isinstance(event, DeadLetterEvent):
            self._add_dead_letter(event)
        return None

    def _add_decision(self, record: DecisionRecord) -> bool:
        ids = self._decision_ids.setdefault(record.prompt, set())
        if record.id in ids:
            return False
        log = self._decisions.setdefault(record.prompt, deque())
        if len(log) == self.decisions_per_prompt:
            ids.discard(log.popleft().id)
        log.append(record)
        ids.add(record.id)
        return True

    def _add_request(self, event: OptimizationEvent) -> None:
        d = event.data
        requests = self._requests.setdefault(d.prompt, OrderedDict())
        record = requests.get(d.request_id)
        if record is None:
            record = requests[d.request_id] = RequestRecord(
                request_id=d.request_id, prompt=d.prompt, status=d.status
            )
            while len(requests) > self.requests_per_prompt:
                requests.popitem(last=False)
        record.merge(event)

    def _add_dead_letter(self, event: DeadLetterEvent) -> None:
        if event.id in self._dead_letter_ids:
            return
        self._dead_letter_ids[event.id] = None
        if len(self._dead_letter_ids) > DEAD_LETTER_IDS:
            self._dead_letter_ids.popitem(last=False)
        d = event.data
        self.dead_letter_reasons[d.reason] += 1
        self.recent_dead_letters.append(
            DeadLetterRecord(
                id=event.id,
                time=event.time.timestamp(),
                reason=d.reason,
                source_topic=d.source_topic,
                partition=d.partition,
                offset=d.offset,
                key=d.key,
                error=d.error[:300],
            )
        )

    # -- reading -----------------------------------------------------------------------------

    def decisions(self, prompt: str, limit: int = 100, offset: int = 0) -> tuple[list[DecisionRecord], int]:
        """Newest first, `limit` from `offset`; with the total held for the prompt."""
        log = self._decisions.get(prompt, deque())
        newest_first = [
            log[i] for i in range(len(log) - 1 - offset, max(len(log) - 1 - offset - limit, -1), -1)
        ]
        return newest_first, len(log)

    def last_decision(self, prompt: str) -> DecisionRecord | None:
        log = self._decisions.get(prompt)
        return log[-1] if log else None

    def request(self, prompt: str, request_id: str) -> RequestRecord | None:
        requests = self._requests.get(prompt)
        return requests.get(request_id) if requests is not None else None

    def latest_request(self, prompt: str) -> RequestRecord | None:
        requests = self._requests.get(prompt)
        return next(reversed(requests.values())) if requests else None

    def score_of(self, prompt: str, version: int) -> float | None:
        """The held-out score a decision measured for `version` (newest decision first)."""
        for record in reversed(self._decisions.get(prompt, ())):
            if record.to_version == version and record.candidate_score is not None:
                return record.candidate_score
            if record.from_version == version and record.baseline_score is not None:
                return record.baseline_score
        return None

    def dead_letters(self) -> dict[str, Any]:
        return {
            "by_reason": dict(self.dead_letter_reasons.most_common()),
            "total": sum(self.dead_letter_reasons.values()),
            "recent": [asdict(r) for r in reversed(self.recent_dead_letters)],
        }
