"""Shared fixtures: the Kafka bootstrap address, the fake model provider, and quiet third-party libraries."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

from schemas.third_parties import quiet_third_parties

# before anything imports MLflow, litellm or dspy (they read these at import)
quiet_third_parties()
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="dspy-cache-"))  # no persistent dspy cache

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from optimization.offline.provider import FakeProvider  # noqa: E402

# property tests judge results, not wall-clock time (hypothesis's default 200 ms deadline failed on a
# loaded 2-core machine with a 300 ms example that ran in 0.2 ms when repeated)
settings.register_profile("gepa-stream", deadline=None)
settings.load_profile("gepa-stream")


def _docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        client.close()
        return True
    except Exception:  # any failure means "no engine": docker-py raises many kinds
        return False


MLFLOW_PROCESS_VARIABLES = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_URI")


@pytest.fixture(autouse=True)
def _mlflow_variables_stay_per_test() -> Iterator[None]:
    """`mlflow.set_experiment` / `set_tracking_uri` write process-wide variables that every later
    subprocess inherits (a job process, a fresh-process run); with xdist, whichever test ran before
    on the same worker would leak its experiment id into the next one's store."""
    saved = {name: os.environ.get(name) for name in MLFLOW_PROCESS_VARIABLES}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Kafka-protocol broker for the session.

    1. `GEPA_STREAM_TEST_BOOTSTRAP` if set; 2. testcontainers Kafka when a Docker
    engine answers; 3. the embedded Tansu broker.
    """
    configured = os.environ.get("GEPA_STREAM_TEST_BOOTSTRAP")
    if configured:
        yield configured
        return
    if _docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    from daemon.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def fake_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeProvider]:
    """A started fake OpenAI-compatible provider (offline models over HTTP, fault injection);
    `OPENAI_BASE_URL`/`OPENAI_API_KEY` point at it, so litellm, MLflow and job subprocesses use it."""
    with FakeProvider() as provider:
        monkeypatch.setenv("OPENAI_BASE_URL", provider.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", provider.api_key)
        yield provider
