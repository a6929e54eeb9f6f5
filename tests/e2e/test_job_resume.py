"""A job process killed from outside (OOM killer, operator) is resumed from its run directory,
and every side effect it had done is announced once, with the lineage of its first attempt."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from daemon.jobs.execute import HOLD_AT_VAR
from tests.daemon_harness import QUICK_JOIN_ENV, Daemon, produce, read_topic
from tests.e2e.loop_helpers import register_seed, sme_feed, wait_for_events, write_policies

pytestmark = pytest.mark.e2e

# prompt -> the stage its job process is SIGKILLed at on its first attempt
KILLED_AT = {
    "kill_plan": "plan",  # before the split is frozen
    "kill_gepa": "optimize",  # mid-GEPA, after its first checkpoint
    "kill_register": "register",  # before the candidate is registered
    "kill_gate": "gate",  # registered in MLflow, nothing announced yet
    "kill_alias": "promote",  # production already moved to the candidate
    "kill_last": "gate",  # registered, and no attempt left (max_attempts: 1): fails, announcing the version
    # mid-GEPA, and its state file then found truncated: attempt 2 fails on it, attempt 3 rebuilds
    "kill_gepa_corrupt": "optimize",
}
RESUMED = [name for name in KILLED_AT if name not in ("kill_last", "kill_gepa_corrupt")]
KILLED_MID_GEPA = ("kill_gepa", "kill_gepa_corrupt")  # not held at a stage: killed once GEPA saved its state
GEPA_STATE = "gepa_state.bin"


def _job_dirs(state: Path) -> dict[str, Path]:
    """prompt -> its job's run directory (once the runner has written it)."""
    found = {}
    for spec in (state / "jobs").glob("*/job.json"):
        found[json.loads(spec.read_text())["prompt"]] = spec.parent
    return found


def _progress(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def _ready_to_kill(prompt: str, run_dir: Path) -> int | None:
    """The job process's pid once it stands where this prompt's kill belongs."""
    progress = _progress(run_dir)
    if progress.get("stage") != KILLED_AT[prompt] or not progress.get("pid"):
        return None
    if prompt in KILLED_MID_GEPA:  # GEPA running, with state on disk to resume from
        return progress["pid"] if (run_dir / "gepa" / GEPA_STATE).exists() else None
    return progress["pid"] if progress.get("detail", "").startswith("held for a crash drill") else None


def test_job_processes_killed_at_each_stage_resume_and_announce_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings: dict[str, dict[str, Any]] = {name: {} for name in KILLED_AT}
    settings["kill_gepa"] = {"task_model": "offline/support-router?latency_ms=40"}
    settings["kill_gepa_corrupt"] = {"task_model": "offline/support-router?latency_ms=40"}
    settings["kill_last"] = {"attempts": 1}
    holds = ",".join(f"{name}={stage}" for name, stage in KILLED_AT.items() if name not in KILLED_MID_GEPA)
    daemon = Daemon(
        kafka_bootstrap,
        write_policies(tmp_path / "policy.yaml", settings),
        tmp_path,
        env={**QUICK_JOIN_ENV, "GEPA_STREAM_MAX_CONCURRENT_JOBS": str(len(KILLED_AT)), HOLD_AT_VAR: holds},
    )
    tracking = daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"]
    for name in KILLED_AT:
        register_seed(tracking, name)
    daemon.start()
    try:
        produce(kafka_bootstrap, [record for name in KILLED_AT for record in sme_feed(daemon.topics, name)])
        killed: dict[str, int] = {}
        deadline = time.monotonic() + 300
        while len(killed) < len(KILLED_AT):
            assert daemon.process is not None and daemon.process.poll() is None, daemon.log.read_text()[
                -4000:
            ]
            assert time.monotonic() < deadline, (
                f"jobs never reached their kill stage: { {p: _progress(d) for p, d in _job_dirs(tmp_path / 'state').items()} }"
            )
            for prompt, run_dir in _job_dirs(tmp_path / "state").items():
                pid = None if prompt in killed else _ready_to_kill(prompt, run_dir)
                if pid is not None:
                    assert not (run_dir / "result.json").exists()
                    os.kill(pid, signal.SIGKILL)
                    killed[prompt] = pid
                    if prompt == "kill_gepa_corrupt":  # the next attempt is still starting (~6 s of imports)
                        state_file = run_dir / "gepa" / GEPA_STATE
                        state_file.write_bytes(state_file.read_bytes()[:100])
            time.sleep(0.05)
        optimizations = wait_for_events(
            daemon,
            daemon.topics.optimizations,
            lambda evs: (
                len({e.data.prompt for e in evs if e.data.status in ("completed", "failed")})
                == len(KILLED_AT)
            ),
            fail_on_failed_job=False,
        )
        registered = read_topic(kafka_bootstrap, daemon.topics.prompts)
        promotions = read_topic(kafka_bootstrap, daemon.topics.promotions)
        status_jobs = daemon.status().get("jobs")
    finally:
        daemon.stop()
    assert status_jobs == {}
    mlflow.set_tracking_uri(tracking)
    client = MlflowClient()
    for prompt in RESUMED:
        stage = KILLED_AT[prompt]
        mine = [e.data for e in optimizations if e.data.prompt == prompt]
        [completed] = [d for d in mine if d.status == "completed"]
        request_id = completed.request_id
        assert [d.status for d in mine if d.status in ("failed", "completed")] == ["completed"], (
            prompt,
            mine,
        )
        [retrying] = [d for d in mine if d.status == "retrying"]
        assert (retrying.attempt, retrying.max_attempts) == (1, 3) and "SIGKILL" in (retrying.error or ""), (
            prompt,
            retrying,
        )
        ledger = json.loads((_job_dirs(tmp_path / "state")[prompt] / "attempts.json").read_text())["attempts"]
        assert [a["pid"] for a in ledger][0] == killed[prompt] and len(ledger) == 2, (prompt, ledger)

        versions = {int(v.version): v for v in client.search_prompt_versions(prompt)}
        carrying = [v for v in versions.values() if v.tags.get("gepa_stream.request_id") == request_id]
        assert len(carrying) == 1 and set(versions) == {1, 2}, (prompt, stage, sorted(versions))
        tags = carrying[0].tags

        [announced] = [e.data for e in registered if e.data.prompt == prompt]
        assert (announced.version, announced.parent_version, announced.request_id) == (2, 1, request_id), (
            prompt,
            announced,
        )
        assert (announced.baseline_score, announced.candidate_score) == (
            float(tags["initial_score"]),
            float(tags["final_score"]),
        )
        assert tags["gepa_stream.parent_version"] == "1"

        [promotion] = [e.data for e in promotions if e.data.prompt == prompt]
        assert (promotion.decision, promotion.from_version, promotion.to_version) == ("promoted", 1, 2), (
            prompt,
            promotion,
        )
        assert (promotion.baseline_score, promotion.candidate_score) == (
            announced.baseline_score,
            announced.candidate_score,
        )
        assert mlflow.genai.load_prompt(f"prompts:/{prompt}@production", cache_ttl_seconds=0).version == 2
        assert versions[2].tags.get("gepa_stream.previous_production") == "1"
        assert (completed.version, completed.baseline_score, completed.candidate_score) == (
            2,
            announced.baseline_score,
            announced.candidate_score,
        )

    # a kill, then a failure on what it left: set aside, rebuilt, completed once, as one job would
    mine = [e.data for e in optimizations if e.data.prompt == "kill_gepa_corrupt"]
    [completed] = [d for d in mine if d.status in ("failed", "completed")]
    assert completed.status == "completed", mine
    retrying = [d for d in mine if d.status == "retrying"]
    assert [(d.attempt, "SIGKILL" in (d.error or "")) for d in retrying] == [(1, True), (2, False)], retrying
    run_dir = _job_dirs(tmp_path / "state")["kill_gepa_corrupt"]
    assert (run_dir / "gepa.attempt-2" / GEPA_STATE).exists() and (run_dir / "gepa" / GEPA_STATE).exists()
    tagged = [
        int(v.version)
        for v in client.search_prompt_versions("kill_gepa_corrupt")
        if v.tags.get("gepa_stream.request_id") == completed.request_id
    ]
    assert tagged == [2] and [
        (e.data.decision, e.data.from_version, e.data.to_version)
        for e in promotions
        if e.data.prompt == "kill_gepa_corrupt"
    ] == [("promoted", 1, 2)]

    # no attempt left: `failed` names the attempt and its cause, and the version it registered is announced
    mine = [e.data for e in optimizations if e.data.prompt == "kill_last"]
    [failed] = [d for d in mine if d.status in ("failed", "completed")]
    assert failed.status == "failed" and not [d for d in mine if d.status == "retrying"], mine
    assert "no result after 1 attempt (budget.max_attempts)" in (
        failed.error or ""
    ) and "attempt 1: the job process killed by SIGKILL" in (failed.error or ""), failed.error
    [version] = [
        v
        for v in client.search_prompt_versions("kill_last")
        if v.tags.get("gepa_stream.request_id") == failed.request_id
    ]
    [announced] = [e.data for e in registered if e.data.prompt == "kill_last"]
    assert (announced.version, announced.parent_version, failed.version) == (
        int(version.version),
        1,
        int(version.version),
    )
    assert [e for e in promotions if e.data.prompt == "kill_last"] == []
    assert mlflow.genai.load_prompt("prompts:/kill_last@production", cache_ttl_seconds=0).version == 1
