"""`gepa-stream demo` (behind `make demo`) runs the whole loop and exits 0 — twice in a row; the
second run with `--keep-open` serves the ops page after its summary until Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

DEMO = [sys.executable, "-m", "daemon", "demo"]


def _assert_a_promoting_run(run: int, code: int | None, stdout: str, stderr: str) -> None:
    assert code == 0, f"run {run}:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    assert "promoted" in stdout
    assert f"candidate v{2 * run}" in stdout


def test_demo_runs_twice_and_keeps_its_ops_page_open_on_request(tmp_path: Path) -> None:
    first = subprocess.run(DEMO, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    _assert_a_promoting_run(1, first.returncode, first.stdout, first.stderr)

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}  # whole lines, as they are printed
    demo = subprocess.Popen(
        [*DEMO, "--keep-open"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(demo.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 600
        while not any("keeps running" in line for line in lines):
            assert demo.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.5)
        url = re.search(
            r"http://127\.0\.0\.1:\d+/ui", next(line for line in lines if "keeps running" in line)
        )
        assert url is not None
        with urllib.request.urlopen(url.group(0), timeout=10) as page:  # still served after the summary
            assert page.status == 200 and "gepa-stream" in page.read().decode()
        demo.send_signal(signal.SIGINT)
        code = demo.wait(60)
    finally:
        if demo.poll() is None:
            demo.kill()
    reader.join(10)
    _assert_a_promoting_run(2, code, "".join(lines), demo.stderr.read())  # type: ignore[union-attr]
    assert (tmp_path / ".gepa-stream" / "mlflow.db").is_file()
