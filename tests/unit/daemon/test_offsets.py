"""The job runner's offset bookkeeping (pure): what may be committed while jobs start, finish
in any order, and partitions are revoked and redelivered."""

from __future__ import annotations

import itertools

import pytest

from daemon.jobs.offsets import Hold, OffsetTracker

P, Q = ("optimizations", 0), ("optimizations", 1)


def _tracker(*partitions: tuple[str, int]) -> OffsetTracker[tuple[str, int]]:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    tracker.assign(partitions)
    return tracker


def _start(tracker: OffsetTracker[tuple[str, int]], partition: tuple[str, int], offset: int) -> Hold:
    assert tracker.seen(partition, offset)
    hold = tracker.start(partition, offset)
    assert hold is not None
    return hold


def test_records_without_work_are_committed_as_read_and_each_point_once() -> None:
    tracker = _tracker(P)
    assert tracker.due() == {}, "nothing read: nothing to commit"
    for offset in range(3):
        assert tracker.seen(P, offset)
    assert tracker.due() == {P: 3}
    tracker.committed({P: 3})
    assert tracker.due() == {}, "a commit point is handed out until it is committed, then not again"


def test_finishes_out_of_order_never_commit_past_unfinished_work() -> None:
    tracker = _tracker(P)
    holds = {offset: _start(tracker, P, offset) for offset in (3, 5, 7)}
    tracker.seen(P, 8)
    assert tracker.due() == {P: 3}
    tracker.finish(holds[7])
    assert tracker.due() == {P: 3}, "7 is done but 3 and 5 are not"
    tracker.finish(holds[3])
    assert tracker.due() == {P: 5}
    tracker.finish(holds[5])
    assert tracker.due() == {P: 9}


def test_partitions_are_independent() -> None:
    tracker = _tracker(P, Q)
    hold = _start(tracker, P, 0)
    tracker.seen(Q, 0)
    assert tracker.due() == {P: 0, Q: 1}
    assert tracker.due([Q]) == {Q: 1}, "a revoked partition's points can be asked for alone"
    tracker.finish(hold)
    assert tracker.due([P]) == {P: 1}


def test_a_duplicate_delivery_of_held_work_starts_nothing() -> None:
    tracker = _tracker(P)
    hold = _start(tracker, P, 4)
    assert tracker.seen(P, 4) and tracker.start(P, 4) is None, "its work is under way already"
    tracker.finish(hold)
    assert tracker.due() == {P: 5}
    assert tracker.start(P, 4) is not None, "finished work may be started again (a later redelivery)"


def test_revocation_mid_job_then_redelivery_to_the_same_consumer() -> None:
    """The job's hold dies with the revocation: its late finish releases nothing, and the
    redelivered record (re-assigned partition, a new generation) is held anew."""
    tracker = _tracker(P)
    old = _start(tracker, P, 2)
    tracker.seen(P, 3)
    assert tracker.due([P]) == {P: 2}, "committed on revocation: up to the unfinished job"
    tracker.committed({P: 2})
    tracker.revoke([P])
    assert tracker.due() == {}
    assert not tracker.seen(P, 3) and tracker.start(P, 3) is None, (
        "a revoked partition's records are not ours"
    )
    tracker.finish(old)  # a late finish of the revoked job
    tracker.committed({P: 4})  # a commit that raced the revocation
    assert tracker.due() == {}

    tracker.assign([P])  # back again: redelivered from the committed offset 2
    new = _start(tracker, P, 2)
    tracker.seen(P, 3)
    tracker.finish(old)
    assert tracker.due() == {P: 2}, "a hold of the revoked generation does not release the redelivered job"
    tracker.finish(new)
    assert tracker.due() == {P: 4}


JOBS = {"a": 1, "b": 2}  # job -> its record's offset; records 0 and 3 start no work
END = 4


def _interleavings() -> list[tuple[str, ...]]:
    """Every order of starting and finishing both jobs and one revocation of the partition
    (records are read, and jobs started, in offset order; each job finishes after it starts;
    the revocation can come anywhere)."""
    steps = ["start a", "start b", "finish a", "finish b", "revoke"]
    return [
        order
        for order in itertools.permutations(steps)
        if order.index("start a") < order.index("start b")
        and all(order.index(f"start {j}") < order.index(f"finish {j}") for j in JOBS)
    ]


@pytest.mark.parametrize("order", _interleavings(), ids=" / ".join)
def test_every_interleaving_of_start_finish_and_revoke(order: tuple[str, ...]) -> None:
    """After every step (each followed by a commit): the committed offset never passes a job
    whose work no one has finished, and once all work held now is finished, everything read
    is committed. A revocation is followed by re-assignment and redelivery from the committed
    offset (the jobs still unfinished are started again, as the runner would)."""
    tracker = _tracker(P)
    holds: dict[str, list[Hold]] = {}  # job -> its holds, one per delivery
    finished: set[str] = set()  # jobs whose work was done, in any generation
    committed = 0
    read = 0  # the offset after the last record read

    def read_up_to(offset: int) -> None:
        nonlocal read
        for skipped in range(read, offset):
            assert tracker.seen(P, skipped)
        read = max(read, offset)

    def commit() -> None:
        nonlocal committed
        points = tracker.due()
        tracker.committed(points)
        committed = points.get(P, committed)
        unfinished = [JOBS[j] for j in JOBS if j not in finished]
        assert committed <= min(unfinished, default=END), (order, committed, finished)

    for step in order:
        verb, _, job = step.partition(" ")
        if verb == "start":
            read_up_to(JOBS[job])
            holds[job] = [_start(tracker, P, JOBS[job])]
            read += 1
        elif verb == "finish":
            tracker.finish(holds[job][0])  # the first delivery's work: maybe of a revoked generation
            finished.add(job)
        else:
            tracker.revoke([P])
            tracker.assign([P])
            for offset in range(committed, read):  # redelivery from the committed offset
                tracker.seen(P, offset)
                job = next((j for j, o in JOBS.items() if o == offset and j in holds), None)
                if job is not None:  # read before: started again
                    holds[job].append(_start(tracker, P, offset))
        commit()
    read_up_to(END)
    for hold in [h for delivered in holds.values() for h in delivered]:  # the runner finishes what it holds
        tracker.finish(hold)
    commit()
    assert committed == END, (order, committed)
