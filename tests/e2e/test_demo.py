"""`gepa-stream demo` (behind `make demo`) runs the whole loop and exits 0 — twice in a row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_twice(tmp_path: Path) -> None:
    for run in (1, 2):
        result = subprocess.run(
            [sys.executable, "-m", "daemon", "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"run {run}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert "promoted" in result.stdout
        assert f"candidate v{2 * run}" in result.stdout
    assert (tmp_path / ".gepa-stream" / "mlflow.db").is_file()
