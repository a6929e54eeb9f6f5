"""The ops page's HTTP side without a server: admin-token checks, bad queries, no secrets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from daemon.ops.page import OpsPage
from daemon.settings import Settings
from schemas.config import PolicyFile
from schemas.events import CommandEvent

TOKEN = "unit-test-admin-token-42"
POLICIES = PolicyFile.model_validate(
    {
        "prompts": [
            {
                "name": "router",
                "task_model": "offline/support-router",
                "reflection_model": "offline/reflector",
            }
        ]
    }
)


def _page(token: str | None) -> tuple[OpsPage, list[CommandEvent]]:
    page = OpsPage(Settings(admin_token=token), POLICIES, "all", windows=None, jobs=None)
    sent: list[CommandEvent] = []

    async def record(
        event: CommandEvent,
    ) -> None:  # the Kafka producer is exercised by tests/e2e/test_ops_page.py
        sent.append(event)

    page.bus.send_command = record  # type: ignore[method-assign]
    return page, sent


def _post(page: OpsPage, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    reply = asyncio.run(
        page.handle("POST", "/ui/api/actions", {}, headers, json.dumps(body).encode(), "10.1.2.3")
    )
    return reply.status, json.loads(reply.body)


APPROVE = {"prompt": "router", "action": "approve", "version": 3, "requested_by": "alice"}


def test_actions_are_off_without_the_setting() -> None:
    page, sent = _page(None)
    status, body = _post(page, APPROVE, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 403 and "GEPA_STREAM_ADMIN_TOKEN" in body["error"] and not sent


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no admin token was given"),
        ({"Authorization": "Bearer wrong-token-wrong-token"}, "the admin token is wrong"),
        ({"Authorization": TOKEN}, "no admin token was given"),
    ],
)
def test_a_missing_or_wrong_token_is_refused(
    headers: dict[str, str], why: str, caplog: pytest.LogCaptureFixture
) -> None:
    page, sent = _page(TOKEN)
    status, body = _post(page, APPROVE, headers)
    assert status == 401 and why in body["error"] and not sent
    assert "refused an action from 10.1.2.3" in caplog.text


def test_the_right_token_sends_the_command_and_logs_who_asked(caplog: pytest.LogCaptureFixture) -> None:
    page, sent = _page(TOKEN)
    status, body = _post(page, APPROVE, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 202 and body["sent"] == sent[0].id
    data = sent[0].data
    assert (data.prompt, data.action, data.version, data.requested_by) == (
        "router",
        "approve",
        3,
        "alice (ops page)",
    )
    assert sent[0].type == "gepa.command.v1" and sent[0].key == b"router"
    assert "approve router v3 requested by alice (ops page) from 10.1.2.3" in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({**APPROVE, "prompt": "nope"}, 404, "not in the policy file"),
        ({**APPROVE, "action": "delete"}, 400, "action"),
        ({k: v for k, v in APPROVE.items() if k != "requested_by"}, 400, "requested_by"),
    ],
)
def test_bad_action_requests_name_the_problem(body: dict[str, Any], status: int, error: str) -> None:
    page, sent = _page(TOKEN)
    got, reply = _post(page, body, {"Authorization": f"Bearer {TOKEN}"})
    assert got == status and error in reply["error"] and not sent


def test_reads_name_bad_parameters_and_carry_no_secret() -> None:
    page, _ = _page(TOKEN)
    run = lambda path, query: asyncio.run(page.handle("GET", path, query, {}, b"", "x"))  # noqa: E731
    assert run("/ui/api/decisions", {"prompt": "router", "limit": "many"}).status == 400
    assert b"limit" in run("/ui/api/decisions", {"prompt": "router", "limit": "many"}).body
    assert run("/ui/api/diff", {"name": "other", "a": "1", "b": "2"}).status == 400
    assert run("/ui/api/nothing", {}).status == 404
    for path in ("/ui", "/ui/ops.js", "/ui/ops.css", "/ui/api/state"):
        reply = run(path, {})
        assert reply.status == 200 and TOKEN.encode() not in reply.body, path
    state = json.loads(run("/ui/api/state", {}).body)
    assert state["actions"]["enabled"] is True and [p["name"] for p in state["prompts"]] == ["router"]
    assert "Content-Security-Policy" in run("/ui", {}).headers


def test_a_short_admin_token_is_refused_by_the_settings() -> None:
    from daemon.settings import load_settings
    from schemas.config import ConfigError

    with pytest.raises(ConfigError, match="GEPA_STREAM_ADMIN_TOKEN: must be at least 16 characters"):
        load_settings(admin_token="short")
    assert load_settings(admin_token="").admin_token is None


def test_an_event_the_history_cannot_fold_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    from daemon.ops.bus import OpsBus
    from handlers.ops_history import OpsHistory
    from schemas.events import PromotionData, PromotionEvent

    history, decided = OpsHistory(), []
    bus = OpsBus(Settings(), history, on_decision=decided.append)
    event = PromotionEvent.build(PromotionData(prompt="router", decision="promoted", reason="r"), id="e1")

    def broken(_: object) -> None:
        raise KeyError("a status this version does not know")

    history.add = broken  # type: ignore[method-assign]
    bus._add(event.to_json())  # the daemon's task must go on
    bus._add(b"not json")  # bad records are the consumers' to dead-letter
    assert decided == [] and "cannot fold event e1" in caplog.text


def test_a_job_running_here_is_shown_with_its_progress_even_after_a_later_skip() -> None:
    from schemas.events import OptimizationData, OptimizationEvent

    running = {"r1": {"prompt": "router", "stage": "optimize", "metric_calls": 12, "max_metric_calls": 80}}
    page = OpsPage(Settings(), POLICIES, "all", windows=None, jobs=lambda: running)
    for request, status in (("r1", "requested"), ("r1", "started"), ("skip-1", "skipped")):
        page.history.add(
            OptimizationEvent.build(
                OptimizationData(request_id=request, prompt="router", status=status), id=f"{request}:{status}"
            )
        )
    job = json.loads(asyncio.run(page.handle("GET", "/ui/api/state", {}, {}, b"", "x")).body)["prompts"][0][
        "job"
    ]
    assert (job["request_id"], job["status"], job["live"]["metric_calls"]) == ("r1", "started", 12)
    running.clear()
    job = json.loads(asyncio.run(page.handle("GET", "/ui/api/state", {}, {}, b"", "x")).body)["prompts"][0][
        "job"
    ]
    assert (job["request_id"], job["status"]) == ("skip-1", "skipped")


def test_decisions_on_prompts_the_daemon_does_not_manage_never_reach_mlflow() -> None:
    page, _ = _page(None)
    page.live.poke("someone_elses_prompt")
    page.live.poke("router")
    assert page.live._dirty == {"router"} and "someone_elses_prompt" not in page.live.entries


ROLLOUT_POLICIES = PolicyFile.model_validate(
    {
        "prompts": [
            {
                "name": "router",
                "task_model": "offline/support-router",
                "reflection_model": "offline/reflector",
                "promotion": {"rollout": {"enabled": True, "stages": [0.1, 0.5], "margin": 0.1}},
            }
        ]
    }
)


def test_the_state_carries_the_ingest_roles_rollout_and_the_rollout_policy() -> None:
    rollout = {"state": "canary", "stage": 0, "stages": [0.1, 0.5], "traffic_share": 0.1, "canary_version": 2}
    windows = {"router": {"n_examples": 3, "rollout": rollout}}
    page = OpsPage(
        Settings(),
        ROLLOUT_POLICIES,
        "all",
        windows=lambda names: windows,
        jobs=None,
        window_names=lambda: sorted(windows),
    )
    [prompt] = json.loads(asyncio.run(page.handle("GET", "/ui/api/state", {}, {}, b"", "x")).body)["prompts"]
    assert prompt["rollout"] == rollout
    assert prompt["rollout_policy"] == {
        "enabled": True,
        "stages": [0.1, 0.5],
        "min_live_examples": 50,
        "margin": 0.1,
        "confidence": 0.95,
        "max_stage_duration_s": 172800.0,
    }
    assert prompt["live"][0]["canary"] is None and prompt["live"][0]["canary_share"] is None
    page = OpsPage(Settings(), ROLLOUT_POLICIES, "optimizer", windows=None, jobs=None)
    [prompt] = json.loads(asyncio.run(page.handle("GET", "/ui/api/state", {}, {}, b"", "x")).body)["prompts"]
    assert prompt["rollout"] is None  # kept by the ingest role


@pytest.mark.parametrize("action", ["canary_advance", "canary_abort"])
def test_the_canary_buttons_send_a_persons_command_naming_the_canary(action: str) -> None:
    page, sent = _page(TOKEN)
    body = {"prompt": "router", "action": action, "version": 2, "requested_by": "bob"}
    assert _post(page, body, {})[0] == 401 and not sent  # token-guarded like every action
    status, reply = _post(page, body, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 202 and f"{action} router v2 sent as bob (ops page)" in reply["message"]
    data = sent[0].data
    assert (data.action, data.version, data.requested_by, data.traffic_share) == (
        action,
        2,
        "bob (ops page)",
        None,  # a share only in the rule's own verdicts
    )
    share = {**body, "traffic_share": 0.05}
    assert _post(page, share, {"Authorization": f"Bearer {TOKEN}"})[0] == 400  # not the page's to set


def test_the_registrys_canary_is_read_with_its_share() -> None:
    from daemon.ops.live import canary_of
    from optimization.prompt_version import Version
    from schemas.events import TRAFFIC_SHARE_TAG

    assert canary_of(Version("router", 2, "t", {TRAFFIC_SHARE_TAG: "0.25"})) == (2, 0.25)
    assert canary_of(Version("router", 2, "t", {})) == (None, None)  # no share: serves no traffic
    assert canary_of(Version("router", 2, "t", {TRAFFIC_SHARE_TAG: "lots"})) == (None, None)
    assert canary_of(None) == (None, None)


def test_the_state_pages_and_filters_a_thousand_prompts_by_name_and_state() -> None:
    policies = PolicyFile.model_validate(
        {"patterns": [{"match": "tenant_*"}], "prompts": [{"name": "listed"}]}
    )
    windows = {f"tenant_{i:04d}": {"n_examples": i} for i in range(1000)}
    windows["tenant_0007"]["rollout"] = {"state": "canary"}
    asked: list[list[str]] = []

    def status_of(names: list[str]) -> dict[str, Any]:
        asked.append(names)
        return {name: windows[name] for name in names if name in windows}

    page = OpsPage(
        Settings(), policies, "ingest", windows=status_of, jobs=None, window_names=lambda: sorted(windows)
    )

    def state(**query: str) -> dict[str, Any]:
        reply = asyncio.run(page.handle("GET", "/ui/api/state", query, {}, b"", "x"))
        assert reply.status == 200, reply.body
        return json.loads(reply.body)

    first = state()
    assert (first["total"], first["matched"], len(first["prompts"])) == (1001, 1001, 100)
    assert first["prompts"][0]["name"] == "listed" and len(asked[-1]) == 100  # only the page's windows
    later = state(offset="990", limit="20")
    assert [p["name"] for p in later["prompts"]] == [f"tenant_{i:04d}" for i in range(989, 1000)]
    found = state(q="TENANT_012")
    assert found["matched"] == 10 and {p["name"] for p in found["prompts"]} == {
        f"tenant_{i:04d}" for i in range(120, 130)
    }
    canary = state(state="canary")
    assert [p["name"] for p in canary["prompts"]] == ["tenant_0007"] and canary["matched"] == 1
    bad = asyncio.run(page.handle("GET", "/ui/api/state", {"state": "asleep"}, {}, b"", "x"))
    assert bad.status == 400 and b"running" in bad.body
