"""Operator commands against the MLflow registry: approve or reject a version awaiting
approval, roll `production` back. Each command's outcome is announced as a promotion event."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from daemon.jobs import prompt_versions
from daemon.jobs.backends import prompt_names
from daemon.jobs.outage import MLFLOW, answers_again, mlflow_outage
from handlers.promotion import promotion_event
from schemas import event_ids
from schemas.config import PromptPolicy
from schemas.events import CommandData, CommandEvent, PromotionDecision

log = logging.getLogger("gepa_stream.jobs")
Outcome = tuple[PromotionDecision, int | None, int, str]
AnnouncePromotion = Callable[..., Awaitable[None]]  # Announcer.promotion(event, program=...)


class Commands:
    """Applies the commands of the policies' prompts, each prompt's in the order they arrive."""

    def __init__(
        self, policies: dict[str, PromptPolicy], tracking_uri: str, announce: AnnouncePromotion, source: str
    ) -> None:
        self.policies = policies
        self.tracking_uri = tracking_uri
        self.announce = announce
        self.source = source
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def apply_in_order(self, event: CommandEvent) -> None:
        """Apply a command after the prompt's earlier ones. While MLflow is unreachable the command
        waits for it (up to the prompt's `budget.max_outage_wait`); a command that still fails is
        logged as an error and skipped, never a crash."""
        prompt = event.data.prompt
        what = f"command {event.id} ({event.data.action} {prompt})"
        async with self._locks[prompt]:
            deadline = datetime.now(UTC) + self.policies[prompt].budget.max_outage_wait
            uri = self.tracking_uri
            while True:
                try:
                    await self._apply(event)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not await asyncio.to_thread(mlflow_outage, exc, uri) or datetime.now(UTC) >= deadline:
                        log.exception("%s failed; skipped", what)
                        return
                    log.warning("%s waits for %s at %s to answer: %s", what, MLFLOW, uri, exc)
                    if not await answers_again(uri, deadline):
                        log.error("%s skipped: %s did not answer within max_outage_wait", what, MLFLOW)
                        return

    async def _apply(self, event: CommandEvent) -> None:
        """approve / reject a version awaiting approval, or roll `production` back, for every
        prompt name of the policy (a dspy program has one per predictor)."""
        data = event.data
        names = await asyncio.to_thread(prompt_names, self.policies[data.prompt])
        for name in names:
            outcome = await asyncio.to_thread(apply_command, name, data)
            if outcome is None:
                log.warning(
                    "%s %s: nothing to do (%s)",
                    data.action,
                    name,
                    "no version awaiting approval"
                    if data.action != "rollback"
                    else "no previous production version, or production is no longer the version named",
                )
                continue
            decision, from_version, to_version, reason = outcome
            await self.announce(
                promotion_event(
                    name,
                    decision,
                    f"{reason} (command by {data.requested_by or 'unknown'})",
                    source=self.source,
                    event_id=event_ids.command_outcome(event.id, name),
                    from_version=from_version,
                    to_version=to_version,
                ),
                program=data.prompt,
            )


def apply_command(name: str, command: CommandData) -> Outcome | None:
    """The registry change a command asks for: (decision, from, to, reason), or None. A rollback
    naming a version happens only while that version is in production (the guard's request
    may be stale); one requested by the guard tags the version it rolled back."""
    action, version = command.action, command.version
    if action == "rollback":
        moved = prompt_versions.roll_back(name, expected=version)
        if moved is None:
            return None
        reason = command.reason or f"production rolled back from {moved[0]} to {moved[1]}"
        if command.requested_by == "guard":
            prompt_versions.mark_rolled_back_by_guard(name, moved[0], reason)
        return "rolled_back", moved[0], moved[1], reason
    waiting = [v for v in prompt_versions.awaiting_approval(name) if version is None or v.version == version]
    if not waiting:
        return None
    target = waiting[-1]
    if action == "approve":
        previous = prompt_versions.production(name)
        prompt_versions.move_production(name, target.version)
        return "promoted", previous.version if previous else None, target.version, "approved"
    prompt_versions.clear_awaiting(name, target.version)
    return "rejected", None, target.version, "rejected by an operator"
