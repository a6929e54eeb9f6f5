"""The ops page in a real browser (Debian's Chromium driven by Playwright) against a running
daemon (`--role all`) on the real broker with real MLflow and real GEPA on offline models.

One daemon, 50 prompts: the demo prompt (auto promotion), the same router in manual mode, and
48 prompts carrying 1,000 generated decisions (the page must stay responsive with them).
Another daemon, one prompt under a staged rollout (no GEPA job: the canary is started the way
the optimizer role starts it): the rollout on the page, and an operator's abort by its button.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from daemon import prompt_versions
from daemon.demo import register_sample_prompt, sample_feed
from handlers.promotion import Outcome, promotion_event
from schemas import Topics, TraceData, TraceEvent
from schemas.events import TRAFFIC_SHARE_TAG, PromotionData, PromotionEvent
from tests.daemon_harness import QUICK_JOIN_ENV, Daemon, metric_value, produce, read_topic
from tests.e2e.loop_helpers import live_feed, register_seed, write_policies

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "ops-test-token-0123456789"
AUTO, MANUAL = "support_router", "support_router_manual"
FILLERS = [f"filler_{i:02d}" for i in range(48)]
N_DECISIONS = 1000


def _policy() -> str:
    router = """  - name: {name}
    backend: mlflow
    task_model: offline/support-router?latency_ms=60
    reflection_model: offline/reflector
    input_keys: [ticket]
    scorers: [exact_match]
    triggers: {{min_examples: 60, min_new_examples: 40, cooldown: 10m}}
    budget: {{max_metric_calls: 80, max_wall_time: 5m, num_threads: 2}}
    promotion: {{mode: {mode}, min_improvement: 0.05, confidence: 0.95, min_eval_examples: 10, holdout_fraction: 0.35}}
"""
    filler = """  - name: {name}
    task_model: offline/support-router
    reflection_model: offline/reflector
    input_keys: [ticket]
    triggers: {{min_examples: 500}}
"""
    return (
        "prompts:\n"
        + router.format(name=AUTO, mode="auto")
        + router.format(name=MANUAL, mode="manual")
        + "".join(filler.format(name=n) for n in FILLERS)
    )


def _decisions(topics: Topics) -> list[tuple[str, bytes | None, bytes]]:
    """1,000 decisions spread over the 48 filler prompts (filler_00 gets 300 of them)."""
    records = []
    kinds = ["promoted", "rejected", "inconclusive", "rolled_back"]
    for i in range(N_DECISIONS):
        name = FILLERS[0] if i < 300 else FILLERS[1 + i % 47]
        event = PromotionEvent.build(
            PromotionData(
                prompt=name,
                decision=kinds[i % 4],
                from_version=1 + i // 50,
                to_version=2 + i // 50,
                baseline_score=0.5,
                candidate_score=0.6,
                improvement=0.2,
                ci_low=0.01,
                ci_high=0.2,
                n_eval=30,
                reason=f"generated decision {i}",
            ),
            id=f"generated-{i}",
        )
        records.append((topics.promotions, event.key, event.to_json()))
    return records


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"no browser: {CHROMIUM} is missing (`make browser` installs Debian's chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _wait(what: str, condition: Callable[[], Any], timeout: float, daemon: Daemon) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` (with the daemon's log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        daemon.wait_until(lambda: True, 1, "the daemon to be alive")
        time.sleep(0.1)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}:\n{daemon.log.read_text()[-4000:]}"
    )


def _text(page: Any, selector: str) -> str:
    node = page.query_selector(selector)
    return node.inner_text() if node is not None else ""


def _number(page: Any, selector: str) -> int | None:
    text = _text(page, selector).strip()
    return int(text) if text.isdigit() else None


def test_ops_page_shows_the_loop_and_acts_with_the_admin_token(
    browser: Any, kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text(_policy())
    daemon = Daemon(
        kafka_bootstrap,
        config,
        tmp_path,
        env={**QUICK_JOIN_ENV, "GEPA_STREAM_ADMIN_TOKEN": TOKEN, "GEPA_STREAM_MAX_CONCURRENT_JOBS": "2"},
    )
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    versions = {name: register_sample_prompt(tracking_uri, name) for name in (AUTO, MANUAL)}
    daemon.start()
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"http://127.0.0.1:{daemon.port}/ui?refresh=300")
        row = {name: f'tr[data-prompt="{name}"]' for name in (AUTO, MANUAL, FILLERS[0])}
        _wait(
            "the page to list 50 prompts", lambda: page.locator("#prompts tbody tr").count() == 50, 30, daemon
        )

        # 1,000 decisions: the page stays responsive (state API and a 300-decision prompt).
        produce(kafka_bootstrap, _decisions(daemon.topics))
        _wait(
            "the generated decisions",
            lambda: "generated decision 299" in _text(page, row[FILLERS[0]]),
            60,
            daemon,
        )
        state_ms = page.evaluate(
            "async () => { const t = performance.now(); await (await fetch('/ui/api/state')).json(); return performance.now() - t; }"
        )
        assert state_ms < 1000, f"/ui/api/state took {state_ms:.0f} ms with 50 prompts and 1,000 decisions"
        started = time.monotonic()
        page.click(row[FILLERS[0]])
        page.wait_for_selector("#decisions tbody tr:nth-child(50)", timeout=10000)
        assert time.monotonic() - started < 3, "selecting a prompt with 300 decisions took over 3 s"
        assert "50 of 300" in page.inner_text("#more-decisions")

        # The demo feed: the window fills up, batch by batch, on the page.
        feed = {name: sample_feed(versions[name], name, daemon.topics) for name in (AUTO, MANUAL)}
        seen_fill = []
        for sent in range(20, len(feed[AUTO]) + 1, 20):
            produce(
                kafka_bootstrap, [(topic, e.key, e.to_json()) for topic, e in feed[AUTO][sent - 20 : sent]]
            )
            n = _wait(
                f"the window to show {sent // 2} examples",
                lambda: (
                    (v := _number(page, f"{row[AUTO]} [data-testid=window-n]")) is not None
                    and v >= sent // 2  # noqa: B023 (_wait polls it before `sent` moves on)
                    and v
                ),
                30,
                daemon,
            )
            seen_fill.append(n)
        assert seen_fill == sorted(seen_fill) and len(set(seen_fill)) >= 4 and seen_fill[-1] >= 60, seen_fill
        produce(kafka_bootstrap, [(topic, e.key, e.to_json()) for topic, e in feed[MANUAL]])

        # The job's progress moves: metric calls of the budget, as the page shows them.
        calls_seen: set[int] = set()

        def promoted() -> bool:
            calls = _number(page, f"{row[AUTO]} [data-testid=job-calls]")
            if calls is not None:
                calls_seen.add(calls)
            return "promoted" in _text(page, f"{row[AUTO]} [data-testid=last-decision]")

        _wait("the demo prompt's promotion", promoted, 240, daemon)
        assert len(calls_seen) >= 2 and max(calls_seen) > 0, (
            f"metric calls seen on the page: {sorted(calls_seen)}"
        )
        assert "v2" in _text(page, f"{row[AUTO]} [data-testid=live-version]") or _wait(
            "production v2 on the page",
            lambda: "v2" in _text(page, f"{row[AUTO]} [data-testid=live-version]"),
            30,
            daemon,
        )

        # The promotion with its interval, and the diff of v1 -> v2.
        page.click(row[AUTO])
        page.wait_for_selector('#decisions tr[data-decision="promoted"]', timeout=10000)
        interval = page.inner_text('#decisions tr[data-decision="promoted"] [data-testid=interval]')
        low, high = (float(x) for x in interval.strip("[]").split(","))
        assert 0 < low <= high, interval
        page.wait_for_selector("#diff [data-testid=diff-title]", timeout=10000)
        assert page.inner_text("#diff [data-testid=diff-title]").startswith(f"{AUTO}: v1 → v2")
        assert page.locator("#diff .row.insert, #diff .row.replace").count() >= 1

        # Manual mode: the candidate awaits approval; approving without the token is refused.
        _wait(
            "the manual prompt's candidate awaiting approval",
            lambda: "awaiting approval" in _text(page, f"{row[MANUAL]} [data-testid=live]"),
            240,
            daemon,
        )
        page.click(row[MANUAL])
        page.click("#actions [data-action=approve]")
        refused = _wait(
            "the refusal",
            lambda: "refused (401)" in (t := page.inner_text("#action-message")) and t,
            10,
            daemon,
        )
        assert "admin token" in refused
        assert "v1" in _text(page, f"{row[MANUAL]} [data-testid=live-version]")

        # With the token: approve, and production moves to the approved version.
        page.fill("[data-testid=sign-in] input[name=who]", "alice")
        page.fill("[data-testid=sign-in] input[name=token]", TOKEN)
        page.click("[data-testid=sign-in] button[type=submit]")
        page.wait_for_selector("#auth >> text=signed in as", timeout=5000)
        page.click("#actions [data-action=approve]")
        _wait(
            "the approval to be sent",
            lambda: "sent as alice (ops page)" in page.inner_text("#action-message"),
            15,
            daemon,
        )
        _wait(
            "production to move to v2",
            lambda: "v2" in _text(page, f"{row[MANUAL]} [data-testid=live-version]"),
            60,
            daemon,
        )
        _wait(
            "the approval decision",
            lambda: "approved (command by alice (ops page))" in page.inner_text("#decisions"),
            30,
            daemon,
        )
        assert "awaiting approval" not in _text(page, f"{row[MANUAL]} [data-testid=live]")

        # Roll back: production returns to v1. Optimize now reaches the ingest role (an empty window: skipped, saying why).
        page.click("#actions [data-action=rollback]")
        _wait(
            "production back on v1",
            lambda: "v1" in _text(page, f"{row[MANUAL]} [data-testid=live-version]"),
            60,
            daemon,
        )
        _wait(
            "the rollback decision",
            lambda: page.locator('#decisions tr[data-decision="rolled_back"]').count() == 1,
            30,
            daemon,
        )
        page.click(f'tr[data-prompt="{FILLERS[1]}"]')
        page.click("#actions [data-action=optimize]")
        skipped = _wait(
            "optimize now on an empty window",
            lambda: (
                "skipped" in (t := _text(page, f'tr[data-prompt="{FILLERS[1]}"] [data-testid=job]')) and t
            ),
            30,
            daemon,
        )
        assert "no labeled examples" in skipped

        # The page never carries the token (it only lives in the operator's browser session).
        for path in (
            "/ui",
            "/ui/ops.js",
            "/ui/api/state",
            f"/ui/api/decisions?prompt={MANUAL}",
            f"/ui/api/versions?name={MANUAL}",
        ):
            body = page.evaluate("async (p) => await (await fetch(p)).text()", path)
            assert TOKEN not in body, path
        assert TOKEN not in json.dumps(daemon.status())
        assert not errors, errors
        page.close()
    finally:
        daemon.stop()
    assert TOKEN not in daemon.log.read_text()
    assert (
        "approve support_router_manual" in daemon.log.read_text()
        and "requested by alice (ops page)" in daemon.log.read_text()
    )


CANARY = "router_canary"


def test_ops_page_shows_a_staged_rollout_and_aborts_the_canary_by_its_button(
    browser: Any, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Manual mode, stages 5/25/50 %, 5 votes per arm and stage, margin 0.5: the page shows the
    stage and share, each arm's n and mean, the interval and the distance to the next decision
    (votes still needed, then ready to advance); an operator's abort removes the `canary` alias,
    leaves `production` alone and does not block the template; the page ends on canary_aborted."""
    policy = write_policies(
        tmp_path / "policy.yaml",
        {
            CANARY: {
                "n": 400,
                "mode": "manual",
                "rollout": "{enabled: true, stages: [0.05, 0.25, 0.5], min_live_examples: 5, margin: 0.5}",
            }
        },
    )
    daemon = Daemon(
        kafka_bootstrap, policy, tmp_path, env={**QUICK_JOIN_ENV, "GEPA_STREAM_ADMIN_TOKEN": TOKEN}
    )
    register_seed(daemon.env["GEPA_STREAM_MLFLOW_TRACKING_URI"], CANARY)
    assert prompt_versions.ensure_production(CANARY).version == 1
    mlflow.genai.register_prompt(
        name=CANARY, template="Route the ticket {{ticket}}: billing, technical or account."
    )
    daemon.start()
    try:
        # 1. the canary starts as the optimizer role starts it: registry first, then the event
        started = Outcome(
            "canary_started",
            "passed the gate (test); canary at 5% of traffic",
            "start_canary",
            1,
            2,
            traffic_share=0.05,
        )
        prompt_versions.apply(CANARY, started)
        event = promotion_event(
            CANARY,
            started.decision,
            started.reason,
            source="tests/ops-page",
            from_version=1,
            to_version=2,
            traffic_share=0.05,
        )
        produce(kafka_bootstrap, [(daemon.topics.promotions, event.key, event.to_json())])
        produce(
            kafka_bootstrap,
            live_feed(daemon.topics, CANARY, 2, ["excellent"] * 3, 0)
            + live_feed(daemon.topics, CANARY, 1, ["excellent", "good"] * 3, 0),
        )

        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"http://127.0.0.1:{daemon.port}/ui?refresh=300#prompt={CANARY}")
        row = f'tr[data-prompt="{CANARY}"]'
        arm = "#rollout [data-arm={}] [data-testid=arm-{}]"

        # 2. stage 1/3 at 5 %, the arms' numbers, and what the next decision still needs
        _wait(
            "the rollout's votes on the page",
            lambda: (
                (_text(page, arm.format("canary", "n")), _text(page, arm.format("production", "n")))
                == ("3", "6")
            ),
            60,
            daemon,
        )
        assert _text(page, "#rollout [data-testid=rollout-stage]") == "1/3"
        assert _text(page, "#rollout [data-testid=rollout-share]") == "5%"
        assert "canary running" in _text(page, "#rollout [data-testid=rollout-state]")
        assert _text(page, arm.format("canary", "mean")) == "1.00"
        assert _text(page, arm.format("production", "mean")) == "0.88"
        interval = _text(page, "#rollout [data-testid=rollout-interval]")
        assert "95% anytime bounds [" in interval and "+0.13" in interval, interval
        assert "canary 2, production 0" in _text(page, "#rollout [data-testid=rollout-needed]")
        assert "next: advance to 25%" in _text(page, "#rollout [data-testid=rollout-next]")
        assert "not ready yet" in _text(page, "#rollout [data-testid=rollout-ready]")
        _wait(
            "the registry's canary in the prompts table",
            lambda: "v2 at 5%" in _text(page, f"{row} [data-testid=live-canary]"),
            30,
            daemon,
        )
        assert "v1" in _text(page, f"{row} [data-testid=live-version]")
        page.wait_for_selector("#diff-controls [data-testid=diff-b]", timeout=10000)
        assert "v2 (canary 5%)" in page.inner_text("#diff-controls [data-testid=diff-b]")
        assert page.locator("#actions [data-action=canary_advance]").inner_text() == "advance canary v2 → 25%"

        # 3. enough votes of this stage on both arms and the lower bound above -margin: ready
        produce(
            kafka_bootstrap,
            live_feed(daemon.topics, CANARY, 2, ["excellent"] * 13, 3)
            + live_feed(daemon.topics, CANARY, 1, ["excellent", "good"] * 9, 6),
        )
        _wait(  # every rating counted (ready to advance comes with the minimum, before the last ones)
            "16 and 24 ratings",
            lambda: (
                (_text(page, arm.format("canary", "n")), _text(page, arm.format("production", "n")))
                == ("16", "24")
            ),
            60,
            daemon,
        )
        assert "ready to advance" in _text(page, "#rollout [data-testid=rollout-ready]")
        assert "enough votes" in _text(page, "#rollout [data-testid=rollout-needed]")
        assert _text(page, "#rollout [data-testid=rollout-stage]") == "1/3"  # manual: nothing moved by itself

        # 4. abort by the button: refused without the token, sent with it
        page.click("#actions [data-action=canary_abort]")
        _wait("the refusal", lambda: "refused (401)" in page.inner_text("#action-message"), 10, daemon)
        page.fill("[data-testid=sign-in] input[name=who]", "bob")
        page.fill("[data-testid=sign-in] input[name=token]", TOKEN)
        page.click("[data-testid=sign-in] button[type=submit]")
        page.wait_for_selector("#auth >> text=signed in as", timeout=5000)
        page.click("#actions [data-action=canary_abort]")
        _wait(
            "the abort to be sent",
            lambda: (
                "canary_abort router_canary v2 sent as bob (ops page)" in page.inner_text("#action-message")
            ),
            15,
            daemon,
        )
        _wait(
            "canary_aborted on the page",
            lambda: "canary aborted" in _text(page, "#rollout [data-testid=rollout-state]"),
            60,
            daemon,
        )
        _wait(
            "the canary buttons to go",
            lambda: (
                page.locator("#actions [data-action^=canary_]").count() == 0
                and page.locator(f"{row} [data-testid=live-canary]").count() == 0
            ),
            30,
            daemon,
        )
        assert _text(page, "#rollout [data-testid=rollout-share]") == "0%"
        assert "(command by bob (ops page))" in _text(page, "#rollout [data-testid=rollout-reason]")
        _wait(
            "the decision in the table",
            lambda: page.locator('#decisions tr[data-decision="canary_aborted"]').count() == 1,
            30,
            daemon,
        )
        assert "v2 → v1 · 5%" in page.inner_text('#decisions tr[data-decision="canary_aborted"]')

        # 5. MLflow: the canary alias and its share are gone, production is untouched, and a
        #    person's abort does not block the template
        assert prompt_versions.canary(CANARY) is None
        production = prompt_versions.production(CANARY)
        assert production is not None and production.version == 1
        tags = MlflowClient().get_prompt_version(CANARY, "2").tags
        assert TRAFFIC_SHARE_TAG not in tags and prompt_versions.TAG_CANARY_ABORTED not in tags
        aborted = [
            e.data
            for e in read_topic(kafka_bootstrap, daemon.topics.promotions)
            if e.data.decision == "canary_aborted"
        ]
        assert [(a.from_version, a.to_version, a.traffic_share) for a in aborted] == [(2, 1, 0.05)]
        assert (daemon.status()["prompts"][CANARY]["rollout"] or {})["state"] == "canary_aborted"
        metrics = daemon.get("/metrics")
        assert metric_value(metrics, "gepa_stream_rollout_state", prompt=CANARY, state="canary_aborted") == 1
        assert metric_value(metrics, "gepa_stream_rollout_traffic_share", prompt=CANARY) == 0
        assert not errors, errors
        page.close()
    finally:
        daemon.stop()
    assert "canary_abort router_canary v2 requested by bob (ops page)" in daemon.log.read_text()


def test_ops_page_finds_a_prompt_among_a_thousand_by_search_and_opens_its_decisions(
    browser: Any, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """1,000 prompts matched by a pattern, one trace each: the page shows the first 100 and the
    count, the search narrows it to one, and a click opens that prompt's decisions."""
    config = tmp_path / "policy.yaml"
    config.write_text("defaults: {input_keys: [q]}\npatterns:\n  - {match: 'tenant_*'}\n")
    daemon = Daemon(kafka_bootstrap, config, tmp_path, env=QUICK_JOIN_ENV)
    names = [f"tenant_{i:04d}" for i in range(1000)]
    daemon.start("ingest")
    try:
        traces = [
            TraceEvent.build(
                TraceData(
                    prompt=n,
                    trace_id=f"{n}-1",
                    inputs={"q": n},
                    outputs="a",
                    expectations={"expected_response": "a"},
                )
            )
            for n in names
        ]
        found = promotion_event(
            "tenant_0777", "promoted", "the one we look for", source="test", from_version=1, to_version=2
        )
        produce(
            kafka_bootstrap,
            [(daemon.topics.traces, t.key, t.to_json()) for t in traces]
            + [(daemon.topics.promotions, found.key, found.to_json())],
        )
        daemon.wait_until(
            lambda: (daemon.get("/status?limit=1") or {}).get("total") == 1000, 120, "1,000 windows"
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"http://127.0.0.1:{daemon.port}/ui")
        _wait("the first page", lambda: page.locator("#prompts tbody tr").count() == 100, 30, daemon)
        assert _text(page, "[data-testid=prompts-range]") == "1–100 of 1000"
        page.fill("[data-testid=prompt-search]", "tenant_0777")
        _wait("the search", lambda: page.locator("#prompts tbody tr").count() == 1, 15, daemon)
        assert _text(page, "[data-testid=prompts-range]") == "1–1 of 1 (1000 in all)"
        page.click('tr[data-prompt="tenant_0777"]')
        _wait("its decisions", lambda: "the one we look for" in _text(page, "#decisions tbody"), 15, daemon)
        assert errors == []
    finally:
        daemon.stop()
