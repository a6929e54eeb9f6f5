"""Which offset of each partition the job runner may commit: pure bookkeeping, no Kafka.

A record that starts work (a job, a command) is *held* until that work is finished; a
partition's commit point is its oldest held offset, else the offset after the last record
seen. So a crash or a revocation redelivers every unfinished request, and finishes in any
order never commit past unfinished work. Assigning a partition starts a new generation: a
hold of an earlier generation (work started before a revocation) can no longer release
anything, so a late finish cannot skip a redelivered request.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


@dataclass(frozen=True)
class Hold(Generic[P]):
    """One record's work in progress: released by `OffsetTracker.finish`."""

    partition: P
    offset: int
    generation: int


@dataclass
class _Partition:
    generation: int
    next: int | None = None  # the offset after the last record seen
    held: set[int] = field(default_factory=set)
    committed: int | None = None  # the last commit point handed out and committed


class OffsetTracker(Generic[P]):
    """Commit points of the partitions this consumer owns now."""

    def __init__(self) -> None:
        self._partitions: dict[P, _Partition] = {}
        self._generation = 0

    def assign(self, partitions: Iterable[P]) -> None:
        """Own these partitions from now on, each in a new generation (nothing held or seen yet)."""
        for partition in partitions:
            self._generation += 1
            self._partitions[partition] = _Partition(self._generation)

    def revoke(self, partitions: Iterable[P]) -> None:
        """Forget these partitions: their holds are void, their records are no longer ours to act on."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def seen(self, partition: P, offset: int) -> bool:
        """A record was read (and is being handled now); False if the partition is not ours."""
        state = self._partitions.get(partition)
        if state is None:
            return False
        state.next = max(state.next or 0, offset + 1)
        return True

    def start(self, partition: P, offset: int) -> Hold[P] | None:
        """Hold a seen record's offset until its work is finished. None if the partition is not
        ours or the offset is held already (a duplicate delivery: its work is under way)."""
        state = self._partitions.get(partition)
        if state is None or offset in state.held:
            return None
        state.held.add(offset)
        return Hold(partition, offset, state.generation)

    def finish(self, hold: Hold[P]) -> None:
        """Release a hold; a hold of a revoked (or since re-assigned) partition releases nothing."""
        state = self._partitions.get(hold.partition)
        if state is not None and state.generation == hold.generation:
            state.held.discard(hold.offset)

    def due(self, partitions: Iterable[P] | None = None) -> dict[P, int]:
        """Commit points that moved since they were last committed (of `partitions`, default all owned)."""
        wanted = self._partitions if partitions is None else partitions
        points = {}
        for partition in wanted:
            state = self._partitions.get(partition)
            if state is None or state.next is None:
                continue
            point = min(state.held) if state.held else state.next
            if point != state.committed:
                points[partition] = point
        return points

    def committed(self, points: dict[P, int]) -> None:
        """These commit points were committed (of partitions still owned)."""
        for partition, point in points.items():
            state = self._partitions.get(partition)
            if state is not None:
                state.committed = point
