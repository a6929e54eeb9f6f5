"""A real `mlflow server` process on a loopback port with a sqlite store, which a test (or a
bench) stops and starts again on the same port and store: an MLflow outage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon.broker import free_port
from daemon.jobs.outage import tracking_answers
from schemas.third_parties import quiet_third_parties


class MlflowServer:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.db = workdir / "mlflow-server.db"
        self.log = workdir / "mlflow-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        """Start the server (in its own process group); `wait_ready` waits for it to answer."""
        env = dict(os.environ)
        quiet_third_parties(env)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.db}",
                 "--artifacts-destination", str(self.workdir / "mlflow-artifacts"),
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return self

    def wait_ready(self, timeout: float = 240.0) -> MlflowServer:
        deadline = time.monotonic() + timeout
        while not tracking_answers(self.uri, timeout=2.0):
            if self.process is None or self.process.poll() is not None:
                raise AssertionError(f"mlflow server exited:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"mlflow server did not answer within {timeout:.0f}s:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.25)
        return self

    def stop(self) -> None:
        """SIGTERM to the server's process group (its workers too), SIGKILL after 20 s."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        self.process = None
        deadline = time.monotonic() + 20
        while (
            tracking_answers(self.uri, timeout=1.0) and time.monotonic() < deadline
        ):  # a worker may linger a moment
            time.sleep(0.1)
