"""The compose stack checked through its containers, from the host, as an operator would.

Run by deploy/podman/test.sh (`make deploy-test`) once the images are built; not part of the
pytest suite. Every step prints its time; the first failed check raises and ends the run.
Environment: COMPOSE (the podman-compose command line with both -f files and -p), DOCKER_HOST
(podman's Docker API, for testcontainers), KAFKA_EXTERNAL_HOST (the advertised broker host).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from schemas import Topics
from tests.daemon_harness import produce, read_topic
from tests.e2e.loop_helpers import register_seed, sme_feed

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = shlex.split(os.environ["COMPOSE"])
PROJECT = COMPOSE[COMPOSE.index("-p") + 1]
BOOTSTRAP = "127.0.0.1:29092"
MLFLOW = "http://127.0.0.1:5000"
PROMETHEUS = "http://127.0.0.1:9090"
OPS_PAGES = {"ingest": "http://127.0.0.1:6066", "optimizer": "http://127.0.0.1:6076"}
PROMPT = "support_router"  # the one prompt of deploy/gepa-stream.yaml (offline models)
TOPICS = Topics()
# Compose volumes the image's non-root user writes, and where the services mount them.
USER_VOLUMES = {"mlflow-data": "/var/lib/gepa-stream/mlflow", "optimizer-state": "/var/lib/gepa-stream/state"}


@contextmanager
def step(name: str) -> Iterator[None]:
    """Print a step's name, then its time when it ends."""
    print(f"==> {name}", flush=True)
    started = time.monotonic()
    yield
    print(f"    {name}: {time.monotonic() - started:.1f}s", flush=True)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, its output captured."""
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def compose(*args: str) -> None:
    """podman-compose with the production file and the override (output shown on failure only)."""
    sh(*COMPOSE, *args)


def container(service: str) -> str:
    """The container name podman-compose gives a service's first replica."""
    return f"{PROJECT}_{service}_1"


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every_s: float = 1.0) -> Any:
    """Poll `condition` every `every_s` until it returns something truthy; fail naming `what`
    after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # noqa: BLE001  (not up yet: connection refused, 404, ...)
            value = None
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def healthy(service: str) -> bool:
    """`podman healthcheck run`: the service's compose healthcheck, run now (no systemd timers run
    it here, so podman's own status never leaves `starting`)."""
    return sh("podman", "healthcheck", "run", container(service), check=False).returncode == 0


def up() -> None:
    """`up -d` in two stages: under podman < 4.6 podman-compose ignores `condition: service_healthy`
    (it only orders the starts), so the test waits for Kafka's and MLflow's healthchecks itself
    before starting the services that depend on them, as Docker Compose would."""
    compose("up", "-d", "--no-build", "kafka", "mlflow")
    for service in ("kafka", "mlflow"):
        wait_until(partial(healthy, service), 180, f"{service}'s healthcheck")
    compose("up", "-d", "--no-build")
    for service in ("ingest", "optimizer", "otel-bridge", "prometheus"):
        wait_until(partial(healthy, service), 180, f"{service}'s healthcheck")


def events(topic: str) -> list[Any]:
    return read_topic(BOOTSTRAP, topic, idle_s=1.0)


def promotions() -> list[Any]:
    return [e for e in events(TOPICS.promotions) if e.data.prompt == PROMPT]


def state_volume() -> Path:
    """Where the optimizer-state volume lives on the host (podman's volume directory)."""
    inspect = sh("podman", "volume", "inspect", f"{PROJECT}_optimizer-state", "--format", "{{.Mountpoint}}")
    return Path(inspect.stdout.strip())


def running_job(volume: Path) -> tuple[Path, str] | None:
    """A job's run directory on the volume with its job under way (progress written, no result
    yet), and its stage. With offline models a job takes seconds: polled tightly."""
    for progress in volume.glob("jobs/*/progress.json"):
        try:
            stage = str(json.loads(progress.read_text()).get("stage"))
        except (OSError, ValueError):
            continue
        if not (progress.parent / "result.json").exists():
            return progress.parent, stage
    return None


def attempts(run_dir: Path) -> int:
    """Starts of the job's process recorded in its run directory (attempts.json)."""
    return len(json.loads((run_dir / "attempts.json").read_text())["attempts"])


def versions() -> dict[str, Any]:
    """MLflow's versions of the prompt and its `production` alias, over the published port."""
    import mlflow

    mlflow.set_tracking_uri(MLFLOW)
    client = mlflow.MlflowClient()
    latest = max(int(v.version) for v in client.search_prompt_versions(PROMPT))
    production = int(client.get_prompt_version_by_alias(PROMPT, "production").version)
    return {"latest": latest, "production": production}


def check_volumes_writable_by_the_image_user() -> None:
    """A throwaway container of the image (its own user, uid 10001) writes into each volume:
    started with testcontainers over podman's Docker API, as the suite's testcontainers path does."""
    from testcontainers.core.container import DockerContainer

    for volume, path in USER_VOLUMES.items():
        probe = (
            DockerContainer("localhost/gepa-stream:latest")
            .with_kwargs(entrypoint=["sh", "-c"])
            # one argument for `sh -c` (a string command would be split into words)
            .with_command([f"id -u && touch {path}/.write-probe && rm {path}/.write-probe && echo writable"])
            .with_volume_mapping(f"{PROJECT}_{volume}", path, "rw")
        )
        with probe:
            wrapped = probe.get_wrapped_container()
            status = wrapped.wait(timeout=60)["StatusCode"]
            output = wrapped.logs().decode()
        assert status == 0 and output.split() == ["10001", "writable"], (volume, status, output)
        print(f"    uid 10001 writes {volume} ({path})")


def check_ops_pages() -> None:
    """Each role's ops page and /status on its published loopback port, once the role is ready
    (partitions assigned, tables recovered)."""
    for role, base in OPS_PAGES.items():
        wait_until(partial(http_get, f"{base}/readyz"), 180, f"{role} to be ready")
        page = http_get(f"{base}/ui").decode()
        status = json.loads(http_get(f"{base}/status"))
        assert "<html" in page.lower() and status["policy"]["prompts"] == 1, (role, status)
        print(f"    {role}: {base}/ui answers")


def prometheus_query(expr: str) -> list[Any]:
    body = json.loads(http_get(f"{PROMETHEUS}/api/v1/query?query={urllib.parse.quote(expr)}"))
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def check_prometheus() -> None:
    """Both daemon targets up (found by DNS), then every dashboard query evaluates, and the ones
    this run must have fed return data."""

    def daemon_targets_up() -> bool:
        targets = json.loads(http_get(f"{PROMETHEUS}/api/v1/targets"))["data"]["activeTargets"]
        up = {
            t["labels"].get("role")
            for t in targets
            if t["labels"]["job"] == "gepa-stream" and t["health"] == "up"
        }
        return {"ingest", "optimizer"} <= up

    wait_until(daemon_targets_up, 90, "Prometheus to scrape the ingest and optimizer targets")
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/gepa-stream.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", []) if "expr" in t]
    grafana_vars = {"$__rate_interval": "2m", "$__range": "1h", "$prompt": ".*"}

    def expand(expr: str) -> str:
        for name, value in grafana_vars.items():
            expr = expr.replace(name, value)
        return expr

    for expr in exprs:
        prometheus_query(expand(expr))
    must_have_data = [
        e for e in exprs if "gepa_stream_events_total" in e or "gepa_stream_window_examples" in e
    ]
    for expr in must_have_data:
        wait_until(partial(prometheus_query, expand(expr)), 90, f"data for {expr}")
    print(f"    {len(exprs)} dashboard queries evaluate; {len(must_have_data)} checked for data")


def window() -> Any:
    """The examples in the ingest role's window of the prompt, as /status shows it (None: no window)."""
    return json.loads(http_get(f"{OPS_PAGES['ingest']}/status"))["prompts"].get(PROMPT, {}).get("n_examples")


def main() -> int:
    with step("up (kafka, mlflow healthy first, then the rest)"):
        up()
    with step("uid 10001 writes every volume it uses (testcontainers over podman's Docker API)"):
        check_volumes_writable_by_the_image_user()
    with step("ops pages on their published ports"):
        check_ops_pages()
    with step("seed prompt v1 as production in the mlflow container, from the host"):
        register_seed(MLFLOW, PROMPT)
        import mlflow

        mlflow.genai.set_prompt_alias(PROMPT, "production", 1)
    with step("traces and SME ratings into the published Kafka port"):
        # 140: every distinct sample ticket; exact_match uses the SME-corrected ones, and the gate
        # wants 20 of them held out (min_eval_examples in deploy/gepa-stream.yaml)
        produce(BOOTSTRAP, sme_feed(TOPICS, PROMPT, n=140))
    with step("ingest fires; the optimizer container stopped mid-job, then started again"):
        run_dir, stage = wait_until(
            partial(running_job, state_volume()), 300, "a job started on the optimizer-state volume", 0.05
        )
        sh("podman", "stop", "-t", "30", container("optimizer"))
        assert not (run_dir / "result.json").exists() and not promotions(), "the job ended before the stop"
        print(f"    stopped {container('optimizer')} with job {run_dir.name} at stage {stage!r}")
        sh("podman", "start", container("optimizer"))
    with step("the job resumes from the volume, registers v2 and moves production; the event, from the host"):
        found = wait_until(promotions, 420, "the promotion event on gepa.promotions")
        assert [e.data.decision for e in found] == ["promoted"], [e.data for e in found]
        seen = versions()
        assert seen == {"latest": 2, "production": 2}, seen
        assert (run_dir / "result.json").exists() and attempts(run_dir) >= 2, (
            "not resumed in its run directory"
        )
        time.sleep(5)  # a duplicate announcement would come now: still one promotion
        assert len(promotions()) == 1, promotions()
        print(f"    one promotion: {found[0].data.decision} v{found[0].data.to_version}; MLflow: {seen}")
        print(f"    resumed in {run_dir.name}: {attempts(run_dir)} attempts")
    with step("Prometheus: both daemon targets up, the dashboard's queries"):
        check_prometheus()
    window_before = window()
    with step("down, then up: MLflow's prompts kept (volume mlflow-data)"):
        compose("down")
        up()
        assert versions() == {"latest": 2, "production": 2}, versions()
        window_after = window()
        # The stand-in broker is memory-only: the windows' changelog topics go with its container.
        print(
            f"    window examples before down: {window_before}; after up: {window_after} (memory-only broker)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
