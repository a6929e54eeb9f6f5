"""The deployment files as data: docker-compose.yml, the Dockerfile, .dockerignore, so the tests
can check the service graph and file references without a Docker engine."""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from tests.deploy.metric_names import ROOT

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

_DEFAULTED = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def image_services() -> dict[str, dict[str, Any]]:
    """The services that run the repo's image with its entrypoint (`gepa-stream ...`)."""
    return {name: s for name, s in services().items() if "build" in s and "entrypoint" not in s}


def daemon_services() -> dict[str, dict[str, Any]]:
    """The services that run `gepa-stream run` (a daemon role)."""
    return {name: s for name, s in image_services().items() if command(s)[:1] == ["run"]}


def bridge_services() -> dict[str, dict[str, Any]]:
    """The services that run `gepa-stream bridge otel` (the OpenTelemetry bridge)."""
    return {name: s for name, s in image_services().items() if command(s)[:2] == ["bridge", "otel"]}


def command(service: dict[str, Any]) -> list[str]:
    """A service's `command` as a list (compose allows a string or a list)."""
    value = service.get("command") or []
    return shlex.split(value) if isinstance(value, str) else [str(word) for word in value]


def option(service: str, flag: str) -> str:
    """The value of `--flag=value` or `--flag value` in a service's command."""
    words = command(services()[service])
    values = [w.split("=", 1)[1] for w in words if w.startswith(f"{flag}=")]
    values += [value for word, value in zip(words, words[1:]) if word == flag]
    assert len(values) == 1, f"{service}: expected one {flag}"
    return values[0]


def healthcheck_urls(service: dict[str, Any]) -> list[str]:
    """The http:// URLs a service's healthcheck command requests."""
    test = (service.get("healthcheck") or {}).get("test") or []
    return re.findall(r"http://[^'\"\s]+", test if isinstance(test, str) else " ".join(test))


def interpolated(value: object) -> str:
    """A compose value as it is with no variables set in the shell: `${VAR:-default}` -> default."""
    return _DEFAULTED.sub(lambda m: m.group(2) or "", str(value))


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment` (mapping or list form), interpolated."""
    env = service.get("environment") or {}
    pairs = env.items() if isinstance(env, dict) else (item.split("=", 1) for item in env)
    return {key: interpolated(value) for key, value in pairs}


def container_env(service: dict[str, Any]) -> dict[str, str]:
    """What a container of the repo's image sees: the image's ENV overlaid by the service's environment."""
    return {**image_env(), **environment(service)}


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`depends_on` in long form (the short list form means `service_started`)."""
    deps = service.get("depends_on") or {}
    return deps if isinstance(deps, dict) else {name: {"condition": "service_started"} for name in deps}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    bind: bool


def mounts(service: dict[str, Any]) -> list[Mount]:
    """A service's volumes; a source starting with `.` or `/` is a bind mount of a host path."""
    result = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume["target"]
        else:
            source, target = volume.split(":")[:2]
        result.append(Mount(source, target, source.startswith((".", "/"))))
    return result


def mounted_from(service: dict[str, Any], container_path: str) -> Path | None:
    """The repo path a bind mount of `service` puts at `container_path` (or under it)."""
    wanted = PurePosixPath(container_path)
    for mount in mounts(service):
        target = PurePosixPath(mount.target)
        if mount.bind and (wanted == target or target in wanted.parents):
            return ROOT / mount.source / wanted.relative_to(target)
    return None


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


@cache
def dockerfile() -> tuple[Instruction, ...]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    instructions, pending = [], []
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending.append(stripped.removesuffix("\\").strip())
        if not stripped.endswith("\\"):
            keyword, _, args = " ".join(pending).partition(" ")
            instructions.append(Instruction(keyword.upper(), args.strip()))
            pending = []
    return tuple(instructions)


def instructions(keyword: str) -> list[str]:
    return [i.args for i in dockerfile() if i.keyword == keyword]


def expand_args(text: str) -> str:
    """`${NAME}` replaced by the default of the Dockerfile's `ARG NAME=default`."""
    defaults = dict(arg.split("=", 1) for arg in instructions("ARG") if "=" in arg)
    return re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], text)


def final_stage() -> list[Instruction]:
    """The instructions of the last build stage (what the image runs with)."""
    stages = [n for n, i in enumerate(dockerfile()) if i.keyword == "FROM"]
    return list(dockerfile()[stages[-1] :])


def image_env() -> dict[str, str]:
    """ENV of the final stage (`ENV K=V K2=V2` form)."""
    env: dict[str, str] = {}
    for instruction in final_stage():
        if instruction.keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(instruction.args))
    return env


def copy_sources() -> list[str]:
    """Build-context sources of COPY/ADD (not `--from` stage copies)."""
    sources = []
    for instruction in dockerfile():
        if instruction.keyword in ("COPY", "ADD"):
            words = shlex.split(instruction.args)
            if any(w.startswith("--from") for w in words):
                continue
            sources.extend(w for w in words[:-1] if not w.startswith("--"))
    return sources


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (or a parent folder) out of the build context.
    Handles the pattern forms this repo uses: plain names, `*` globs and `**/` prefixes."""
    patterns = [
        p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "negated patterns are not handled here"
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return any(
        fnmatch.fnmatch(candidate, pattern)
        or (pattern.startswith("**/") and fnmatch.fnmatch(candidate.rsplit("/", 1)[-1], pattern[3:]))
        for pattern in patterns
        for candidate in candidates
    )
