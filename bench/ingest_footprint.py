"""The ingest-only worker's footprint: import time, resident memory after it is ready, and after
its ops page was open for a minute.

    python bench/ingest_footprint.py [--runs 5] [--bootstrap host:port] [--page-seconds 60]

1. Import time: a fresh interpreter imports what `gepa-stream run --role ingest` imports before
   it starts (`daemon.cli`, `daemon.worker`); the median of `--runs` runs, wall clock and the
   process's CPU time (which other load on the machine inflates less), with the heavy libraries
   it must not load (dspy, mlflow, litellm) checked absent. The load average is printed too.
2. RSS: the real `gepa-stream run --role ingest` process (`python -m daemon`) against the
   embedded broker (or `--bootstrap`) and a real `mlflow server` (tests/mlflow_server.py) holding
   the three prompts of its policy (two versions each, `production` on 2, a `final_score` tag),
   given to the worker as GEPA_STREAM_MLFLOW_TRACKING_URI; VmRSS from /proc once /readyz answers
   and 3 s later; then the ops page is opened (one `/ui/api/versions` and `/ui/api/diff`, as a
   click on a prompt does) and its state (`/ui/api/state`) refreshed every 2 s for
   `--page-seconds`, as the page does; VmRSS and the peak (VmHWM) after that. The page's live
   versions are checked against the registry (a page that never read MLflow would be light too).
   Whether the worker imported MLflow (or DSPy, litellm) is read from its own import log: it runs
   with PYTHONPROFILEIMPORTTIME=1, which writes a line to stderr for every module it loads, at any
   time (RSS is not measurably changed by it).

Targets (issue 13): import <= 0.5 s, RSS after ready <= 100 MB. Issue 20: RSS after the ops page
was open for a minute <= 120 MB. For what holds the import time,
run `python -X importtime -c "import daemon.cli, daemon.worker" 2>&1 | sort -t'|' -k2 -n | tail`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.daemon_harness import Daemon  # noqa: E402
from tests.mlflow_server import MlflowServer  # noqa: E402

TARGET_IMPORT_S = 0.5
TARGET_RSS_MB = 100.0
TARGET_PAGE_RSS_MB = 120.0
HEAVY = ("dspy", "mlflow", "litellm")
_IMPORT_PROBE = """
import sys, time
started, cpu = time.perf_counter(), time.process_time()
import daemon.cli, daemon.worker
print(time.perf_counter() - started, time.process_time() - cpu, [m for m in {heavy!r} if m in sys.modules])
"""
PROMPTS = [f"footprint_{c}" for c in "abc"]
POLICY = "prompts:\n" + "".join(
    f"  - {{name: {name}, task_model: offline/support-router}}\n" for name in PROMPTS
)


def import_seconds(runs: int) -> tuple[float, float, list[str]]:
    """Median wall and CPU time of the ingest worker's imports in fresh interpreters, and any heavy
    library seen."""
    times, cpu_times, heavy = [], [], set()
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE.format(heavy=HEAVY)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split(maxsplit=2)
        times.append(float(out[0]))
        cpu_times.append(float(out[1]))
        heavy.update(json.loads(out[2].replace("'", '"')))
    return statistics.median(times), statistics.median(cpu_times), sorted(heavy)


def rss_mb(pid: int) -> float:
    """Resident set size of a process (VmRSS), in MB."""
    return proc_status_mb(pid, "VmRSS")


def proc_status_mb(pid: int, field: str) -> float:
    """A memory field of /proc/<pid>/status (VmRSS, VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def register_prompts(tracking_uri: str) -> None:
    """Each policy prompt: v1, v2 (tagged with a held-out score), `production` on v2."""
    import mlflow

    from optimization.score_tag import TAG_FINAL_SCORE
    from schemas.events import PRODUCTION_ALIAS

    mlflow.set_tracking_uri(tracking_uri)
    for name in PROMPTS:
        mlflow.genai.register_prompt(name=name, template="Route this ticket: {{ticket}}")
        mlflow.genai.register_prompt(
            name=name,
            template="Route this support ticket to a team: {{ticket}}",
            tags={TAG_FINAL_SCORE: "0.75"},
        )
        mlflow.genai.set_prompt_alias(name, PRODUCTION_ALIAS, 2)


@dataclass
class Footprint:
    at_ready: float
    settled: float
    after_page: float
    peak: float
    state_requests: int
    live_ok: bool
    live_seen: str
    heavy_imported: list[str]


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as reply:
        return json.loads(reply.read())


def imported_heavy(log: Path) -> list[str]:
    """The heavy top-level packages in the worker's import log (PYTHONPROFILEIMPORTTIME lines end
    in `| <module name>`, indented by nesting)."""
    seen = set()
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("import time:"):
            module = line.rsplit("|", 1)[-1].strip()
            if module.split(".")[0] in HEAVY:
                seen.add(module.split(".")[0])
    return sorted(seen)


def worker_rss(bootstrap: str, tracking_uri: str, workdir: Path, page_seconds: float) -> Footprint:
    """A real ingest worker: RSS at ready, 3 s later, and after its ops page was open `page_seconds`."""
    config = workdir / "gepa-stream.yaml"
    config.write_text(POLICY)
    env = {"GEPA_STREAM_MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPROFILEIMPORTTIME": "1"}
    daemon = Daemon(bootstrap, config, workdir, env=env).launch("ingest")
    try:
        daemon.wait_ready(timeout=180)
        assert daemon.process is not None
        pid = daemon.process.pid
        at_ready = rss_mb(pid)
        time.sleep(3)
        settled = rss_mb(pid)
        _get(daemon.port, "/ui/api/state")  # the page opens
        _get(daemon.port, f"/ui/api/versions?name={PROMPTS[0]}")  # a click on a prompt
        _get(daemon.port, f"/ui/api/diff?name={PROMPTS[0]}&a=1&b=2")
        requests, state = 1, {}
        deadline = time.monotonic() + page_seconds
        while time.monotonic() < deadline:
            time.sleep(2)
            state = _get(daemon.port, "/ui/api/state")
            requests += 1
        live = {entry["name"]: entry for p in state.get("prompts", []) for entry in p["live"]}
        live_ok = all(
            live.get(name, {}).get("version") == 2 and live[name].get("score") == 0.75 for name in PROMPTS
        )
        seen = ", ".join(
            f"{n} v{e.get('version')} score {e.get('score')}"
            + (f" ERROR {e['error']}" if e.get("error") else "")
            for n, e in sorted(live.items())
        )
        return Footprint(
            at_ready,
            settled,
            rss_mb(pid),
            proc_status_mb(pid, "VmHWM"),
            requests,
            live_ok,
            seen,
            imported_heavy(daemon.log),
        )
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bootstrap", default=os.environ.get("GEPA_STREAM_BENCH_BOOTSTRAP"))
    parser.add_argument("--page-seconds", type=float, default=60.0)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the worker gets the server from its own setting

    load = os.getloadavg()[0]
    seconds, cpu_seconds, heavy = import_seconds(args.runs)
    from daemon.broker import EmbeddedBroker

    broker = None
    if not args.bootstrap:
        broker = EmbeddedBroker().start()
        args.bootstrap = broker.bootstrap_servers
    try:
        with tempfile.TemporaryDirectory() as workdir:
            server = MlflowServer(Path(workdir)).start().wait_ready()
            try:
                register_prompts(server.uri)
                footprint = worker_rss(args.bootstrap, server.uri, Path(workdir), args.page_seconds)
            finally:
                server.stop()
    finally:
        if broker is not None:
            broker.stop()

    def verdict(ok: bool) -> str:
        return "ok" if ok else "OVER TARGET"

    rows = [
        (f"imports, wall (median of {args.runs})", seconds, "s", TARGET_IMPORT_S),
        (f"imports, CPU (median of {args.runs})", cpu_seconds, "s", TARGET_IMPORT_S),
        ("RSS at /readyz", footprint.at_ready, "MB", TARGET_RSS_MB),
        ("RSS 3 s after ready", footprint.settled, "MB", TARGET_RSS_MB),
        (f"RSS, ops page open {args.page_seconds:g} s", footprint.after_page, "MB", TARGET_PAGE_RSS_MB),
        ("peak RSS (VmHWM) by then", footprint.peak, "MB", TARGET_PAGE_RSS_MB),
    ]
    print(
        f"ingest-only worker (load average {load:.1f}; heavy libraries imported: {', '.join(heavy) or 'none'})"
    )
    for name, value, unit, target in rows:
        print(f"  {name:<32} {value:8.3f} {unit:<2}  target <= {target:g} {unit}  {verdict(value <= target)}")
    print(
        f"  ops page: {footprint.state_requests} state requests, live versions from the registry "
        f"{'ok' if footprint.live_ok else 'WRONG'} ({footprint.live_seen})"
    )
    print(
        "  worker imported (its import log): "
        f"{', '.join(footprint.heavy_imported) or 'no dspy, mlflow or litellm'}"
    )


if __name__ == "__main__":
    main()
