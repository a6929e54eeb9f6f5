"""The ingest-only worker's footprint: import time and resident memory after it is ready.

    python bench/ingest_footprint.py [--runs 5] [--bootstrap host:port]

1. Import time: a fresh interpreter imports what `gepa-stream run --role ingest` imports before
   it starts (`daemon.cli`, `daemon.worker`); the median of `--runs` runs, wall clock and the
   process's CPU time (which other load on the machine inflates less), with the heavy libraries
   it must not load (dspy, mlflow, litellm) checked absent. The load average is printed too.
2. RSS: the real `gepa-stream run --role ingest` process (`python -m daemon`) against the
   embedded broker (or `--bootstrap`), with a three-prompt policy; VmRSS from /proc once
   /readyz answers and 3 s later, then again after one ops-page state request (the ingest
   role's page reads MLflow only from the first request that wants it).

Targets (issue 13): import <= 0.5 s, RSS after ready <= 100 MB. For what holds the import time,
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.daemon_harness import Daemon  # noqa: E402

TARGET_IMPORT_S = 0.5
TARGET_RSS_MB = 100.0
HEAVY = ("dspy", "mlflow", "litellm")
_IMPORT_PROBE = """
import sys, time
started, cpu = time.perf_counter(), time.process_time()
import daemon.cli, daemon.worker
print(time.perf_counter() - started, time.process_time() - cpu, [m for m in {heavy!r} if m in sys.modules])
"""
POLICY = "prompts:\n" + "".join(
    f"  - {{name: footprint_{c}, task_model: offline/support-router}}\n" for c in "abc"
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
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def worker_rss(bootstrap: str, workdir: Path) -> tuple[float, float, float]:
    """(RSS at ready, 3 s later, after one ops-page state request + 5 s) of a real ingest worker."""
    config = workdir / "gepa-stream.yaml"
    config.write_text(POLICY)
    daemon = Daemon(bootstrap, config, workdir).launch("ingest")
    try:
        daemon.wait_ready(timeout=180)
        assert daemon.process is not None
        at_ready = rss_mb(daemon.process.pid)
        time.sleep(3)
        settled = rss_mb(daemon.process.pid)
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/ui/api/state", timeout=30) as reply:
            reply.read()
        time.sleep(5)
        after_page = rss_mb(daemon.process.pid)
        return at_ready, settled, after_page
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--bootstrap", default=os.environ.get("GEPA_STREAM_BENCH_BOOTSTRAP"))
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    load = os.getloadavg()[0]
    seconds, cpu_seconds, heavy = import_seconds(args.runs)
    from daemon.broker import EmbeddedBroker

    broker = None
    if not args.bootstrap:
        broker = EmbeddedBroker().start()
        args.bootstrap = broker.bootstrap_servers
    try:
        with tempfile.TemporaryDirectory() as workdir:
            at_ready, settled, after_page = worker_rss(args.bootstrap, Path(workdir))
    finally:
        if broker is not None:
            broker.stop()

    def verdict(ok: bool) -> str:
        return "ok" if ok else "OVER TARGET"

    rows = [
        (f"imports, wall (median of {args.runs})", seconds, "s", TARGET_IMPORT_S),
        (f"imports, CPU (median of {args.runs})", cpu_seconds, "s", TARGET_IMPORT_S),
        ("RSS at /readyz", at_ready, "MB", TARGET_RSS_MB),
        ("RSS 3 s after ready", settled, "MB", TARGET_RSS_MB),
    ]
    print(
        f"ingest-only worker (load average {load:.1f}; heavy libraries imported: {', '.join(heavy) or 'none'})"
    )
    for name, value, unit, target in rows:
        print(f"  {name:<30} {value:8.3f} {unit:<2}  target <= {target:g} {unit}  {verdict(value <= target)}")
    print(
        f"  {'RSS after an ops-page view':<30} {after_page:8.3f} MB  (its first state request loads MLflow)"
    )


if __name__ == "__main__":
    main()
