"""`daemon.registry_rest.RestRegistry` against a real `mlflow server`: for the same store it reads
exactly what `daemon.prompt_versions` (the MLflow client) reads — every version with its
template and tags, oldest first, across pages; `production` / `canary` or None; [] for an unknown
prompt — and it never imports MLflow."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from daemon import prompt_versions
from daemon.broker import free_port
from daemon.prompt_version import awaiting_approval
from daemon.registry_rest import (
    INVALID_PARAMETER,
    MlflowRegistry,
    RegistryError,
    RestRegistry,
    registry_reader,
)
from schemas.events import CANARY_ALIAS, PRODUCTION_ALIAS
from tests.mlflow_server import MlflowServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MANY = 23  # versions of `many`: 4 pages of 7, and one page of the default 100
PROMPTS = ("many", "chatty", "single", "tagged")


@pytest.fixture(scope="module")
def server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real tracking server holding prompts registered through `mlflow.genai`:

    - `many`: MANY versions, `production` on 5, `canary` on the last (with a traffic share tag);
    - `chatty`: a text version and a chat version (a message list), `production` on the chat one;
    - `single`: one version, no alias;
    - `tagged`: versions with the daemon's tags set, changed and deleted after registration;
    - `a_model`: a registered model that is not a prompt, with a `production` alias.
    """
    server = MlflowServer(tmp_path_factory.mktemp("registry-rest")).start().wait_ready()
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(server.uri)
    try:
        genai, client = mlflow.genai, MlflowClient(server.uri)
        for n in range(1, MANY + 1):
            genai.register_prompt(name="many", template=f"Answer {{{{q}}}} ({n})", commit_message=f"v{n}")
        genai.set_prompt_alias("many", PRODUCTION_ALIAS, 5)
        genai.set_prompt_version_tag("many", MANY, "gepa_stream.traffic_share", "0.25")
        genai.set_prompt_alias("many", CANARY_ALIAS, MANY)
        genai.register_prompt(name="chatty", template="Plain {{q}}")
        genai.register_prompt(
            name="chatty",
            template=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "{{q}}"}],
            model_config={"temperature": 0.1},
        )
        genai.set_prompt_alias("chatty", PRODUCTION_ALIAS, 2)
        genai.register_prompt(name="single", template="Only {{q}}")
        genai.register_prompt(name="tagged", template="Seed {{q}}")
        genai.register_prompt(
            name="tagged",
            template="Better {{q}}",
            tags={
                "final_score": "0.8125",
                "gepa_stream.request_id": "r-1",
                "gepa_stream.parent_version": "1",
            },
        )
        genai.register_prompt(name="tagged", template="Foreign {{q}}", tags={"final_score": "n/a"})
        genai.set_prompt_version_tag("tagged", 2, "gepa_stream.awaiting_approval", "true")
        genai.set_prompt_version_tag("tagged", 3, "gepa_stream.awaiting_approval", "true")
        client.delete_prompt_version_tag("tagged", "3", "gepa_stream.awaiting_approval")
        genai.set_prompt_alias("tagged", PRODUCTION_ALIAS, 1)
        client.create_registered_model("a_model")
        client.create_model_version("a_model", source="s3://bucket/a_model")
        client.set_registered_model_alias("a_model", PRODUCTION_ALIAS, 1)
        yield server.uri
    finally:
        mlflow.set_tracking_uri(previous)
        server.stop()


@pytest.fixture(autouse=True)
def _mlflow_reads_the_server(server_uri: str) -> None:
    mlflow.set_tracking_uri(server_uri)  # prompt_versions reads through MlflowClient()


@pytest.mark.parametrize("page_size", [7, 100])
def test_versions_are_exactly_what_the_mlflow_client_reads(server_uri: str, page_size: int) -> None:
    rest = RestRegistry(server_uri, page_size=page_size)
    for name in PROMPTS:
        assert rest.versions(name) == prompt_versions.versions(name), name
    many = rest.versions("many")
    assert [v.version for v in many] == list(range(1, MANY + 1))
    assert many[-1].template == f"Answer {{{{q}}}} ({MANY})" and many[-1].tags == {
        "gepa_stream.traffic_share": "0.25"
    }


def test_aliases_are_exactly_what_the_mlflow_client_reads(server_uri: str) -> None:
    rest = RestRegistry(server_uri)
    for name in PROMPTS:
        assert rest.production(name) == prompt_versions.production(name), name
        assert rest.canary(name) == prompt_versions.alias(name, CANARY_ALIAS), name
    assert rest.production("many") is not None and rest.production("many").version == 5  # type: ignore[union-attr]
    canary = rest.canary("many")
    assert (
        canary is not None and canary.version == MANY and canary.tags["gepa_stream.traffic_share"] == "0.25"
    )


def test_a_chat_template_and_the_daemons_tags_read_the_same(server_uri: str) -> None:
    rest = RestRegistry(server_uri)
    chat = rest.production("chatty")
    assert chat is not None and chat == prompt_versions.production("chatty")
    assert chat.template == str(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "{{q}}"}]
    )
    assert chat.tags == {}  # MLflow's own tags (text, type, model config) are not the version's
    seed, better, foreign = rest.versions("tagged")
    assert (seed.final_score, better.final_score, foreign.final_score) == (None, 0.8125, None)
    assert tuple(map(awaiting_approval, (seed, better, foreign))) == (
        False,
        True,
        False,
    )
    assert better.tags["gepa_stream.request_id"] == "r-1" and better.uri == "prompts:/tagged/2"


def test_an_unknown_prompt_has_no_versions_and_no_aliases(server_uri: str) -> None:
    rest = RestRegistry(server_uri)
    assert rest.versions("no_such_prompt") == prompt_versions.versions("no_such_prompt") == []
    assert rest.production("no_such_prompt") is None is prompt_versions.production("no_such_prompt")
    assert rest.canary("no_such_prompt") is None


def test_a_missing_alias_is_none(server_uri: str) -> None:
    rest = RestRegistry(server_uri)
    assert rest.production("single") is None is prompt_versions.production("single")
    assert rest.canary("chatty") is None is prompt_versions.alias("chatty", CANARY_ALIAS)
    assert rest.alias("many", "no-such-alias") is None


def test_a_model_that_is_not_a_prompt_reads_as_the_mlflow_client_reads_it(server_uri: str) -> None:
    rest = RestRegistry(server_uri)
    assert rest.production("a_model") is None is prompt_versions.production("a_model")
    with pytest.raises(MlflowException):
        prompt_versions.versions("a_model")
    with pytest.raises(RegistryError) as raised:
        rest.versions("a_model")
    assert raised.value.error_code == INVALID_PARAMETER


def test_an_unreachable_server_raises_a_registry_error_never_an_empty_answer() -> None:
    rest = RestRegistry(f"http://127.0.0.1:{free_port()}", timeout=2.0)
    started = time.monotonic()
    for read in (lambda: rest.versions("many"), lambda: rest.production("many")):
        with pytest.raises(RegistryError) as raised:
            read()
        assert raised.value.status is None and raised.value.error_code is None
        assert "no answer" in str(raised.value)
    assert time.monotonic() - started < 10


def test_registry_reader_picks_rest_for_http_and_mlflow_otherwise(
    server_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(registry_reader(server_uri), RestRegistry)
    assert isinstance(registry_reader(f"sqlite:///{tmp_path / 'mlflow.db'}"), MlflowRegistry)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server_uri)
    assert isinstance(registry_reader(), RestRegistry)
    adapter = MlflowRegistry()  # what a sqlite store gets: prompt_versions itself
    assert adapter.versions("many") == RestRegistry(server_uri).versions("many")
    assert adapter.canary("many") == RestRegistry(server_uri).canary("many")
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "some_plugin")  # a plugin only MLflow's client can load
    assert isinstance(registry_reader(server_uri), MlflowRegistry)


def test_reading_through_rest_never_imports_mlflow(server_uri: str) -> None:
    probe = textwrap.dedent(
        f"""
        import sys
        from daemon.registry_rest import registry_reader
        from optimization.prompt_names import prompt_names
        from schemas.config import PromptPolicy
        reader = registry_reader({server_uri!r})
        read = [reader.versions(n) for n in {PROMPTS!r}] + [reader.production("many"), reader.canary("many")]
        assert len(read[0]) == {MANY} and read[-1].version == {MANY}
        assert prompt_names(PromptPolicy(name="p")) == ["p"]
        print(sorted(m for m in ("mlflow", "dspy", "litellm") if m in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert ast.literal_eval(result.stdout.strip().splitlines()[-1]) == []
