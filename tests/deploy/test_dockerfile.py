"""The Dockerfile and .dockerignore without a Docker engine: base image, non-root user, the
package installed from the repo, the healthcheck on the web port, and every COPY source."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from daemon.settings import Settings
from tests.deploy.deployment import (
    ROOT,
    copy_sources,
    dockerignored,
    expand_args,
    final_stage,
    image_env,
    instructions,
)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_slim_python_311_base() -> None:
    for line in instructions("FROM"):
        image = expand_args(line.split()[0])
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image), image


def test_runs_as_a_non_root_user() -> None:
    users = [i.args for i in final_stage() if i.keyword == "USER"]
    assert users, "the final stage must switch to a non-root user"
    user = expand_args(users[-1]).split(":")[0]
    assert user not in ("root", "0")


def test_installs_the_package_from_the_repo_with_every_top_level_package() -> None:
    assert any(re.search(r"pip install (\S+ )*\.(\s|$)", run) for run in instructions("RUN"))
    copied = set(copy_sources())
    assert {"pyproject.toml", "README.md"} <= copied  # README.md: pyproject's `readme`
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    wanted = {name for name in packages if any(fnmatch.fnmatch(name, pattern) for pattern in patterns)}
    assert wanted <= copied, f"packages pip would install but the image lacks: {sorted(wanted - copied)}"


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    for source in copy_sources():
        assert (ROOT / source).exists(), source
        assert not dockerignored(source), f"{source} is excluded by .dockerignore"


def test_secrets_and_local_state_stay_out_of_the_build_context() -> None:
    for path in (
        "deploy/secrets.env",
        ".git",
        ".venv",
        ".gepa-stream/mlflow.db",
        "mlruns",
        "tests/conftest.py",
    ):
        assert dockerignored(path), path


def test_entrypoint_is_the_cli_and_the_healthcheck_probes_healthz_on_the_web_port() -> None:
    (entrypoint,) = instructions("ENTRYPOINT")
    assert json.loads(entrypoint)[0] in PYPROJECT["project"]["scripts"]
    env = image_env()
    assert env["GEPA_STREAM_WEB_HOST"] == "0.0.0.0", (
        "the default 127.0.0.1 is unreachable from outside the container"
    )
    port = int(env["GEPA_STREAM_WEB_PORT"])
    assert port == Settings.model_fields["web_port"].default
    assert instructions("EXPOSE") == [str(port)]
    (healthcheck,) = instructions("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert f"os.environ.get('GEPA_STREAM_WEB_PORT', '{port}')" in healthcheck


class _Healthz(BaseHTTPRequestHandler):
    """Answers like the daemon's web server: 200 on /healthz, 404 elsewhere."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_healthcheck_command_passes_while_healthz_answers_and_fails_otherwise() -> None:
    (healthcheck,) = instructions("HEALTHCHECK")
    command = ["sh", "-c", healthcheck.split(" CMD ", 1)[1].replace("python ", f"{sys.executable} ", 1)]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    env = {**os.environ, "GEPA_STREAM_WEB_PORT": str(server.server_address[1])}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        answered = subprocess.run(command, env=env, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    refused = subprocess.run(command, env=env, timeout=30, capture_output=True)
    assert answered.returncode == 0
    assert refused.returncode != 0
