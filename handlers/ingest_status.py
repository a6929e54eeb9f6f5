"""One prompt's `/status` entry on an ingest worker: window figures and age, join buffers, trigger
state and what fires next, the live guard and the rollout (pure: read from `Ingest`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from handlers.ingest import Ingest
from handlers.trigger import outlook


def prompt_status(ingest: Ingest, prompt: str, now: float) -> dict[str, Any] | None:
    """The entry of `prompt` at `now` (its window's expired examples dropped first); None if the
    prompt has no window here or is no longer managed."""
    window = ingest.windows.get(prompt)
    if window is None or prompt not in ingest.policies:
        return None
    window.expire(now)
    figures = window.figures()
    waiting_traces, waiting_ratings = window.buffer_sizes()
    oldest, newest = window.oldest_labeled_at(), window.newest_labeled_at()
    state = ingest.trigger_state(prompt)
    return {
        **asdict(figures),
        "max_examples": window.policy.max_examples,
        "oldest_example_age_s": None if oldest is None else now - oldest,
        "newest_example_age_s": None if newest is None else now - newest,
        "waiting_traces": waiting_traces,
        "waiting_ratings": waiting_ratings,
        "trigger": asdict(state),
        "next_trigger": asdict(outlook(ingest.policy(prompt).triggers, state, figures, now)),
        "guard": ingest.guard_status(prompt),
        "rollout": ingest.rollout_status(prompt, now),
    }
