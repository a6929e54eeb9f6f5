"""MLflow's errors as the real stores raise them: a sqlite store and the REST client against a real
tracking server give the same error codes, which `optimization.mlflow_errors` and the outage test
`daemon.jobs.outage.unanswered_request` recognise (never the message text), so a missing prompt or
alias reads as "none" and an unreachable server as an outage."""

from __future__ import annotations

from collections.abc import Iterator

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from daemon import prompt_versions
from daemon.broker import free_port
from daemon.jobs.outage import unanswered_request
from optimization.mlflow_errors import INTERNAL, INVALID_PARAMETER, NOT_FOUND, error_code, no_alias, not_found
from schemas.events import PRODUCTION_ALIAS
from tests.mlflow_server import MlflowServer


@pytest.fixture(scope="module", params=["sqlite", "server"])
def tracking_uri(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A store holding prompt `known` (one version, no alias): a sqlite file, or a real `mlflow server`."""
    workdir = tmp_path_factory.mktemp(request.param)
    server = None
    if request.param == "sqlite":
        uri = f"sqlite:///{workdir / 'mlflow.db'}"
    else:
        server = MlflowServer(workdir).start().wait_ready()
        uri = server.uri
    MlflowClient(uri).register_prompt(name="known", template="Answer {{q}}")
    try:
        yield uri
    finally:
        if server is not None:
            server.stop()


@pytest.fixture(autouse=True)
def _tracking(tracking_uri: str) -> Iterator[None]:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    yield
    mlflow.set_tracking_uri(previous)


def _raised(call) -> MlflowException:  # type: ignore[no-untyped-def]
    with pytest.raises(MlflowException) as raised:
        call()
    return raised.value


def test_a_missing_prompt_is_resource_does_not_exist_and_reads_as_none() -> None:
    for call in (
        lambda: MlflowClient().search_prompt_versions("missing"),
        lambda: MlflowClient().get_prompt_version_by_alias("missing", PRODUCTION_ALIAS),
        lambda: MlflowClient().get_prompt_version("known", "9"),
    ):
        exc = _raised(call)
        assert error_code(exc) == NOT_FOUND and not_found(exc) and no_alias(exc)
    assert prompt_versions.versions("missing") == []
    assert prompt_versions.production("missing") is None


def test_a_missing_alias_is_invalid_parameter_value_and_reads_as_no_production() -> None:
    exc = _raised(lambda: MlflowClient().get_prompt_version_by_alias("known", PRODUCTION_ALIAS))
    assert error_code(exc) == INVALID_PARAMETER and no_alias(exc) and not not_found(exc)
    assert prompt_versions.production("known") is None
    assert [v.version for v in prompt_versions.versions("known")] == [1]


def test_an_unreachable_server_is_internal_error_from_its_request_and_is_never_read_as_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = f"http://127.0.0.1:{free_port()}"
    mlflow.set_tracking_uri(down)
    exc = _raised(lambda: MlflowClient().get_prompt_version_by_alias("known", PRODUCTION_ALIAS))
    assert error_code(exc) == INTERNAL and unanswered_request(exc, down)
    assert not no_alias(exc) and not not_found(exc)
    with pytest.raises(MlflowException):
        prompt_versions.production("known")  # an outage is not "no production"
    with pytest.raises(MlflowException):
        prompt_versions.versions("known")


def test_errors_of_a_store_that_answers_are_not_outages(tracking_uri: str) -> None:
    exc = _raised(lambda: MlflowClient().search_prompt_versions("missing"))
    assert not unanswered_request(exc, tracking_uri)
