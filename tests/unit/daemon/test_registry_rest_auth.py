"""`RestRegistry` sends MLflow's credentials as MLflow's client does (basic auth before a bearer
token, the workspace header) and turns an error answer into a `RegistryError` with MLflow's code,
against a stub HTTP server that records what it was sent."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from daemon.registry_rest import RegistryError, RestRegistry


class _Stub(BaseHTTPRequestHandler):
    seen: list[tuple[str, dict[str, str]]] = []
    answer: tuple[int, dict[str, object]] = (200, {})

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        _Stub.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        status, body = _Stub.answer
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    for name in (
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_WORKSPACE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials of the machine
    _Stub.seen, _Stub.answer = [], (200, {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _authorization(uri: str) -> str | None:
    RestRegistry(uri).canary("p")
    return _Stub.seen[-1][1].get("authorization")


def test_basic_auth_goes_before_the_token_as_in_mlflows_client(
    stub: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _authorization(stub) is None
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t0k")
    assert _authorization(stub) == "Bearer t0k"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ann")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    assert _authorization(stub) == "Basic " + base64.b64encode(b"ann:pw").decode()


def test_credentials_file_and_workspace(stub: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".mlflow").mkdir()
    (tmp_path / ".mlflow" / "credentials").write_text(
        "[mlflow]\nmlflow_tracking_username = bob\nmlflow_tracking_password = s3cret\n"
    )
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team-a")
    RestRegistry(stub).production("p")
    path, headers = _Stub.seen[-1]
    assert headers["authorization"] == "Basic " + base64.b64encode(b"bob:s3cret").decode()
    assert headers["x-mlflow-workspace"] == "team-a"
    assert path == "/api/2.0/mlflow/registered-models/alias?name=p&alias=production"


def test_an_error_answer_is_a_registry_error_with_mlflows_code(stub: str) -> None:
    _Stub.answer = (403, {"error_code": "PERMISSION_DENIED", "message": "no"})
    with pytest.raises(RegistryError) as raised:
        RestRegistry(stub).versions("p")
    assert (raised.value.status, raised.value.error_code) == (403, "PERMISSION_DENIED")
    _Stub.answer = (400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "alias not found"})
    assert RestRegistry(stub).production("p") is None  # a missing alias, as MLflow answers it


def test_only_http_uris() -> None:
    with pytest.raises(ValueError):
        RestRegistry("sqlite:///mlflow.db")
