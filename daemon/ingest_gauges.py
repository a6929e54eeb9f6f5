"""The ingest worker's per-prompt gauges on `/metrics` (window, live guard, rollout), refreshed from
`handlers.ingest.Ingest` after each batch and each (re)assignment: only this worker's prompts."""

from __future__ import annotations

import time

from daemon import prometheus_metrics as m
from handlers.ingest import Ingest


def refresh_window(ingest: Ingest, prompt: str) -> None:
    """A prompt's window gauges: examples, new examples, rolling score."""
    figures = ingest.figures(prompt)
    m.WINDOW_EXAMPLES.labels(prompt).set(figures.n_examples)
    m.WINDOW_NEW_EXAMPLES.labels(prompt).set(figures.n_new)
    if figures.rolling_score is not None:
        m.ROLLING_SCORE.labels(prompt).set(figures.rolling_score)


def refresh_watches(ingest: Ingest, prompt: str) -> None:
    """The guard's and the rollout's gauges of one prompt: its old series removed first."""
    for gauge in (*m.GUARD_GAUGES, *m.ROLLOUT_GAUGES):
        for labels in [
            s.labels for f in gauge.collect() for s in f.samples if s.labels.get("prompt") == prompt
        ]:
            gauge.remove(*labels.values())
    guard = ingest.guard_status(prompt)
    if guard is not None:
        m.GUARD_RATINGS.labels(prompt, "new").set(guard["n_new"])
        m.GUARD_RATINGS.labels(prompt, "old").set(guard["n_old"])
        if guard["difference"] is not None:
            m.GUARD_DIFFERENCE.labels(prompt).set(guard["difference"])
        m.GUARD_BOUND.labels(prompt, "lower").set(guard["lower"])
        m.GUARD_BOUND.labels(prompt, "upper").set(guard["upper"])
        m.GUARD_STATE.labels(prompt, guard["state"]).set(1)
    rollout = ingest.rollout_status(prompt, time.time())
    if rollout is not None:
        m.ROLLOUT_SHARE.labels(prompt).set(rollout["traffic_share"])
        m.ROLLOUT_STAGE.labels(prompt).set(rollout["stage"])
        for arm in ("canary", "production"):
            m.ROLLOUT_RATINGS.labels(prompt, arm).set(rollout[arm]["n"])
            if rollout[arm]["mean"] is not None:
                m.ROLLOUT_MEAN.labels(prompt, arm).set(rollout[arm]["mean"])
            m.ROLLOUT_NEEDED.labels(prompt, arm).set(rollout[f"needed_{arm}"])
        m.ROLLOUT_BOUND.labels(prompt, "lower").set(rollout["lower"])
        m.ROLLOUT_BOUND.labels(prompt, "upper").set(rollout["upper"])
        m.ROLLOUT_STATE.labels(prompt, rollout["state"]).set(1)


def refresh_all(ingest: Ingest) -> None:
    """After (re)assignment: the gauges of this worker's prompts only; a prompt whose partition
    moved to another worker must not keep reporting its last figures from here."""
    for gauge in (
        m.WINDOW_EXAMPLES,
        m.WINDOW_NEW_EXAMPLES,
        m.ROLLING_SCORE,
        *m.GUARD_GAUGES,
        *m.ROLLOUT_GAUGES,
    ):
        gauge.clear()
    for prompt in ingest.windows:
        refresh_window(ingest, prompt)
    for prompt in {*ingest.watches.guards, *ingest.watches.rollouts}:
        refresh_watches(ingest, prompt)
