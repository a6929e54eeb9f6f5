"""Kafka security settings reach every client the daemon creates — Faust (ingest), aiokafka
(the job runner), kafka-python (topic admin, send/tail, the MLflow bridge) — and the SASL
password never shows in reprs, dumps or errors."""

from __future__ import annotations

import ssl

import certifi
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from daemon.app import broker_credentials
from daemon.settings import Settings, load_settings
from schemas.config import ConfigError

SECRET = "fake-sasl-password-4f1c9e"
SASL = {"kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "gepa", "kafka_sasl_password": SECRET}


def settings(protocol: str, **overrides: object) -> Settings:
    sasl = SASL if protocol.startswith("SASL") else {}
    return Settings(kafka_security_protocol=protocol, **{**sasl, **overrides})


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_every_client_gets_the_same_protocol_and_credentials(protocol: str) -> None:
    configured = settings(protocol)
    clients = {
        "faust": credentials_to_aiokafka_auth(broker_credentials(configured)),
        "aiokafka": configured.aiokafka_options(),
        "kafka-python": configured.kafka_python_options(),
    }
    for name, options in clients.items():
        assert options["security_protocol"] == protocol, name
        if name != "kafka-python":  # kafka-python builds its own context from ssl_cafile
            assert (options.get("ssl_context") is not None) == ("SSL" in protocol), name
        if protocol.startswith("SASL"):
            assert options["sasl_mechanism"] == "SCRAM-SHA-512", name
            assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("gepa", SECRET), name


def test_ssl_without_a_ca_file_uses_the_system_cas_and_with_one_loads_it() -> None:
    """Managed clusters with public certificates need no CA file (this used to fail on "None")."""
    system = credentials_to_aiokafka_auth(broker_credentials(settings("SASL_SSL")))["ssl_context"]
    bundle = credentials_to_aiokafka_auth(
        broker_credentials(settings("SSL", kafka_ssl_cafile=certifi.where()))
    )["ssl_context"]
    for context in (system, bundle):
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert bundle.cert_store_stats()["x509_ca"] > 0
    assert (
        settings("SSL", kafka_ssl_cafile=certifi.where()).kafka_python_options()["ssl_cafile"]
        == certifi.where()
    )


def test_sasl_needs_mechanism_username_and_password() -> None:
    with pytest.raises(ConfigError, match="GEPA_STREAM_KAFKA_SASL_PASSWORD"):
        load_settings(
            kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN", kafka_sasl_username="gepa"
        )


def test_the_password_never_shows_in_reprs_dumps_or_errors() -> None:
    configured = settings("SASL_SSL")
    shown = [
        repr(configured),
        str(configured),
        str(configured.model_dump()),
        configured.model_dump_json(),
        repr(broker_credentials(configured)),
    ]
    with pytest.raises(ConfigError) as bad_setting:
        load_settings(**SASL, kafka_security_protocol="SASL_SSL", web_port=70000)
    shown.append(str(bad_setting.value))
    for text in shown:
        assert SECRET not in text, text
    assert configured.kafka_sasl_password is not None
    assert configured.kafka_sasl_password.get_secret_value() == SECRET
