"""The rolling window of one prompt: facts joined into labeled examples, bounded by
`max_examples` and `max_age`, plus the join buffer of traces and ratings waiting
for their other half (bounded by `join_ttl`).

Every operation is O(log n) in the window size, so a 5,000-example window costs
about what a 50-example one does. Facts that leave the window (evicted, aged out,
never joined) are queued in `pending_deletes` for the caller to remove from its
store — the window never deletes storage by itself. `transaction()` undoes every change
of a block that raises, so a failing handler leaves the window as the store has it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sortedcontainers import SortedList

from handlers.facts import Fact, FactKey, RatingFact, TraceFact, encode_record, record_key
from schemas.config import WindowPolicy
from schemas.events import Example


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """What the trigger policy and /status read off a window."""

    n_examples: int
    n_new: int
    rolling_score: float | None


@dataclass(slots=True)
class _Journal:
    """What a transaction changed: each touched trace's state before, and join-buffer moves."""

    score: tuple[float, int]
    n_pending_deletes: int
    watermark: float | None
    traces: dict[
        str, tuple[TraceFact | None, dict[str, RatingFact] | None, tuple[float, float | None] | None]
    ] = field(default_factory=dict)
    waiting: list[tuple[bool, tuple[float, str]]] = field(default_factory=list)  # (added?, entry)


class PromptWindow:
    def __init__(self, prompt: str, policy: WindowPolicy) -> None:
        self.prompt = prompt
        self.policy = policy
        self.traces: dict[str, TraceFact] = {}
        self.ratings: dict[str, dict[str, RatingFact]] = {}
        self.pending_deletes: list[FactKey] = []
        self._members: SortedList = SortedList()  # (labeled_at, trace_id) of in-window examples
        self._entry: dict[str, tuple[float, float | None]] = {}  # trace_id -> (labeled_at, score)
        self._score_sum = 0.0
        self._score_n = 0
        self._waiting: SortedList = SortedList()  # (since, trace_id): maybe-unjoined traces/ratings
        self.watermark: float | None = None
        self._journal: _Journal | None = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run a block of changes all or nothing: if it raises, every change is undone."""
        self._journal = _Journal((self._score_sum, self._score_n), len(self.pending_deletes), self.watermark)
        try:
            yield
        except BaseException:
            self._rollback(self._journal)
            raise
        finally:
            self._journal = None

    # -- facts in ------------------------------------------------------------------------

    def add(self, fact: Fact, now: float) -> bool:
        """Merge one fact; False when it changes nothing (a duplicate), so the caller skips the write.

        `now` starts the join-buffer TTL of a fact still waiting for its other half.
        """
        self._touch(fact.trace_id)
        if isinstance(fact, TraceFact):
            if self.traces.get(fact.trace_id) == fact:
                return False
            self.traces[fact.trace_id] = fact
        else:
            votes = self.ratings.setdefault(fact.trace_id, {})
            current = votes.get(fact.rater)
            if current is not None and (not fact.supersedes(current) or fact.same_verdict(current)):
                return False
            votes[fact.rater] = fact
        self._settle(fact.trace_id, since=now)
        return True

    # -- expiry --------------------------------------------------------------------------

    def set_policy(self, policy: WindowPolicy, now: float) -> None:
        """A reloaded policy takes effect at once: a smaller `max_examples` or `max_age` trims the
        window now (its records' deletions are queued like any expiry's)."""
        self.policy = policy
        while len(self._members) > policy.max_examples:
            self._drop(self._members[0][1])
        self.expire(now)

    def expire(self, now: float) -> None:
        """Age examples out of the window and drop join-buffer entries past their TTL."""
        oldest_allowed = now - self.policy.max_age.total_seconds()
        while self._members and self._members[0][0] < oldest_allowed:
            self._drop(self._members[0][1])
        stale = now - self.policy.join_ttl.total_seconds()  # the TTL runs from the first unjoined fact
        while self._waiting and self._waiting[0][0] < stale:
            entry = self._waiting.pop(0)
            self._note_waiting(False, entry)
            trace_id = entry[1]
            if trace_id not in self._entry:
                self._drop(trace_id)

    # -- figures -------------------------------------------------------------------------

    def figures(self) -> WindowFigures:
        """O(log n): examples in the window, those labeled after the watermark, mean score."""
        members = len(self._members)
        if self.watermark is None:
            n_new = members
        else:
            n_new = members - self._members.bisect_right((self.watermark, "\U0010ffff"))
        return WindowFigures(
            n_examples=members,
            n_new=n_new,
            rolling_score=self._score_sum / self._score_n if self._score_n else None,
        )

    def record(self, trace_id: str) -> tuple[FactKey, bytes] | None:
        """The stored form of everything known about one trace (None once it was dropped)."""
        trace = self.traces.get(trace_id)
        votes = self.ratings.get(trace_id, {})
        if trace is None and not votes:
            return None
        return record_key(self.prompt, trace_id), encode_record(trace, list(votes.values()))

    def buffer_sizes(self) -> tuple[int, int]:
        """(traces waiting for a rating, ratings waiting for their trace); O(buffer), for /status."""
        traces = sum(1 for t in self.traces if t not in self._entry)
        ratings = sum(1 for t in self.ratings if t not in self.traces)
        return traces, ratings

    @property
    def size(self) -> int:
        return len(self._members)

    def newest_labeled_at(self) -> float | None:
        return self._members[-1][0] if self._members else None

    def oldest_labeled_at(self) -> float | None:
        return self._members[0][0] if self._members else None

    def examples(self) -> list[Example]:
        """The window frozen as examples, oldest first (O(window): only on a trigger)."""
        return [self._example(trace_id, labeled_at) for labeled_at, trace_id in self._members]

    # -- internals -----------------------------------------------------------------------

    def _settle(self, trace_id: str, since: float) -> None:
        """Recompute one example's place after a fact about it arrived."""
        self._leave(trace_id)
        trace = self.traces.get(trace_id)
        votes = self.ratings.get(trace_id)
        if trace is None or not (votes or trace.self_labeled):
            self._waiting.add((since, trace_id))
            self._note_waiting(True, (since, trace_id))
            return
        labeled_at = max([trace.time, *(v.time for v in (votes or {}).values())])
        if votes:
            score: float | None = sum(v.score for v in votes.values()) / len(votes)
        elif trace.scores:
            score = sum(trace.scores.values()) / len(trace.scores)
        else:
            score = None
        full = len(self._members) >= self.policy.max_examples
        if full and (labeled_at, trace_id) < self._members[0]:
            self._drop(trace_id)  # older than everything in a full window: it never enters
            return
        self._members.add((labeled_at, trace_id))
        self._entry[trace_id] = (labeled_at, score)
        if score is not None:
            self._score_sum += score
            self._score_n += 1
        if len(self._members) > self.policy.max_examples:
            self._drop(self._members[0][1])

    def _leave(self, trace_id: str) -> None:
        entry = self._entry.pop(trace_id, None)
        if entry is None:
            return
        labeled_at, score = entry
        self._members.remove((labeled_at, trace_id))
        if score is not None:
            self._score_sum -= score
            self._score_n -= 1
            if self._score_n == 0:
                self._score_sum = 0.0  # no float drift survives an empty window

    def _drop(self, trace_id: str) -> None:
        """Forget an example or buffer entry entirely and queue its record for deletion."""
        self._touch(trace_id)
        self._leave(trace_id)
        known = self.traces.pop(trace_id, None) is not None
        if self.ratings.pop(trace_id, None) is not None or known:
            self.pending_deletes.append(record_key(self.prompt, trace_id))

    def _touch(self, trace_id: str) -> None:
        """Inside a transaction: remember this trace's state before its first change."""
        journal = self._journal
        if journal is not None and trace_id not in journal.traces:
            votes = self.ratings.get(trace_id)
            journal.traces[trace_id] = (
                self.traces.get(trace_id),
                dict(votes) if votes is not None else None,
                self._entry.get(trace_id),
            )

    def _note_waiting(self, added: bool, entry: tuple[float, str]) -> None:
        if self._journal is not None:
            self._journal.waiting.append((added, entry))

    def _rollback(self, journal: _Journal) -> None:
        """Put back every touched trace, the join buffer, the score sums and the queues."""
        for trace_id, (trace, votes, entry) in journal.traces.items():
            current = self._entry.pop(trace_id, None)
            if current is not None:
                self._members.remove((current[0], trace_id))
            if entry is not None:
                self._entry[trace_id] = entry
                self._members.add((entry[0], trace_id))
            if trace is None:
                self.traces.pop(trace_id, None)
            else:
                self.traces[trace_id] = trace
            if votes is None:
                self.ratings.pop(trace_id, None)
            else:
                self.ratings[trace_id] = votes
        for added, waiting in reversed(journal.waiting):
            if added:
                self._waiting.remove(waiting)
            else:
                self._waiting.add(waiting)
        self._score_sum, self._score_n = journal.score
        del self.pending_deletes[journal.n_pending_deletes :]
        self.watermark = journal.watermark

    def _example(self, trace_id: str, labeled_at: float) -> Example:
        trace = self.traces[trace_id]
        votes = sorted(self.ratings.get(trace_id, {}).values(), key=lambda v: (v.time, v.event_id))
        expectations = dict(trace.expectations)
        corrections = [v.correction for v in votes if v.correction]
        if corrections:
            expectations["expected_response"] = corrections[-1]
        _, score = self._entry[trace_id]
        return Example(
            trace_id=trace_id,
            inputs=trace.inputs,
            outputs=trace.outputs,
            expectations=expectations,
            scores=trace.scores,
            rating=sum(v.score for v in votes) / len(votes) if votes else None,
            comments=[v.comment for v in votes if v.comment],
            feedback=trace.feedback,
            prompt_version=trace.prompt_version,
            attributes=trace.attributes,
            time=datetime.fromtimestamp(labeled_at, tz=UTC),
        )
