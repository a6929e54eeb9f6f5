"""A watch step's writes: its votes always, its spec only when it changed since it was last
staged, its gauges once a batch (bench/ingest.py section j: per step, those cost a watched
prompt most of its ingest rate)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from daemon.app import build_faust_app
from daemon.ingest_agent import IngestAgent
from daemon.settings import Settings
from handlers.guard import GuardSpec, Vote
from handlers.rollout import RolloutSpec
from handlers.stored_json import stored_json
from handlers.watches import WatchStep, vote_key
from schemas.config import PolicyFile, PromotionPolicy


def _staged(agent: IngestAgent, table: str) -> dict[bytes, bytes | None]:
    return {key: write.value for key, write in agent.writes._writes.get(table, {}).items()}


def test_an_unchanged_spec_is_staged_once_and_a_changed_one_again(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    agent = IngestAgent(settings, PolicyFile(prompts=[]), build_faust_app(settings))
    specs, votes = (t.name for t in agent.watch_tables["rollout"])
    spec = RolloutSpec.start("p1", 100.0, 2, 1, PromotionPolicy())
    vote = Vote("t1", "sme", 2, 1.0)
    agent._stage_watch(0, WatchStep("rollout", "p", spec, puts=[(vote_key("p", "t1", "sme"), vote.encode())]))
    assert _staged(agent, specs) == {b"p": spec.encode()}
    agent.writes._writes.clear()  # as after a flush

    second = Vote("t2", "sme", 1, 0.0)
    agent._stage_watch(
        0, WatchStep("rollout", "p", spec, puts=[(vote_key("p", "t2", "sme"), second.encode())])
    )
    assert _staged(agent, specs) == {}  # the spec as staged before: only the vote
    assert _staged(agent, votes) == {vote_key("p", "t2", "sme"): second.encode()}

    spec.pending = "advance@0"  # a verdict changes it: staged again
    agent._stage_watch(0, WatchStep("rollout", "p", spec))
    assert _staged(agent, specs) == {b"p": spec.encode()}
    assert agent._watched == {"p"}  # its gauges wait for the end of the batch


def test_watch_records_are_the_bytes_asdict_gave() -> None:
    """Vote and spec records are written straight from the dataclass: the same bytes the tables
    already hold (asdict first), so stored watches restore as before."""
    rollout = RolloutSpec.start("p1", 100.5, 2, 1, PromotionPolicy())
    rollout.pending, rollout.reason = "abort@1", "worse"
    for record in (Vote("t1", "sme", 2, 0.75), GuardSpec("p2", 3.25, 4, None, "auto"), rollout):
        assert record.encode() == stored_json(asdict(record))
        assert type(record).decode(record.encode()) == record
