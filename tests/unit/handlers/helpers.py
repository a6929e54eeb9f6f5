"""Builders for handler tests: events at chosen times."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas import CommandData, CommandEvent, RatingData, RatingEvent, TraceData, TraceEvent
from schemas.config import PolicyFile, PromptPolicy

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
NOW = T0.timestamp()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def trace(trace_id: str, t: float = 0.0, prompt: str = "p", **data) -> TraceEvent:
    event = TraceEvent.build(
        TraceData(
            prompt=prompt,
            trace_id=trace_id,
            inputs=data.pop("inputs", {"q": trace_id}),
            outputs=data.pop("outputs", "a"),
            **data,
        )
    )
    return event.model_copy(update={"time": at(t)})


def rating(
    trace_id: str, value="good", t: float = 0.0, rater: str | None = "sme", prompt: str = "p", **data
) -> RatingEvent:
    event = RatingEvent.build(RatingData(prompt=prompt, trace_id=trace_id, rating=value, rater=rater, **data))
    return event.model_copy(update={"time": at(t)})


def command(action: str, prompt: str = "p") -> CommandEvent:
    return CommandEvent.build(CommandData(prompt=prompt, action=action))


def policies(**overrides) -> PolicyFile:
    base = {"name": "p", "triggers": {"min_examples": 3, "min_new_examples": 2, "cooldown": "0s"}}
    for section, values in overrides.items():
        base[section] = {**base.get(section, {}), **values} if isinstance(values, dict) else values
    return PolicyFile(prompts=[PromptPolicy.model_validate(base)])


ROOT = Path(__file__).resolve().parents[3]
ROOMS = ("schemas", "optimization", "handlers", "daemon")


def calls_outside(home: Path, calls: tuple[str, ...]) -> list[str]:
    """`path:line` of every call to one of `calls` in the rooms' code outside `home` (the one
    module that may build a kind of event)."""
    return [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for room in ROOMS
        for path in sorted((ROOT / room).rglob("*.py"))
        if path != home
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and ast.unparse(node.func) in calls
    ]
