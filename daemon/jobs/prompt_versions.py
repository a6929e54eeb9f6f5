"""The MLflow Prompt Registry side of a job: the production baseline, idempotent
registration of candidates (keyed by `request_id`), and moving the `production` alias."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from daemon.jobs.mlflow_errors import no_alias, not_found
from schemas.events import PRODUCTION_ALIAS

TAG_REQUEST = "gepa_stream.request_id"
TAG_PREVIOUS = "gepa_stream.previous_production"
TAG_AWAITING = "gepa_stream.awaiting_approval"
TAG_GUARD_ROLLBACK = "gepa_stream.rolled_back_by_guard"
_EXPERIMENT_VARS = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


@dataclass(frozen=True, slots=True)
class Version:
    name: str
    version: int
    template: str
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"


def _version(pv: Any) -> Version:
    return Version(
        pv.name,
        int(pv.version),
        pv.template if isinstance(pv.template, str) else str(pv.template),
        dict(pv.tags or {}),
    )


def versions(name: str) -> list[Version]:
    """Every version of a prompt, oldest first ([] if the prompt does not exist)."""
    client = MlflowClient()
    found: list[Version] = []
    token = None
    while True:
        try:
            page = client.search_prompt_versions(name, max_results=100, page_token=token)
        except MlflowException as exc:
            if not_found(exc):  # an unknown prompt
                return []
            raise
        found.extend(_version(pv) for pv in page)
        token = page.token
        if not token:
            return sorted(found, key=lambda v: v.version)


def production(name: str) -> Version | None:
    """The version the `production` alias points at, if any."""
    try:
        return _version(MlflowClient().get_prompt_version_by_alias(name, PRODUCTION_ALIAS))
    except MlflowException as exc:
        if no_alias(exc):  # no such prompt, or no production alias yet
            return None
        raise


def ensure_production(name: str, initial_template: str | None = None) -> Version:
    """The production baseline: the alias target; else the latest version becomes production;
    else (only when `initial_template` is given) a first version is registered as production."""
    current = production(name)
    if current is not None:
        return current
    existing = versions(name)
    if existing:
        latest = existing[-1]
    elif initial_template is not None:
        latest = _version(
            mlflow.genai.register_prompt(
                name=name, template=initial_template, commit_message="Baseline registered by gepa-stream"
            )
        )
    else:
        raise LookupError(f"prompt {name!r} is not registered in MLflow ({mlflow.get_tracking_uri()})")
    mlflow.genai.set_prompt_alias(name, PRODUCTION_ALIAS, latest.version)
    return latest


def register_candidate(name: str, template: str, request_id: str, tags: dict[str, str]) -> Version:
    """Register `template` as a new version tagged with `request_id` — unless a version with that
    tag exists already (a redelivered or resumed request), which is returned instead."""
    for version in versions(name):
        if version.tags.get(TAG_REQUEST) == request_id:
            return version
    registered = mlflow.genai.register_prompt(
        name=name,
        template=template,
        commit_message=f"Candidate of optimization {request_id}",
        tags={**tags, TAG_REQUEST: request_id},
    )
    return _version(registered)


def move_production(name: str, version: int) -> int | None:
    """Point `production` at `version`, remembering the version it replaces on the new one
    (for rollback); returns the replaced version. A no-op if it already points there."""
    current = production(name)
    if current is not None and current.version == version:
        return int(current.tags[TAG_PREVIOUS]) if current.tags.get(TAG_PREVIOUS, "").isdigit() else None
    client = MlflowClient()
    if current is not None:
        client.set_prompt_version_tag(name, str(version), TAG_PREVIOUS, str(current.version))
    if TAG_AWAITING in (client.get_prompt_version(name, str(version)).tags or {}):
        clear_awaiting(name, version)
    mlflow.genai.set_prompt_alias(name, PRODUCTION_ALIAS, version)
    return current.version if current is not None else None


def mark_awaiting_approval(name: str, version: int) -> None:
    MlflowClient().set_prompt_version_tag(name, str(version), TAG_AWAITING, "true")


def awaiting_approval(name: str) -> list[Version]:
    """Versions a manual-mode gate passed that wait for an `approve` command, oldest first."""
    return [v for v in versions(name) if v.tags.get(TAG_AWAITING) == "true"]


def clear_awaiting(name: str, version: int) -> None:
    MlflowClient().delete_prompt_version_tag(name, str(version), TAG_AWAITING)


def previous_production(name: str) -> tuple[Version, int] | None:
    """(current production, the version it replaced) for a rollback, or None if there is none."""
    current = production(name)
    if current is None or not current.tags.get(TAG_PREVIOUS, "").isdigit():
        return None
    return current, int(current.tags[TAG_PREVIOUS])


def roll_back(name: str, expected: int | None = None) -> tuple[int, int] | None:
    """Move `production` back to the version the current one replaced; (from, to) or None.
    With `expected`, only while production is still that version (a stale request does nothing).
    The target keeps its own history, so a second rollback goes further back, not forth."""
    found = previous_production(name)
    if found is None:
        return None
    current, previous = found
    if expected is not None and current.version != expected:
        return None
    mlflow.genai.set_prompt_alias(name, PRODUCTION_ALIAS, previous)
    return current.version, previous


def mark_rolled_back_by_guard(name: str, version: int, reason: str) -> None:
    """Remember on the version that the live guard rolled it back (and why)."""
    MlflowClient().set_prompt_version_tag(name, str(version), TAG_GUARD_ROLLBACK, reason[:4000])


def rolled_back_twin(name: str, version: int) -> Version | None:
    """Another version with the same template that the live guard rolled back, if any: promoting
    this one would bring the regression straight back."""
    known = versions(name)
    mine = next((v for v in known if v.version == version), None)
    if mine is None:
        return None
    return next(
        (
            v
            for v in known
            if v.version != version and TAG_GUARD_ROLLBACK in v.tags and v.template == mine.template
        ),
        None,
    )


@contextmanager
def scratch_registry(db: Path, baseline: Version) -> Iterator[None]:
    """Point MLflow at a throwaway sqlite store that holds the baseline at its real version
    number (and `production` on it) while the block runs.

    `mlflow.genai.optimize_prompts` registers a version on every run; run there, it leaves
    the real registry untouched, which only ever receives versions the daemon registers.
    The store is kept for the job's later attempts; it is built complete or not at all
    (`_build_scratch`), since MLflow's schema migration is many statements a kill can cut.
    """
    real = mlflow.get_tracking_uri()
    # the user's experiment does not exist in the scratch store
    hidden = {name: os.environ.pop(name) for name in _EXPERIMENT_VARS if name in os.environ}
    try:
        if not db.exists():
            _build_scratch(db, baseline)
        mlflow.set_tracking_uri(f"sqlite:///{db}")
        yield
    finally:
        mlflow.set_tracking_uri(real)
        os.environ.update(hidden)


def _build_scratch(db: Path, baseline: Version) -> None:
    """1. drop what an earlier, killed build left; 2. migrate and seed a store beside `db`;
    3. rename it to `db`, so a store found at `db` is always complete."""
    partial = db.with_name(db.name + ".partial")
    for leftover in (partial, partial.with_name(partial.name + "-journal")):
        leftover.unlink(missing_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{partial}")
    for number in range(1, baseline.version):
        mlflow.genai.register_prompt(name=baseline.name, template=f"(placeholder for version {number})")
    mlflow.genai.register_prompt(name=baseline.name, template=baseline.template)
    mlflow.genai.set_prompt_alias(baseline.name, PRODUCTION_ALIAS, baseline.version)
    partial.replace(db)
