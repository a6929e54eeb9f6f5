"""`gepa-stream broker --listen/--advertise`: the embedded broker in a container listens on every
interface and tells clients an address they can reach (the compose service name, a host's IP)."""

from __future__ import annotations

import subprocess
import sys

from kafka import KafkaAdminClient

from daemon.broker import EmbeddedBroker, free_port


def test_listen_and_advertise_reach_the_broker_command() -> None:
    broker = EmbeddedBroker(port=9092, host="0.0.0.0", advertise="kafka:29092")
    command = broker.command()
    assert command[command.index("--listener-url") + 1] == "tcp://0.0.0.0:9092"
    assert command[command.index("--advertised-listener-url") + 1] == "tcp://kafka:29092"
    assert broker.bootstrap_servers == "kafka:29092"


def test_without_advertise_clients_are_told_the_listen_address() -> None:
    broker = EmbeddedBroker(port=19092)
    assert (
        broker.command()[broker.command().index("--advertised-listener-url") + 1] == "tcp://127.0.0.1:19092"
    )


def test_a_broker_on_every_interface_advertises_the_given_address() -> None:
    port = free_port()
    with EmbeddedBroker(port=port, host="0.0.0.0", advertise=f"localhost:{port}") as broker:
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
        try:
            hosts = {(b["host"], b["port"]) for b in admin.describe_cluster()["brokers"]}
        finally:
            admin.close()
        assert hosts == {("localhost", port)}, broker.bootstrap_servers


def test_cli_rejects_an_advertised_address_without_a_port() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "broker", "--listen", "0.0.0.0", "--advertise", "kafka"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "--advertise must be HOST:PORT" in result.stderr
