"""`gepa-stream run` against a broker that does not answer: one clear line, no traceback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from daemon.broker import free_port
from daemon.cli import app


def test_run_against_an_unreachable_broker_says_so_without_traceback(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GEPA_STREAM_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("GEPA_STREAM_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "gepa-stream.yaml"
    path.write_text("prompts: [{name: a}]")
    result = CliRunner().invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 1
    assert "error: cannot reach Kafka at 127.0.0.1:" in result.output and "Traceback" not in result.output
