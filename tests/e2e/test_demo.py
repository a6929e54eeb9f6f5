"""`gepa-stream demo` (behind `make demo`) runs the whole loop and exits 0 — twice in a row; the
second run with `--keep-open` serves the ops page after its summary until Ctrl-C.

Each run's candidate goes through the demo's staged rollout to `production`. This cannot flake
on timing: the offline models are deterministic, so the gate's candidate (every run so far
held-out ~0.05 -> 1.00) answers every ticket right while the seed in production answers only
its "crash" tickets (~7 %); every canary rating is 1 and production's mean is ~0.05, so the
rule's lower bound clears -margin as soon as each arm has the stage's 10 new ratings and its
upper bound never falls below 0. How many tickets a stage takes, and when, varies from run to
run; the sequence of decisions does not (an advance per stage, then `promoted`). A candidate
the gate did not pass would fail the existing `promoted` assertion just as before.
"""

from __future__ import annotations

import json
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

from tests.daemon_harness import QUICK_JOIN_ENV

pytestmark = pytest.mark.e2e

DEMO = [sys.executable, "-m", "daemon", "demo"]
DEMO_ENV = {**os.environ, **QUICK_JOIN_ENV}
"""The demo's daemon inherits its environment: its two group joins on the embedded broker take
2 s each instead of 5 (tests/daemon_harness.py)."""


def _assert_a_promoting_run(run: int, code: int | None, stdout: str, stderr: str, workdir: Path) -> None:
    """Exit 0; run `run` registered the seed as version 2 run - 1 and its candidate as 2 run, which
    the staged rollout (stages 20 %, 50 %) took to `production`: the demo's promotion events are
    canary_started -> canary_advanced -> promoted, and the registry agrees."""
    assert code == 0, f"run {run}:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    assert "promoted" in stdout
    seed, candidate = 2 * run - 1, 2 * run
    assert f"candidate v{candidate}" in stdout
    state = workdir / ".gepa-stream"
    events = [json.loads(line)["data"] for line in (state / "promotions.jsonl").read_text().splitlines()]
    assert [e["decision"] for e in events] == ["canary_started", "canary_advanced", "promoted"], events
    started, advanced, promoted = events
    assert (started["from_version"], started["to_version"], started["traffic_share"]) == (
        seed,
        candidate,
        0.2,
    )
    assert (advanced["to_version"], advanced["traffic_share"]) == (candidate, 0.5)
    assert (promoted["to_version"], promoted["traffic_share"]) == (candidate, 1.0)
    assert "staged rollout: canary version" in promoted["reason"]  # the rule's verdict, on live ratings
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    assert int(client.get_prompt_version_by_alias("support_router", "production").version) == candidate
    with pytest.raises(MlflowException):  # the rollout is over: no canary left to route to
        client.get_prompt_version_by_alias("support_router", "canary")


def _kept_open(workdir: Path, stderr: int) -> tuple[subprocess.Popen[str], list[str], threading.Thread]:
    """`demo --keep-open` started in `workdir`, and its stdout read line by line into a list."""
    demo = subprocess.Popen(
        [*DEMO, "--keep-open"],
        cwd=workdir,
        env={**DEMO_ENV, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},  # whole lines, as they are printed
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(demo.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    return demo, lines, reader


def test_demo_runs_twice_and_keeps_its_ops_page_open_on_request(tmp_path: Path) -> None:
    first = subprocess.run(DEMO, cwd=tmp_path, env=DEMO_ENV, capture_output=True, text=True, timeout=600)
    _assert_a_promoting_run(1, first.returncode, first.stdout, first.stderr, tmp_path)

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
    _assert_a_promoting_run(2, code, "".join(lines), demo.stderr.read(), tmp_path)  # type: ignore[union-attr]
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
