"""The Prompt Registry reads the ops page needs, over MLflow's REST API — without importing MLflow.

An ingest-only worker's page shows each prompt's `production` version, its score and the
versions awaiting approval. Through the MLflow client that costs ~200 MB of RSS (MLflow and what
it imports); against a tracking server it is three GET endpoints of MLflow's model registry,
where `mlflow.genai.register_prompt` keeps prompts (a registered model tagged
`mlflow.prompt.is_prompt=true`, one model version per prompt version, the template in the
version's `mlflow.prompt.text` tag):

- `GET /api/2.0/mlflow/registered-models/get?name=` (is it a prompt?),
- `GET /api/2.0/mlflow/model-versions/search?filter=&max_results=&order_by=&page_token=`,
- `GET /api/2.0/mlflow/registered-models/alias?name=&alias=`.

`RestRegistry` answers exactly what `daemon.prompt_versions` answers for the same store
(`tests/integration/test_registry_rest.py` keeps it true): the same `Version`s, [] for an unknown
prompt, None for a missing alias. `registry_reader()` picks it for an http(s) tracking URI and
an adapter over `prompt_versions` (MLflow's own stores) for any other.

Credentials as MLflow reads them: `MLFLOW_TRACKING_USERNAME`/`_PASSWORD` (or
`~/.mlflow/credentials`) as basic auth, else `MLFLOW_TRACKING_TOKEN` as a bearer token;
`MLFLOW_TRACKING_INSECURE_TLS`, `MLFLOW_TRACKING_SERVER_CERT_PATH`,
`MLFLOW_TRACKING_CLIENT_CERT_PATH`, `MLFLOW_WORKSPACE`. An auth plugin (`MLFLOW_TRACKING_AUTH`,
`MLFLOW_TRACKING_AWS_SIGV4`) needs MLflow's client: `registry_reader()` then uses the adapter.
No retries: the page reads again at its next refresh and shows the last good answer meanwhile.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from optimization.prompt_version import Version
from schemas.events import CANARY_ALIAS, PRODUCTION_ALIAS

API = "/api/2.0/mlflow"
IS_PROMPT_TAG = "mlflow.prompt.is_prompt"
TEXT_TAG = "mlflow.prompt.text"
TYPE_TAG = "_mlflow_prompt_type"
RESERVED_TAGS = frozenset(
    {IS_PROMPT_TAG, TEXT_TAG, TYPE_TAG, "_mlflow_prompt_response_format", "_mlflow_prompt_model_config"}
)
"""MLflow's own tags on a prompt version, which `PromptVersion.tags` leaves out."""
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
INVALID_PARAMETER = "INVALID_PARAMETER_VALUE"
_TRUE = {"true", "1"}  # MLflow's boolean variables


class RegistryError(Exception):
    """The tracking server refused a read or did not answer. `error_code` is MLflow's
    (`RESOURCE_DOES_NOT_EXIST`, ...) when it answered with one; `status` its HTTP status
    (None: no answer — connection refused, timeout, TLS)."""

    def __init__(self, message: str, *, error_code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.status = status


class RegistryReader(Protocol):
    """What the ops page reads of the registry, whichever way it is read."""

    def versions(self, name: str) -> list[Version]: ...

    def alias(self, name: str, alias: str) -> Version | None: ...

    def production(self, name: str) -> Version | None: ...

    def canary(self, name: str) -> Version | None: ...


class RestRegistry:
    """Prompt versions and aliases from a tracking server's REST API (stdlib HTTP, no MLflow)."""

    def __init__(self, tracking_uri: str, *, timeout: float = 10.0, page_size: int = 100) -> None:
        scheme = urllib.parse.urlsplit(tracking_uri).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) tracking URI: {tracking_uri!r}")
        self.base = tracking_uri.rstrip("/")
        self.timeout = timeout
        self.page_size = page_size

    def versions(self, name: str) -> list[Version]:
        """Every version of a prompt, oldest first ([] if the prompt does not exist)."""
        if not self._is_prompt(name, missing_ok=True):
            return []
        found: list[Version] = []
        token: str | None = None
        while True:
            page = self._get(
                "/model-versions/search",
                {
                    "filter": f"name = '{name}' AND tag.`{IS_PROMPT_TAG}` = 'true'",
                    "max_results": self.page_size,
                    "order_by": "version_number DESC",
                    **({"page_token": token} if token else {}),
                },
            )
            found.extend(_version(mv) for mv in page.get("model_versions", []))
            token = page.get("next_page_token") or None
            if not token:
                return sorted(found, key=lambda v: v.version)

    def alias(self, name: str, alias: str) -> Version | None:
        """The version `alias` points at; None if the prompt or the alias does not exist (or the
        name is a model, not a prompt), as `prompt_versions` reads it."""
        try:
            if alias.isdigit():  # MLflow's store reads a number as a version, not an alias
                found = self._get("/model-versions/get", {"name": name, "version": alias})
            else:
                found = self._get("/registered-models/alias", {"name": name, "alias": alias})
        except RegistryError as exc:
            if exc.error_code in (NOT_FOUND, INVALID_PARAMETER):
                return None
            raise
        mv = found.get("model_version") or {}
        return _version(mv) if IS_PROMPT_TAG in _tags(mv) else None

    def production(self, name: str) -> Version | None:
        """The version the `production` alias points at, if any."""
        return self.alias(name, PRODUCTION_ALIAS)

    def canary(self, name: str) -> Version | None:
        """The version the `canary` alias points at, if any."""
        return self.alias(name, CANARY_ALIAS)

    # -- HTTP --------------------------------------------------------------------------------

    def _is_prompt(self, name: str, *, missing_ok: bool) -> bool:
        try:
            model = self._get("/registered-models/get", {"name": name}).get("registered_model") or {}
        except RegistryError as exc:
            if missing_ok and exc.error_code == NOT_FOUND:
                return False
            raise
        if _tags(model).get(IS_PROMPT_TAG) != "true":
            raise RegistryError(
                f"{name!r} is registered as a model, not a prompt", error_code=INVALID_PARAMETER, status=400
            )
        return True

    def _get(self, endpoint: str, params: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base}{API}{endpoint}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, headers=self._headers, method="GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._tls) as reply:
                body = reply.read()
        except urllib.error.HTTPError as exc:
            raise _answered_error(url, exc) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise RegistryError(f"GET {_shown(url)}: no answer ({reason})") from exc
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            raise RegistryError(f"GET {_shown(url)}: not JSON: {body[:200]!r}") from None
        if not isinstance(parsed, dict):
            raise RegistryError(f"GET {_shown(url)}: not a JSON object: {body[:200]!r}")
        return parsed

    @cached_property
    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "gepa-stream-registry-rest"}
        username, password = _credentials()
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if username and password:  # MLflow's order: basic auth first, then the token
            headers["Authorization"] = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        if workspace := os.environ.get("MLFLOW_WORKSPACE", "").strip():
            headers["X-MLFLOW-WORKSPACE"] = workspace
        return headers

    @cached_property
    def _tls(self) -> ssl.SSLContext | None:
        if not self.base.startswith("https:"):
            return None
        insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").strip().lower() in _TRUE
        server_cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None
        if insecure and server_cert:
            raise RegistryError(
                "MLFLOW_TRACKING_INSECURE_TLS and MLFLOW_TRACKING_SERVER_CERT_PATH cannot both be set"
            )
        context = ssl.create_default_context(cafile=server_cert)
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client_cert := os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
            context.load_cert_chain(client_cert)
        return context


class MlflowRegistry:
    """The same reads through the MLflow client (`daemon.prompt_versions`), for tracking URIs
    only MLflow's store code reads (sqlite:///, a file store, databricks, an auth plugin). It
    imports MLflow at its first read, and reads the URI MLflow is set to (`MLFLOW_TRACKING_URI`)."""

    def versions(self, name: str) -> list[Version]:
        from daemon import prompt_versions

        return prompt_versions.versions(name)

    def alias(self, name: str, alias: str) -> Version | None:
        from daemon import prompt_versions

        return prompt_versions.alias(name, alias)

    def production(self, name: str) -> Version | None:
        return self.alias(name, PRODUCTION_ALIAS)

    def canary(self, name: str) -> Version | None:
        return self.alias(name, CANARY_ALIAS)


def registry_reader(tracking_uri: str | None = None, *, timeout: float = 10.0) -> RegistryReader:
    """The registry reader for `tracking_uri` (default: `MLFLOW_TRACKING_URI`, which the worker sets
    from GEPA_STREAM_MLFLOW_TRACKING_URI): REST for http(s) without an auth plugin, else MLflow."""
    uri = tracking_uri if tracking_uri is not None else os.environ.get("MLFLOW_TRACKING_URI", "")
    plugin = (
        os.environ.get("MLFLOW_TRACKING_AUTH")
        or os.environ.get("MLFLOW_TRACKING_AWS_SIGV4", "").lower() in _TRUE
    )
    if urllib.parse.urlsplit(uri).scheme in ("http", "https") and not plugin:
        return RestRegistry(uri, timeout=timeout)
    return MlflowRegistry()


# -- MLflow's JSON -> Version --------------------------------------------------------------------


def _tags(entity: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in entity.get("tags") or [] if "key" in t}


def _version(mv: dict[str, Any]) -> Version:
    """A model version as `prompt_versions` reads it (through MLflow's `PromptVersion`): a chat
    template is `str()` of its message list, MLflow's own tags are left out."""
    tags = _tags(mv)
    text = tags.get(TEXT_TAG, "")
    template = str(json.loads(text)) if tags.get(TYPE_TAG) == "chat" else text
    return Version(
        mv["name"],
        int(mv["version"]),
        template,
        {k: v for k, v in tags.items() if k not in RESERVED_TAGS},
    )


def _answered_error(url: str, exc: urllib.error.HTTPError) -> RegistryError:
    body = exc.read()[:2000]
    try:
        parsed = json.loads(body)
        code, message = parsed.get("error_code"), parsed.get("message", "")
    except (ValueError, AttributeError):
        code, message = None, body.decode(errors="replace")[:200]
    return RegistryError(
        f"GET {_shown(url)}: HTTP {exc.code} {code or ''} {message}".strip(), error_code=code, status=exc.code
    )


def _shown(url: str) -> str:
    """The URL without a userinfo part (user:password@), for messages."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _credentials() -> tuple[str | None, str | None]:
    """MLflow's basic-auth credentials: the environment, else `~/.mlflow/credentials` ([mlflow])."""
    username = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    path = Path.home() / ".mlflow" / "credentials"
    if (username is None or password is None) and path.exists():
        config = configparser.ConfigParser()
        config.read(path)
        if "mlflow" in config:
            username = username or config["mlflow"].get("mlflow_tracking_username")
            password = password or config["mlflow"].get("mlflow_tracking_password")
    return username, password
