"""The daemon's reads and writes of the MLflow Prompt Registry, through MLflow's client: versions, the
`production` / `canary` aliases, what the promotion rules read and change (`registry`, `apply`),
idempotent registration, a job's scratch store. Jobs, `compare` and the ops page share it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from daemon.prompt_version import BLOCKING_TAGS, TAG_AWAITING, TAG_PREVIOUS
from daemon.prompt_version import TAG_CANARY_ABORTED as TAG_CANARY_ABORTED  # re-exported, as the next ones:
from daemon.prompt_version import TAG_GUARD_ROLLBACK as TAG_GUARD_ROLLBACK
from daemon.prompt_version import TAG_REQUEST as TAG_REQUEST
from handlers.promotion import Outcome, Registry
from optimization.mlflow_errors import no_alias, not_found
from optimization.prompt_version import Version as Version
from schemas.events import CANARY_ALIAS, PRODUCTION_ALIAS, TRAFFIC_SHARE_TAG

_EXPERIMENT_VARS = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")


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
    return _alias(name, PRODUCTION_ALIAS)


def canary(name: str) -> Version | None:
    """The version the `canary` alias points at (a staged rollout running), if any; its share is
    its `TRAFFIC_SHARE_TAG`."""
    return _alias(name, CANARY_ALIAS)


def alias(name: str, alias: str) -> Version | None:
    """The version `alias` points at; None if the prompt or the alias does not exist."""
    return _alias(name, alias)


def _alias(name: str, alias: str) -> Version | None:
    try:
        return _version(MlflowClient().get_prompt_version_by_alias(name, alias))
    except MlflowException as exc:
        if no_alias(exc):  # no such prompt, or no such alias
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
        client.delete_prompt_version_tag(name, str(version), TAG_AWAITING)
    mlflow.genai.set_prompt_alias(name, PRODUCTION_ALIAS, version)
    return current.version if current is not None else None


def registry(name: str) -> Registry:
    """What the promotion rules (handlers/promotion.py) read of one prompt name."""
    known = versions(name)
    current, canary = production(name), _alias(name, CANARY_ALIAS)
    previous = current.tags.get(TAG_PREVIOUS, "") if current is not None else ""
    share = canary.tags.get(TRAFFIC_SHARE_TAG) if canary is not None else None
    return Registry(
        production=current.version if current is not None else None,
        previous=int(previous) if previous.isdigit() else None,
        awaiting=tuple(v.version for v in known if v.tags.get(TAG_AWAITING) == "true"),
        canary=canary.version if canary is not None and share is not None else None,
        share=float(share) if share is not None else None,
        blocked={v.version: BLOCKING_TAGS[tag] for v in known for tag in BLOCKING_TAGS if tag in v.tags},
        templates={v.version: v.template for v in known},
    )


def apply(name: str, outcome: Outcome) -> None:
    """Make the registry change a promotion rule decided (idempotent: a resumed job or a
    redelivered command applies it again to the same end)."""
    client, version = MlflowClient(), str(outcome.to_version)
    match outcome.change:
        case "move_production":
            move_production(name, int(version))
        case "await_approval":
            client.set_prompt_version_tag(name, version, TAG_AWAITING, "true")
        case "clear_awaiting":
            client.delete_prompt_version_tag(name, version, TAG_AWAITING)
        case "roll_back":
            mlflow.genai.set_prompt_alias(name, PRODUCTION_ALIAS, int(version))
        case "start_canary" | "set_share":
            replaced = _alias(name, CANARY_ALIAS)
            client.set_prompt_version_tag(name, version, TRAFFIC_SHARE_TAG, str(outcome.traffic_share))
            mlflow.genai.set_prompt_alias(name, CANARY_ALIAS, int(version))
            if replaced is not None and replaced.version != int(version):
                client.delete_prompt_version_tag(name, str(replaced.version), TRAFFIC_SHARE_TAG)
        case "promote_canary":
            move_production(name, int(version))
            _end_canary(name, int(version))
        case "abort_canary":
            _end_canary(name, int(outcome.from_version or 0))
    if outcome.block and outcome.from_version is not None:
        tag = TAG_CANARY_ABORTED if outcome.change == "abort_canary" else TAG_GUARD_ROLLBACK
        client.set_prompt_version_tag(name, str(outcome.from_version), tag, outcome.reason[:4000])


def _end_canary(name: str, version: int) -> None:
    """1. the alias goes (a router then sends everything to production); 2. its share tag."""
    if _alias(name, CANARY_ALIAS) is not None:
        MlflowClient().delete_prompt_alias(name, CANARY_ALIAS)
    tags = next((v.tags for v in versions(name) if v.version == version), {})
    if TRAFFIC_SHARE_TAG in tags:
        MlflowClient().delete_prompt_version_tag(name, str(version), TRAFFIC_SHARE_TAG)


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
