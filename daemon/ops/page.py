"""The ops page's HTTP side, free of any web framework: requests in, `Reply`s out.

GET  /ui                 the page (static HTML/JS/CSS shipped with the package)
GET  /ui/api/state       every prompt: live version and score (and canary), window, trigger outlook,
                         job, last decision, staged rollout (the ingest role's live watch)
GET  /ui/api/decisions   one prompt's decision history, newest first (?prompt=&limit=&offset=)
GET  /ui/api/versions    one registry prompt's versions (?name=)
GET  /ui/api/diff        the template diff between two versions (?name=&a=&b=)
POST /ui/api/actions     approve / reject / rollback / optimize / canary_advance / canary_abort:
                         a `gepa.command.v1` event, only with `Authorization: Bearer <GEPA_STREAM_ADMIN_TOKEN>`

Nothing here returns a setting, so no secret can reach the page.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daemon.ops.bus import OpsBus
from daemon.ops.live import LiveVersions, canary_of
from daemon.prompt_version import TAG_REQUEST, awaiting_approval
from daemon.registry_rest import registry_reader
from daemon.settings import Settings
from handlers.ops_history import OpsHistory
from handlers.template_diff import template_diff
from schemas.config import PolicyBook, PolicyFile, RolloutPolicy
from schemas.errors import GepaStreamError
from schemas.events import CommandAction, CommandData, CommandEvent

log = logging.getLogger("gepa_stream.ops")
MAX_DECISIONS_PAGE = 500
_STATIC = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/ops.js": ("ops.js", "text/javascript; charset=utf-8"),
    "/ui/ops.css": ("ops.css", "text/css; charset=utf-8"),
}
OPS_PATHS = (
    *_STATIC,
    "/ui/api/state",
    "/ui/api/decisions",
    "/ui/api/versions",
    "/ui/api/diff",
    "/ui/api/actions",
)
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class ActionRequest(BaseModel):
    """What the page's action buttons post."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    action: CommandAction
    version: int | None = Field(default=None, gt=0)
    requested_by: str = Field(
        min_length=1, max_length=100, description="who asks (logged and carried in the command)"
    )


class OpsPage:
    """Serves the page and its JSON from what the process has: history, live versions, the
    ingest windows and the local job runner (each None where this role has none)."""

    def __init__(
        self,
        settings: Settings,
        policies: PolicyFile,
        role: str,
        windows: Callable[[list[str]], dict[str, Any]] | None,
        jobs: Callable[[], dict[str, Any]] | None,
        policy_status: Callable[[], dict[str, Any]] | None = None,
        window_names: Callable[[], list[str]] | None = None,
    ) -> None:
        self.role = role
        self.policy_status = policy_status
        self.policies = PolicyBook(policies)
        self.windows = windows  # the ingest role's status of the prompts named (None: not this role)
        self.window_names = window_names  # the prompts with a window here
        self.jobs = jobs
        self.token = settings.admin_token
        self.history = OpsHistory()
        self.live = LiveVersions(policies, self.history, on_demand=role == "ingest")
        self.bus = OpsBus(settings, self.history, on_decision=self.live.poke)
        self._static = {
            path: resources.files("daemon.ops").joinpath("static", name).read_bytes()
            for path, (name, _) in _STATIC.items()
        }

    def reload(self, policies: PolicyFile) -> None:
        """A reloaded policy file (daemon/policy_watch.py): the page lists and acts on its prompts."""
        self.policies.replace(policies)
        self.live.reload(policies)

    # -- routing -----------------------------------------------------------------------------

    async def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        remote: str,
    ) -> Reply:
        path = path.rstrip("/") or "/"
        if path in _STATIC and method == "GET":
            return Reply(200, self._static[path], _STATIC[path][1], dict(_PAGE_HEADERS))
        routes: dict[tuple[str, str], Callable[[], Any]] = {
            ("GET", "/ui/api/state"): lambda: self.state(query),
            ("GET", "/ui/api/decisions"): lambda: self.decisions(query),
            ("GET", "/ui/api/versions"): lambda: self.versions(query),
            ("GET", "/ui/api/diff"): lambda: self.diff(query),
            ("POST", "/ui/api/actions"): lambda: self.action(headers, body, remote),
        }
        route = routes.get((method, path))
        if route is None:
            return _json({"error": f"no {method} {path} here"}, 404)
        try:
            result = route()
            return await result if asyncio.iscoroutine(result) else result
        except BadRequest as exc:
            return _json({"error": str(exc)}, 400)

    # -- reading -----------------------------------------------------------------------------

    def state(self, query: Mapping[str, str] | None = None) -> Reply:
        """The page's state: one page of prompts (`offset`, `limit`), filtered by a name
        substring (`q`) and a `state` (PROMPT_STATES); `total` and `matched` count them all."""
        query = query or {}
        wanted_state = query.get("state", "")
        if wanted_state and wanted_state not in PROMPT_STATES:
            raise BadRequest(f"state: one of {', '.join(PROMPT_STATES)}, not {wanted_state!r}")
        needle = query.get("q", "").lower()
        offset = _int(query, "offset", 0, 0, 10**9)
        limit = _int(query, "limit", DEFAULT_PROMPTS_PAGE, 1, MAX_PROMPTS_PAGE)
        self.live.wanted()
        jobs = self.jobs() if self.jobs is not None else {}
        local_by_prompt = {job.get("prompt"): dict(job, request_id=rid) for rid, job in jobs.items()}
        here = self.window_names() if self.window_names is not None else []
        names = [
            name
            for name in sorted(dict.fromkeys([*self.policies, *here]))  # listed, and matched ones seen here
            if name in self.policies
        ]
        total = len(names)
        names = [name for name in names if needle in name.lower()]
        if wanted_state:  # every candidate's entry is needed to filter by state
            prompts = [e for e in self._entries(names, local_by_prompt) if wanted_state in prompt_states(e)]
            matched, prompts = len(prompts), prompts[offset : offset + limit]
        else:
            matched, prompts = len(names), self._entries(names[offset : offset + limit], local_by_prompt)
        return _json(
            {
                "generated_at": time.time(),
                "role": self.role,
                "windows_here": self.windows is not None,
                "jobs_here": self.jobs is not None,
                "history_caught_up": self.bus.caught_up,
                "actions": self._actions_state(),
                "prompts": prompts,
                "total": total,
                "matched": matched,
                "offset": offset,
                "policy": self.policy_status() if self.policy_status is not None else None,
                "dead_letters": self.history.dead_letters(),
            }
        )

    def _entries(self, names: list[str], local_by_prompt: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
        """The page entries of `names`: live versions, window, job, last decision."""
        windows = self.windows(names) if self.windows is not None else {}
        entries = []
        for name in names:
            policy = self.policies[name]
            self.live.track(name)
            registry_names = self.live.names.get(name, [name])
            local = local_by_prompt.get(name)  # a job running here wins over a later skip of the same prompt
            request = (
                self.history.request(name, local["request_id"])
                if local is not None
                else self.history.latest_request(name)
            )
            job = asdict(request) if request is not None else None
            if local is not None:
                job = {
                    **(job or {"request_id": local["request_id"], "prompt": name, "status": "started"}),
                    "live": local,
                }
            decisions = [d for d in (self.history.last_decision(n) for n in registry_names) if d is not None]
            window = windows.get(name)
            entries.append(
                {
                    "name": name,
                    "backend": policy.backend,
                    "mode": policy.promotion.mode,
                    "live": [asdict(self.live.entries[n]) for n in registry_names if n in self.live.entries],
                    "window": window,
                    "rollout": window.get("rollout") if window is not None else None,
                    "rollout_policy": _rollout_policy(policy.promotion.rollout),
                    "job": job,
                    "last_decision": asdict(max(decisions, key=lambda d: d.time)) if decisions else None,
                    "decisions_total": sum(self.history.decisions(n, limit=0)[1] for n in registry_names),
                }
            )
        return entries

    def decisions(self, query: Mapping[str, str]) -> Reply:
        prompt = self._policy_prompt(query)
        limit = _int(query, "limit", 100, 1, MAX_DECISIONS_PAGE)
        offset = _int(query, "offset", 0, 0, 10**9)
        merged, total = [], 0
        for name in self.live.names.get(prompt, [prompt]):
            records, held = self.history.decisions(name, limit=limit + offset)
            merged.extend(records)
            total += held
        merged.sort(key=lambda d: d.time, reverse=True)
        return _json(
            {
                "prompt": prompt,
                "total": total,
                "offset": offset,
                "decisions": [asdict(d) for d in merged[offset : offset + limit]],
            }
        )

    async def versions(self, query: Mapping[str, str]) -> Reply:
        registry = registry_reader()  # REST for an http(s) tracking URI: no MLflow in this process
        name = self._registry_name(query)
        try:
            current, canary, versions = await asyncio.to_thread(
                lambda: (registry.production(name), registry.canary(name), registry.versions(name))
            )
        except Exception as exc:
            return _json({"error": f"MLflow did not answer: {type(exc).__name__}: {str(exc)[:200]}"}, 503)
        canary_version, canary_share = canary_of(canary)
        return _json(
            {
                "name": name,
                "production": current.version if current is not None else None,
                "canary": canary_version,
                "canary_share": canary_share,
                "versions": [
                    {
                        "version": v.version,
                        "awaiting_approval": awaiting_approval(v),
                        "score": v.final_score,
                        "parent_version": _int_or_none(v.tags.get("gepa_stream.parent_version")),
                        "request_id": v.tags.get(TAG_REQUEST),
                        "trigger": v.tags.get("gepa_stream.trigger"),
                        "canary": v.version == canary_version,
                    }
                    for v in reversed(versions)
                ],
            }
        )

    async def diff(self, query: Mapping[str, str]) -> Reply:
        name = self._registry_name(query)
        a, b = _int(query, "a", None, 1, 10**9), _int(query, "b", None, 1, 10**9)
        try:
            by_number = {
                v.version: v.template for v in await asyncio.to_thread(registry_reader().versions, name)
            }
        except Exception as exc:
            return _json({"error": f"MLflow did not answer: {type(exc).__name__}: {str(exc)[:200]}"}, 503)
        missing = [str(v) for v in (a, b) if v not in by_number]
        if missing:
            return _json({"error": f"{name} has no version {', '.join(missing)}"}, 404)
        rows = template_diff(by_number[a], by_number[b])
        return _json(
            {
                "name": name,
                "a": a,
                "b": b,
                "changed": any(r.op != "equal" for r in rows),
                "rows": [asdict(r) for r in rows],
            }
        )

    # -- actions -----------------------------------------------------------------------------

    def _actions_state(self) -> dict[str, Any]:
        if self.token is None:
            return {
                "enabled": False,
                "why": "Actions are off on this daemon: set GEPA_STREAM_ADMIN_TOKEN to turn them on.",
            }
        return {"enabled": True, "why": "Actions need the admin token (GEPA_STREAM_ADMIN_TOKEN)."}

    async def action(self, headers: Mapping[str, str], body: bytes, remote: str) -> Reply:
        """1. actions on? 2. token right (constant time)? 3. a valid request? 4. send the command, log who asked."""
        if self.token is None:
            log.warning(
                "ops page: refused an action from %s: actions are off (GEPA_STREAM_ADMIN_TOKEN is not set)",
                remote,
            )
            return _json({"error": self._actions_state()["why"]}, 403)
        given = _bearer(headers)
        if given is None or not hmac.compare_digest(given.encode(), self.token.get_secret_value().encode()):
            why = "no admin token was given" if given is None else "the admin token is wrong"
            log.warning("ops page: refused an action from %s: %s", remote, why)
            return _json(
                {"error": f"Not sent: {why}. Sign in with the admin token (GEPA_STREAM_ADMIN_TOKEN)."},
                401,
                {"WWW-Authenticate": "Bearer"},
            )
        try:
            request = ActionRequest.model_validate_json(body or b"{}")
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            raise BadRequest(f"{'.'.join(str(p) for p in first['loc']) or 'body'}: {first['msg']}") from None
        if request.prompt not in self.policies:
            return _json({"error": f"prompt {request.prompt!r} is not in the policy file"}, 404)
        requested_by = f"{request.requested_by.strip()} (ops page)"
        event: CommandEvent = CommandEvent.build(
            CommandData(
                prompt=request.prompt,
                action=request.action,
                version=request.version,
                requested_by=requested_by,
            ),
            source="gepa-stream/ops-page",
        )
        await self.bus.send_command(event)
        target = f" v{request.version}" if request.version else ""
        log.warning(
            "ops page: %s %s%s requested by %s from %s (command %s)",
            request.action,
            request.prompt,
            target,
            requested_by,
            remote,
            event.id,
        )
        return _json(
            {
                "sent": event.id,
                "message": f"{request.action} {request.prompt}{target} sent as {requested_by}; the page updates when the daemon acts.",
            },
            202,
        )

    # -- helpers -----------------------------------------------------------------------------

    def _policy_prompt(self, query: Mapping[str, str]) -> str:
        prompt = query.get("prompt", "")
        if prompt not in self.policies:
            raise BadRequest(f"prompt: {prompt!r} is not in the policy file")
        return prompt

    def _registry_name(self, query: Mapping[str, str]) -> str:
        name = query.get("name", "")
        if not any(name in names for names in self.live.names.values()):
            raise BadRequest(f"name: {name!r} is not a prompt this daemon manages")
        return name


PROMPT_STATES = ("running", "awaiting_approval", "guarded", "canary", "failing")
DEFAULT_PROMPTS_PAGE = 100
MAX_PROMPTS_PAGE = 500


def prompt_states(entry: dict[str, Any]) -> set[str]:
    """The filterable states of one prompt's page entry: a job running, a version awaiting
    approval, a live guard watching, a canary running, the last job failed."""
    job, window, rollout = entry.get("job") or {}, entry.get("window") or {}, entry.get("rollout") or {}
    states = set()
    if job.get("status") in ("requested", "started", "retrying"):
        states.add("running")
    if job.get("status") == "failed":
        states.add("failing")
    if any(live.get("awaiting") for live in entry.get("live") or []):
        states.add("awaiting_approval")
    if (window.get("guard") or {}).get("state") == "watching":
        states.add("guarded")
    if rollout.get("state") == "canary":
        states.add("canary")
    return states


class BadRequest(GepaStreamError, ValueError):
    """A query or body the page cannot act on; the message names the parameter."""


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Authorization") or headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status, orjson.dumps(value), "application/json", {"Cache-Control": "no-store", **(headers or {})}
    )


def _int(query: Mapping[str, str], name: str, default: int | None, low: int, high: int) -> Any:
    raw = query.get(name)
    if raw is None:
        if default is None:
            raise BadRequest(f"{name}: required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}: must be between {low} and {high}")
    return value


def _rollout_policy(policy: RolloutPolicy) -> dict[str, Any]:
    """What the page needs of the prompt's staged rollout policy (a running rollout keeps the
    stages it started with: its status carries them)."""
    return {
        "enabled": policy.enabled,
        "stages": policy.stages,
        "min_live_examples": policy.min_live_examples,
        "margin": policy.margin,
        "confidence": policy.confidence,
        "max_stage_duration_s": policy.max_stage_duration.total_seconds(),
    }


def _int_or_none(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isdigit() else None
