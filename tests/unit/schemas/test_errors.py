"""One exception family: every error gepa-stream raises on purpose is a GepaStreamError that keeps the
builtin base its callers catch, and the CLI maps the family to exit codes and `error: <message>`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from daemon.admin import KafkaUnavailable, TopicLayoutError
from daemon.cli import EXIT_CONFIG, EXIT_FAILED, app, exit_code
from daemon.compare import CompareFailed
from daemon.jobs.snapshot_reader import SnapshotError
from daemon.kafka_client import UnknownTopic
from daemon.mlflow_bridge import MlflowUnavailable
from daemon.ops.page import BadRequest
from handlers.ingest import UnknownPrompt
from handlers.jobs import NotEnoughData
from handlers.trace_mapping import Unmappable
from optimization.errors import OptimizationFailed
from optimization.model_calls import ModelCallFailed
from optimization.offline.engine import OfflineModelError
from schemas.config import ConfigError
from schemas.errors import GepaStreamError
from schemas.parse import InvalidEvent

FAMILY: list[tuple[type[GepaStreamError], type[Exception], int]] = [
    (ConfigError, ValueError, EXIT_CONFIG),
    (TopicLayoutError, RuntimeError, EXIT_CONFIG),
    (InvalidEvent, ValueError, EXIT_FAILED),
    (OptimizationFailed, RuntimeError, EXIT_FAILED),
    (ModelCallFailed, RuntimeError, EXIT_FAILED),
    (OfflineModelError, RuntimeError, EXIT_FAILED),
    (MlflowUnavailable, RuntimeError, EXIT_FAILED),
    (KafkaUnavailable, RuntimeError, EXIT_FAILED),
    (UnknownTopic, ValueError, EXIT_FAILED),
    (CompareFailed, ValueError, EXIT_FAILED),
    (UnknownPrompt, LookupError, EXIT_FAILED),
    (Unmappable, ValueError, EXIT_FAILED),
    (NotEnoughData, ValueError, EXIT_FAILED),
    (BadRequest, ValueError, EXIT_FAILED),
    (SnapshotError, RuntimeError, EXIT_FAILED),
]


@pytest.mark.parametrize(("error", "builtin", "code"), FAMILY, ids=[e.__name__ for e, _, _ in FAMILY])
def test_every_error_is_of_the_family_keeps_its_builtin_base_and_has_one_exit_code(
    error: type[GepaStreamError], builtin: type[Exception], code: int
) -> None:
    assert issubclass(error, GepaStreamError) and issubclass(error, builtin)
    instance = error("reason", "message") if error is InvalidEvent else error.__new__(error)
    assert exit_code(instance) == code


def test_a_bad_option_exits_2_with_one_error_line_naming_it() -> None:
    result = CliRunner().invoke(app, ["run", "--role", "everything"])
    assert result.exit_code == EXIT_CONFIG
    assert result.output.strip() == "error: --role: use all, ingest or optimizer, not 'everything'"


def test_a_bad_config_exits_2_with_one_error_line_naming_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "gepa-stream.yaml"
    path.write_text("prompts: [{name: a, triggers: {cooldown: soon}}]")
    result = CliRunner().invoke(app, ["run", "--config", str(path)])
    (line,) = result.output.strip().splitlines()
    assert result.exit_code == EXIT_CONFIG
    assert line.startswith(f"error: {path}: ") and "triggers.cooldown" in line


def test_an_unknown_topic_name_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GEPA_STREAM_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["tail", "nonsense-topic-name"])
    assert result.exit_code == EXIT_CONFIG
    assert result.output.startswith("error: TOPIC: unknown topic 'nonsense-topic-name'")


def test_a_message_is_printed_literally_not_as_markup() -> None:
    result = CliRunner().invoke(app, ["run", "--role", "[bold]x[/]"])
    assert result.exit_code == EXIT_CONFIG and "not '[bold]x[/]'" in result.output


def test_an_option_is_named_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GEPA_STREAM_STATE_DIR", str(tmp_path))
    since = CliRunner().invoke(app, ["bridge", "mlflow", "--experiment", "1", "--since", "garbage"])
    interval = CliRunner().invoke(app, ["bridge", "mlflow", "--experiment", "1", "--interval", "often"])
    assert (since.exit_code, interval.exit_code) == (EXIT_CONFIG, EXIT_CONFIG)
    assert (
        since.output.startswith("error: --since: expected an ISO time")
        and "--since: --since" not in since.output
    )
    assert interval.output.startswith("error: --interval: invalid duration 'often'")
