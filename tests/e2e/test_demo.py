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


def _kept_open(workdir: Path, stderr: int) -> tuple[subprocess.Popen[str], list[str], threading.Thread]:
    """`demo --keep-open` started in `workdir`, and its stdout read line by line into a list."""
    demo = subprocess.Popen(
        [*DEMO, "--keep-open"],
        cwd=workdir,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},  # whole lines, as they are printed
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(demo.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    return demo, lines, reader


def test_demo_runs_twice_and_keeps_its_ops_page_open_on_request(tmp_path: Path) -> None:
    first = subprocess.run(DEMO, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    _assert_a_promoting_run(1, first.returncode, first.stdout, first.stderr)

    demo, lines, reader = _kept_open(tmp_path, subprocess.PIPE)
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


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_demo_stopped_by_a_signal_leaves_no_process_behind(tmp_path: Path, stop: signal.Signals) -> None:
    """As a process manager, `timeout` or a closed terminal stops it: the signal to the demo alone,
    once its daemon answers; the demo exits 128 + the signal, its daemon and broker gone."""
    demo, lines, reader = _kept_open(tmp_path, subprocess.STDOUT)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 180
        ready = None
        while ready is None:
            assert demo.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            page = next(
                (m for line in lines if (m := re.search(r"http://127\.0\.0\.1:(\d+)/ui", line))), None
            )
            if page is not None:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{page.group(1)}/readyz", timeout=2
                    ) as answer:
                        ready = answer.status == 200
                except OSError:
                    pass
            time.sleep(0.3)
        children = _descendants(demo.pid)
        assert len(children) >= 2, children  # the broker and the daemon at least
        demo.send_signal(stop)
        code = demo.wait(60)
    finally:
        if demo.poll() is None:
            demo.kill()
    reader.join(10)
    assert code == 128 + stop, "".join(lines)[-3000:]
    assert [pid for pid in children if _running(pid)] == []
