"""Commands against the MLflow registry (an operator's, or a live watch's): approve or reject a
version awaiting approval, roll `production` back, advance or abort a canary. Each command's
outcome is announced as a promotion event."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from daemon import prompt_versions
from daemon.jobs.outage import MLFLOW, answers_again, mlflow_outage
from handlers.promotion import Outcome, judge_command, promotion_event
from optimization.prompt_names import prompt_names
from schemas import event_ids
from schemas.config import PromotionPolicy, PromptPolicy
from schemas.events import CommandData, CommandEvent

log = logging.getLogger("gepa_stream.jobs")
NOTHING_TO_DO = {
    "approve": "no version awaiting approval",
    "reject": "no version awaiting approval",
    "rollback": "no previous production version, or production is no longer the version named",
    "canary_advance": "no canary, or the canary is no longer the version or share named",
    "canary_abort": "no canary, or the canary is no longer the version or share named",
}
AnnouncePromotion = Callable[..., Awaitable[None]]  # Announcer.promotion(event, program=...)


class Commands:
    """Applies the commands of the policies' prompts, each prompt's in the order they arrive."""

    def __init__(
        self,
        policies: Mapping[str, PromptPolicy],
        tracking_uri: str,
        announce: AnnouncePromotion,
        source: str,
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
        """The command's outcome for every prompt name of the policy (a dspy program has one per
        predictor): decided by the promotion rules, made in the registry, then announced."""
        data = event.data
        policy = self.policies[data.prompt]
        names = await asyncio.to_thread(prompt_names, policy)
        for name in names:
            outcome = await asyncio.to_thread(apply_command, name, data, policy.promotion)
            if outcome is None:
                log.warning("%s %s: nothing to do (%s)", data.action, name, NOTHING_TO_DO[data.action])
                continue
            await self.announce(
                promotion_event(
                    name,
                    outcome.decision,
                    f"{outcome.reason} (command by {data.requested_by or 'unknown'})",
                    source=self.source,
                    event_id=event_ids.command_outcome(event.id, name),
                    from_version=outcome.from_version,
                    to_version=outcome.to_version,
                    traffic_share=outcome.traffic_share,
                ),
                program=data.prompt,
            )


def apply_command(name: str, command: CommandData, policy: PromotionPolicy) -> Outcome | None:
    """Judge the command on the registry as it is (handlers/promotion.py) and make its change;
    None when there is nothing to do (a stale or replayed command)."""
    outcome = judge_command(command, policy, prompt_versions.registry(name))
    if outcome is not None:
        prompt_versions.apply(name, outcome)
    return outcome
