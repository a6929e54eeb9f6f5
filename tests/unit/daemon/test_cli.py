"""The installed `gepa-stream` console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def _gepa_stream() -> list[str]:
    script = Path(sys.executable).parent / "gepa-stream"
    return [str(script)] if script.exists() else [shutil.which("gepa-stream") or "gepa-stream"]


def test_help_lists_the_commands() -> None:
    result = subprocess.run([*_gepa_stream(), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("run", "schemas", "broker"):
        assert command in result.stdout


def test_schemas_command_writes_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [*_gepa_stream(), "schemas", "--out", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "gepa.trace.v1.schema.json").is_file()
