"""`Ingest.handle` is all or nothing: after any exception the windows and trigger states are
exactly as before, so they always agree with the table the daemon wrote the steps to."""

from __future__ import annotations

import random
from dataclasses import asdict
from typing import Any

import pytest

import handlers.ingest
import handlers.window
from handlers.ingest import Ingest, Step
from handlers.window import PromptWindow
from schemas import OptimizationData, OptimizationEvent, event_ids
from tests.unit.handlers.helpers import NOW, command, policies, rating, trace


class Boom(RuntimeError):
    pass


def _fingerprint(ingest: Ingest) -> dict[str, Any]:
    """Everything the ingest keeps in memory, as plain values."""
    windows = {}
    for prompt, w in ingest.windows.items():
        windows[prompt] = (
            dict(w.traces),
            {t: dict(v) for t, v in w.ratings.items()},
            list(w._members),
            dict(w._entry),
            (w._score_sum, w._score_n),
            list(w._waiting),
            list(w.pending_deletes),
            w.watermark,
        )
    return {"windows": windows, "triggers": {p: asdict(s) for p, s in ingest.triggers.items()}}


class Table:
    """The daemon's side: apply each step's writes; rebuild an ingest from them as recovery does."""

    def __init__(self) -> None:
        self.facts: dict[bytes, bytes] = {}
        self.triggers: dict[str, Any] = {}

    def apply(self, prompt: str, step: Step) -> None:
        self.facts.update(step.puts)
        for key in step.deletes:
            self.facts.pop(key, None)
        if step.trigger_state is not None:
            self.triggers[prompt] = type(step.trigger_state).decode(step.trigger_state.encode())

    def recovered(self, app_id: str, **policy: Any) -> Ingest:
        ingest = Ingest(policies(**policy), app_id)
        for prompt, state in self.triggers.items():
            ingest.restore_trigger(prompt, type(state).decode(state.encode()))
        for raw in self.facts.values():
            ingest.restore_record(raw, NOW)
        return ingest


def _agree(live: Ingest, table: Table, **policy: Any) -> None:
    recovered = table.recovered(live.app_id, **policy)
    for prompt in set(live.windows) | set(recovered.windows):
        a, b = live.window(prompt), recovered.window(prompt)
        a.expire(NOW), b.expire(NOW)
        assert a.figures() == b.figures(), prompt
        assert a.examples() == b.examples(), prompt
        assert a.buffer_sizes() == b.buffer_sizes(), prompt
    assert {p: asdict(s) for p, s in live.triggers.items() if s.generation} == {
        p: asdict(s) for p, s in recovered.triggers.items() if s.generation
    }


def test_a_poisoned_trace_that_slips_past_the_parser_leaves_nothing_behind() -> None:
    """Failure 3 of issue 10 at the handler: a lone surrogate in `inputs` (built without
    validation, as if the parser had missed it) must not stay in the window and break every
    later snapshot of the prompt."""
    ingest = Ingest(policies(triggers={"min_examples": 100, "min_new_examples": 10}), "app")
    table = Table()
    for i in range(5):
        table.apply("p", ingest.handle(trace(f"ok-{i}", i, expectations={"expected_response": "a"}), NOW))
    before = _fingerprint(ingest)
    poisoned = trace("bad", 10, expectations={"expected_response": "a"})
    poisoned = poisoned.model_copy(
        update={"data": poisoned.data.model_copy(update={"inputs": {"q": "\ud800"}})}
    )
    with pytest.raises(TypeError):  # orjson refuses to encode the record
        ingest.handle(poisoned, NOW)
    assert _fingerprint(ingest) == before
    fired = []
    for i in range(95):
        step = ingest.handle(trace(f"later-{i}", 20 + i, expectations={"expected_response": "a"}), NOW)
        table.apply("p", step)
        if step.request is not None:
            fired.append(step.request)
    assert ingest.figures("p").n_examples == 100
    assert len(fired) == 1 and len(fired[0].examples) == 100
    _agree(ingest, table, triggers={"min_examples": 100, "min_new_examples": 10})


# (where the fault is injected, the object patched, the attribute): each raises after some state changed
FAULTS = [
    ("window merge", PromptWindow, "_settle"),
    ("eviction", PromptWindow, "_drop"),
    ("record encoding", handlers.window, "encode_record"),
    ("snapshot digest", handlers.ingest, "snapshot_sha256"),
    ("request id (after the generation moved)", event_ids, "request_id"),
]


@pytest.mark.parametrize(("where", "owner", "name"), FAULTS, ids=[f[0] for f in FAULTS])
def test_any_fault_inside_handle_rolls_back_everything(
    where: str, owner: Any, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = {
        "window": {"max_examples": 8},
        "triggers": {"min_examples": 5, "min_new_examples": 3, "cooldown": "0s"},
    }
    ingest = Ingest(policies(**policy), "app")
    table = Table()
    rng = random.Random(where)
    original = getattr(owner, name)
    armed = {"on": False}

    def faulty(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)  # the real change first, then the failure
        if armed["on"] and rng.random() < 0.5:
            raise Boom(where)
        return result

    monkeypatch.setattr(owner, name, faulty)
    failures = 0
    for i in range(300):
        kind = rng.random()
        if kind < 0.5:
            event = trace(
                f"t{rng.randrange(40)}",
                i,
                expectations={"expected_response": "a"} if rng.random() < 0.5 else {},
            )
        elif kind < 0.95:
            event = rating(
                f"t{rng.randrange(40)}", rng.choice(["good", "poor", 5]), i, rater=rng.choice(["a", "b"])
            )
        else:
            event = command("optimize")
        before = _fingerprint(ingest)
        armed["on"] = True
        try:
            step = ingest.handle(event, NOW + i)
        except Boom:
            failures += 1
            assert _fingerprint(ingest) == before, f"event {i} left partial state after a fault in {where}"
            continue
        finally:
            armed["on"] = False
        table.apply("p", step)
        if step.request is not None:  # the job finished: let the trigger fire again
            done = OptimizationEvent.build(
                OptimizationData(request_id=step.request.request_id, prompt="p", status="completed")
            )
            table.apply("p", ingest.handle(done, NOW + i))
    assert failures > 5, f"the fault in {where} was hit {failures} times"
    _agree(ingest, table, **policy)


def test_an_unknown_prompt_leaves_no_empty_window_or_trigger_state() -> None:
    ingest = Ingest(policies(), "app")
    with pytest.raises(handlers.ingest.UnknownPrompt):
        ingest.handle(trace("x", prompt="other"), NOW)
    with pytest.raises(handlers.ingest.UnknownPrompt):
        ingest.handle(command("optimize", prompt="other"), NOW)
    assert ingest.windows == {} and ingest.triggers == {}
