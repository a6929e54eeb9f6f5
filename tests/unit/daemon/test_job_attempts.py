"""The attempts ledger of a run directory, and how a job tells an MLflow outage from other failures."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pytest
import urllib3
from mlflow.exceptions import MlflowException

from daemon.broker import free_port
from daemon.jobs.attempts import DAEMON_DIED, Attempts, describe_exit
from daemon.jobs.driver import JobState
from daemon.jobs.execute import _attempt_failed
from daemon.jobs.outage import (
    ClientRetryWatch,
    calls_mlflow,
    mlflow_outage,
    tracking_answers,
    unanswered_request,
)
from daemon.jobs.run_dir import RunDir
from daemon.jobs.spec import JobSpec
from handlers.jobs import NotEnoughData
from optimization import OptimizationFailed
from optimization.model_calls import ModelCallFailed
from schemas.config import PromptPolicy


def test_the_ledger_counts_attempts_across_restarts(tmp_path: Path) -> None:
    attempts = Attempts(RunDir(tmp_path))
    first = attempts.begin()
    attempts.update(first, pid=123)
    attempts.end(first, "the job process killed by SIGKILL without a result")
    stopped = attempts.begin()
    attempts.end(stopped, "the daemon stopped it on shutdown", counted=False)
    attempts.begin()  # the daemon dies while this one runs

    reopened = Attempts(RunDir(tmp_path))
    assert [a.number for a in reopened.ledger.attempts] == [1, 2, 3]
    assert reopened.used == 2, "a clean shutdown does not use an attempt; a daemon crash does"
    assert reopened.ledger.attempts[0].pid == 123
    assert (
        reopened.last is not None and reopened.last.cause == DAEMON_DIED and reopened.last.ended is not None
    )


def _run_dir_after(tmp_path: Path, first_cause: str | None) -> RunDir:
    """A run directory whose attempt 1 ended with `first_cause`, holding GEPA's state and the scratch store."""
    run = RunDir(tmp_path)
    attempts = Attempts(run)
    attempts.end(attempts.begin(), first_cause)
    attempts.begin()
    run.gepa_dir.mkdir()
    (run.gepa_dir / "gepa_state.bin").write_bytes(b"half")
    run.scratch_db.write_bytes(b"half")
    return run


SPEC = JobSpec(
    request_id="r1",
    prompt="p",
    policy=PromptPolicy.model_validate({"name": "p", "input_keys": ["q"]}),
    tracking_uri="sqlite:///unused.db",
    window_size=10,
)
KILLED = "the job process killed by SIGKILL without a result"


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("table assessments already exists"),
        OptimizationFailed("optimization run failed", EOFError()),
    ],
    ids=["unexpected", "GEPA wrapping an unexpected error"],
)
def test_an_undecided_failure_after_a_kill_is_resumable_with_its_working_state_set_aside(
    tmp_path: Path, error: Exception
) -> None:
    run = _run_dir_after(tmp_path, KILLED)
    result = _attempt_failed(run, error, SPEC, 2)
    assert result.resumable and not result.final and result.status == "failed"
    assert not run.gepa_dir.exists() and not run.scratch_db.exists()
    assert (tmp_path / "gepa.attempt-2" / "gepa_state.bin").read_bytes() == b"half"
    assert (tmp_path / "scratch-mlflow.db.attempt-2").read_bytes() == b"half"


@pytest.mark.parametrize(
    ("first_cause", "error"),
    [
        (None, RuntimeError("a bug")),  # no kill before: the error is the job's own
        (KILLED, NotEnoughData("3 examples")),
        (KILLED, ModelCallFailed("task", "openai/m", "5 consecutive 503 responses")),
        (KILLED, OptimizationFailed("optimization exceeded its wall-time limit of 60s")),
        (KILLED, ValueError("bad scorer")),
    ],
)
def test_a_decided_failure_or_one_without_a_kill_before_is_final(
    tmp_path: Path, first_cause: str | None, error: Exception
) -> None:
    run = _run_dir_after(tmp_path, first_cause)
    result = _attempt_failed(run, error, SPEC, 2)
    assert result.final and not result.resumable
    assert run.gepa_dir.exists() and run.scratch_db.exists()


def test_exit_codes_are_described() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exited with code 1"


def _mlflow_gave_up(url: str, monkeypatch: pytest.MonkeyPatch) -> MlflowException:
    """What the real MLflow REST client raises once its retries (none here) are exhausted."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException) as raised:
        mlflow.MlflowClient(url).search_prompt_versions("p")
    return raised.value


def test_a_failed_mlflow_request_is_an_outage_only_for_its_tracking_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    gave_up = _mlflow_gave_up(down, monkeypatch)
    assert unanswered_request(gave_up, down)
    assert not unanswered_request(gave_up, f"http://127.0.0.1:{free_port()}"), "another server"
    try:
        raise ValueError("scorers need expectations") from gave_up
    except ValueError as wrapped:
        assert unanswered_request(wrapped, down), "the cause chain is searched"
    assert mlflow_outage(ValueError("anything"), down), "a server that does not answer now is an outage"
    assert not mlflow_outage(gave_up, "sqlite:///local.db"), "a local store has no outage"
    assert tracking_answers("sqlite:///local.db") and not tracking_answers(down, timeout=1.0)


def test_a_call_of_mlflow_is_one_of_its_api_on_its_server() -> None:
    uri = "http://mlflow.internal:5000/prefix"
    assert calls_mlflow(uri, "http://mlflow.internal:5000/prefix/api/2.0/mlflow/runs/get?run_id=1")
    assert not calls_mlflow(uri, "http://mlflow.internal:5001/prefix/api/2.0/mlflow/runs/get"), "another port"
    assert not calls_mlflow(uri, "http://mlflow.internal:5000/prefix/health"), "not its API"
    assert calls_mlflow(uri, "/prefix/api/2.0/mlflow/runs/get", host="mlflow.internal"), "a path on its host"
    assert not calls_mlflow(uri, "/prefix/api/2.0/mlflow/runs/get", host="judge.internal")


def test_the_client_retry_watch_reports_mlflow_retries_only() -> None:
    """Real urllib3 retries (connection refused): the watch reads urllib3's record, not its text."""
    port = free_port()
    lines: list[str] = []
    watch = ClientRetryWatch(f"http://127.0.0.1:{port}", lines.append, interval_s=60)
    logger = logging.getLogger("urllib3.connectionpool")
    logger.addHandler(watch)
    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, retries=urllib3.Retry(1, backoff_factor=0))
    try:
        for path in ("/api/2.0/mlflow/runs/get", "/v1/chat/completions", "/api/2.0/mlflow/runs/get"):
            with pytest.raises(urllib3.exceptions.MaxRetryError):
                pool.urlopen("GET", path)
        # urllib3's text without urllib3's record attribute: not a retry the watch counts
        logger.warning("Retrying (%r) after connection broken by '%r': %s", "r", "e", "/api/2.0/mlflow/x")
    finally:
        logger.removeHandler(watch)
        pool.close()
    assert len(lines) == 2 and "has not answered since" in lines[-1] and lines[-1].endswith("(retry 2)"), (
        lines
    )


@pytest.mark.parametrize(
    ("state", "client", "line"),
    [
        (JobState(attempt=0, max_attempts=3), "", "waiting for another process to release the run directory"),
        (
            JobState(attempt=0, max_attempts=3, holding_run_dir=True),
            "",
            "waiting for a job slot, attempt 1 of 3",
        ),
        (
            JobState(attempt=1, max_attempts=3, holding_run_dir=True, running=True),
            "",
            "running, attempt 1 of 3",
        ),
        (
            JobState(attempt=1, max_attempts=3, holding_run_dir=True, running=True),
            "MLflow at X has not answered",
            "running, attempt 1 of 3; MLflow at X has not answered",
        ),
        (
            JobState(attempt=1, max_attempts=3, waiting_since=datetime(2026, 11, 26, 14, 3, 12, tzinfo=UTC)),
            "",
            "waiting for MLflow since 2026-11-26T14:03:12Z, attempt 2 of 3",
        ),
    ],
)
def test_status_lines(state: JobState, client: str, line: str) -> None:
    assert state.describe(client) == line


def test_a_command_while_mlflow_is_down_waits_bounded_and_never_crashes_the_runner(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """A rollback arriving during an MLflow outage waits for MLflow (here 2 s), then is skipped
    with an error in the log; it returns (the runner then releases its offset), never raises."""
    from daemon.jobs.commands import Commands
    from schemas.config import PolicyFile
    from schemas.events import CommandData, CommandEvent, PromotionEvent

    down = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    policies = PolicyFile.model_validate(
        {"prompts": [{"name": "router", "budget": {"max_outage_wait": "2s"}}]}
    )
    announced: list[str] = []

    async def announce(event: PromotionEvent, *, program: str) -> None:
        announced.append(event.id)

    commands = Commands({p.name: p for p in policies.prompts}, down, announce, "gepa-stream/test")
    event = CommandEvent.build(CommandData(prompt="router", action="rollback", requested_by="ops"))
    started = time.monotonic()
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(
        down
    )  # as the daemon does for its commands (MLFLOW_TRACKING_URI, daemon/worker.py)
    try:
        with caplog.at_level(logging.WARNING, logger="gepa_stream.jobs"):
            asyncio.run(commands.apply_in_order(event))
    finally:
        mlflow.set_tracking_uri(previous)
    assert time.monotonic() - started < 60 and announced == []
    messages = [r.getMessage() for r in caplog.records]
    assert any("waits for MLflow" in m for m in messages) and any(
        "did not answer within max_outage_wait" in m for m in messages
    ), messages


def _probes(monkeypatch: pytest.MonkeyPatch, answer_from: int | None) -> list[int]:
    """Replace the `/health` probe: it answers from probe `answer_from` on (None: never)."""
    from daemon.jobs import outage

    probes: list[int] = []

    def probe(uri: str, timeout: float = 5.0) -> bool:
        probes.append(len(probes) + 1)
        return answer_from is not None and len(probes) >= answer_from

    monkeypatch.setattr(outage, "tracking_answers", probe)
    return probes


def test_mlflow_is_probed_until_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.jobs.outage import answers_again

    probes = _probes(monkeypatch, answer_from=3)
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    assert asyncio.run(answers_again("http://mlflow.invalid", deadline)) is True and probes == [1, 2, 3]


def test_a_probe_past_the_deadline_that_fails_ends_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.jobs.outage import answers_again

    probes = _probes(monkeypatch, answer_from=None)
    deadline = datetime.now(UTC) - timedelta(seconds=1)
    assert asyncio.run(answers_again("http://mlflow.invalid", deadline)) is False and probes == [1]
