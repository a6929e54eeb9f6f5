"""A daemon told to stop exits within `GEPA_STREAM_SHUTDOWN_TIMEOUT_S` even when its broker has
gone away first (unbounded, the Kafka clients' last commits and flushes retried for 35-95 s), in
every role; with the broker up it stops cleanly, well inside the bound."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from daemon.broker import EmbeddedBroker
from daemon.faust_ext.worker import SHUTDOWN_OVERDUE_EXIT
from tests.daemon_harness import Daemon
from tests.e2e.loop_helpers import write_policy

pytestmark = pytest.mark.e2e

ROLES = ("all", "ingest", "optimizer")
BOUND_S = 3.0
# the wait allows the bound and a loaded machine's slack; the 35-95 s of an unbounded stop fail it
WAIT_S = BOUND_S + 25.0


def _daemons(bootstrap: str, tmp_path: Path) -> dict[str, Daemon]:
    policy = write_policy(tmp_path / "policy.yaml", "router_shutdown")
    daemons = {}
    for role in ROLES:
        (tmp_path / role).mkdir()
        daemons[role] = Daemon(
            bootstrap, policy, tmp_path / role, env={"GEPA_STREAM_SHUTDOWN_TIMEOUT_S": str(BOUND_S)}
        ).launch(role)
    for daemon in daemons.values():
        daemon.wait_ready()
    return daemons


def _stopped(daemons: dict[str, Daemon]) -> dict[str, int | None]:
    """SIGTERM every daemon at once, then each one's exit code (None: still running after WAIT_S)."""
    for daemon in daemons.values():
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
    codes: dict[str, int | None] = {}
    for role, daemon in daemons.items():
        assert daemon.process is not None
        try:
            codes[role] = daemon.process.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            codes[role] = None
            daemon.process.kill()
            daemon.process.wait()
    return codes


def test_with_the_broker_gone_a_stop_gives_up_within_the_bound(tmp_path: Path) -> None:
    with EmbeddedBroker() as broker:
        daemons = _daemons(broker.bootstrap_servers, tmp_path)
    codes = _stopped(daemons)  # the broker stopped first
    logs = {role: d.log.read_text()[-2000:] for role, d in daemons.items()}
    assert all(code in (0, SHUTDOWN_OVERDUE_EXIT) for code in codes.values()), (codes, logs)
    for role, code in codes.items():
        if code == SHUTDOWN_OVERDUE_EXIT:
            assert "GEPA_STREAM_SHUTDOWN_TIMEOUT_S" in logs[role], logs[role]


def test_with_the_broker_up_a_stop_is_clean(kafka_bootstrap: str, tmp_path: Path) -> None:
    daemons = _daemons(kafka_bootstrap, tmp_path)
    codes = _stopped(daemons)
    assert codes == dict.fromkeys(ROLES, 0), {role: d.log.read_text()[-2000:] for role, d in daemons.items()}
