"""`PromptRouter` against real MLflow registries: a sqlite store per test (the `mlflow_store` fixture),
and a real `mlflow server` that is stopped under the router (an outage) and started again. The
registry is changed the way the daemon runs a staged rollout: the share tag on the candidate first,
then the `canary` alias; later stages raise the tag; an abort or the end deletes the alias."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from daemon.broker import free_port
from optimization import PromptRouter, RoutingUnavailable
from schemas.events import CANARY_ALIAS, PRODUCTION_ALIAS, TRAFFIC_SHARE_TAG
from tests.mlflow_server import MlflowServer

NAME = "support_router"
KEYS = [f"user-{i}" for i in range(4000)]
V1 = "Route this support ticket to billing, shipping, technical or account.\nTicket: {{ticket}}"
V2 = 'Route this support ticket to billing, shipping, technical or account.\nRule: if the ticket mentions "crash", the category is technical.\nTicket: {{ticket}}'


class Clock:
    """A monotonic clock the test moves by hand (the TTL is then exact, not a race with `sleep`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def register_two_versions(client: MlflowClient) -> None:
    """The prompt with versions 1 and 2, production on 1, no canary."""
    client.register_prompt(name=NAME, template=V1)
    client.register_prompt(name=NAME, template=V2)
    client.set_prompt_alias(NAME, PRODUCTION_ALIAS, 1)


def start_canary(client: MlflowClient, share: str, version: int = 2) -> None:
    """As the daemon does it: the share tag first, then the alias."""
    client.set_prompt_version_tag(NAME, version, TRAFFIC_SHARE_TAG, share)
    client.set_prompt_alias(NAME, CANARY_ALIAS, version)


def served(router: PromptRouter, keys: list[str] = KEYS) -> dict[str, int]:
    return {key: router.choose(key).version for key in keys}


def on_canary(router: PromptRouter) -> set[str]:
    return {key for key, version in served(router).items() if version == 2}


@pytest.fixture
def sqlite_uri(mlflow_store: Path) -> str:
    return f"sqlite:///{mlflow_store / 'mlflow.db'}"


@pytest.fixture
def client(sqlite_uri: str) -> MlflowClient:
    client = MlflowClient(tracking_uri=sqlite_uri)
    register_two_versions(client)
    return client


def test_without_a_canary_every_key_gets_production(client: MlflowClient, sqlite_uri: str) -> None:
    router = PromptRouter(NAME, tracking_uri=sqlite_uri)
    routes = {router.choose(key) for key in KEYS[:50]}
    assert {(route.alias, route.version) for route in routes} == {(PRODUCTION_ALIAS, 1)}
    assert set(served(router).values()) == {1}
    route = router.choose("user-1")
    assert route.format(ticket="my app crashes") == V1.replace("{{ticket}}", "my app crashes")


def test_a_canary_at_25_percent_gets_a_quarter_of_the_keys_and_the_same_keys_each_time(
    client: MlflowClient, sqlite_uri: str
) -> None:
    start_canary(client, "0.25")
    router = PromptRouter(NAME, tracking_uri=sqlite_uri)
    first = served(router)
    canary = {key for key, version in first.items() if version == 2}
    assert abs(len(canary) / len(KEYS) - 0.25) < 0.03  # binomial sd at n=4,000 is 0.007: 4 sd
    assert set(first.values()) == {1, 2}
    assert served(router) == first
    assert served(PromptRouter(NAME, tracking_uri=sqlite_uri)) == first  # another router (process) agrees
    route = router.choose(next(iter(canary)))
    assert (route.alias, route.version) == (CANARY_ALIAS, 2)
    assert route.format(ticket="it crashes") == V2.replace("{{ticket}}", "it crashes")


def test_keys_on_the_canary_stay_on_it_as_the_share_grows_and_all_return_when_it_ends(
    client: MlflowClient, sqlite_uri: str
) -> None:
    router = PromptRouter(NAME, tracking_uri=sqlite_uri)
    stages = []
    start_canary(client, "0.05")
    for share in ("0.05", "0.25", "0.5"):
        client.set_prompt_version_tag(NAME, 2, TRAFFIC_SHARE_TAG, share)  # a later stage
        router.refresh()
        stages.append(on_canary(router))
    assert stages[0] < stages[1] < stages[2]
    client.set_prompt_alias(NAME, PRODUCTION_ALIAS, 2)  # promoted: production moves, canary goes
    client.delete_prompt_alias(NAME, CANARY_ALIAS)
    router.refresh()
    assert set(served(router).values()) == {2}
    assert {router.choose(key).alias for key in KEYS[:100]} == {PRODUCTION_ALIAS}


def test_a_changed_share_is_seen_only_after_the_ttl_or_a_refresh(
    client: MlflowClient, sqlite_uri: str
) -> None:
    start_canary(client, "0.25")
    clock = Clock()
    router = PromptRouter(NAME, tracking_uri=sqlite_uri, ttl_s=30.0, clock=clock)
    at_25 = on_canary(router)
    client.set_prompt_version_tag(NAME, 2, TRAFFIC_SHARE_TAG, "0.5")
    clock.now += 29.9
    assert on_canary(router) == at_25 and router.table().share == 0.25
    clock.now += 0.1
    at_50 = on_canary(router)
    assert router.table().share == 0.5 and at_25 < at_50
    client.set_prompt_version_tag(NAME, 2, TRAFFIC_SHARE_TAG, "0.05")
    clock.now += 10
    assert on_canary(router) == at_50
    assert router.refresh().share == 0.05
    assert on_canary(router) < at_25


def test_the_ttl_runs_on_the_real_monotonic_clock(client: MlflowClient, sqlite_uri: str) -> None:
    router = PromptRouter(NAME, tracking_uri=sqlite_uri, ttl_s=1.0)
    assert router.choose("user-1").version == 1
    started = time.monotonic()
    client.set_prompt_alias(NAME, PRODUCTION_ALIAS, 2)
    while router.choose("user-1").version == 1:
        assert time.monotonic() - started < 10, "the change was never seen"
        time.sleep(0.05)
    assert time.monotonic() - started >= 0.9


def test_an_aborted_canary_sends_every_key_back_to_production(client: MlflowClient, sqlite_uri: str) -> None:
    start_canary(client, "0.5")
    router = PromptRouter(NAME, tracking_uri=sqlite_uri)
    assert set(served(router).values()) == {1, 2}
    client.delete_prompt_alias(NAME, CANARY_ALIAS)
    router.refresh()
    assert set(served(router).values()) == {1}


@pytest.mark.parametrize("share", [None, "lots", "0", "1", "1.5", "-0.25"])
def test_a_canary_without_a_valid_share_gets_no_traffic(
    client: MlflowClient, sqlite_uri: str, share: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    if share is not None:
        client.set_prompt_version_tag(NAME, 2, TRAFFIC_SHARE_TAG, share)
    client.set_prompt_alias(NAME, CANARY_ALIAS, 2)
    router = PromptRouter(NAME, tracking_uri=sqlite_uri)
    with caplog.at_level(logging.WARNING, logger="optimization.routing"):
        assert set(served(router).values()) == {1}
        router.refresh()
        router.refresh()
    assert router.table().canary is None
    warnings = [r for r in caplog.records if "all traffic goes to production" in r.getMessage()]
    assert len(warnings) == 1  # once per problem, not once per refresh


def test_a_prompt_without_production_raises_a_clear_error(client: MlflowClient, sqlite_uri: str) -> None:
    with pytest.raises(RoutingUnavailable, match="no 'production' version"):
        PromptRouter("unknown_prompt", tracking_uri=sqlite_uri).choose("user-1")
    client.delete_prompt_alias(NAME, PRODUCTION_ALIAS)
    with pytest.raises(RoutingUnavailable, match="no 'production' version"):
        PromptRouter(NAME, tracking_uri=sqlite_uri).choose("user-1")


def test_a_router_that_never_read_the_registry_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    router = PromptRouter(NAME, tracking_uri=f"http://127.0.0.1:{free_port()}")  # nothing listens
    with pytest.raises(RoutingUnavailable, match="cannot read prompt"):
        router.choose("user-1")
    with pytest.raises(RoutingUnavailable):
        router.choose("user-1")  # still nothing to serve: every call says so


def test_one_thread_refreshes_at_a_time_and_the_others_keep_serving(
    client: MlflowClient, sqlite_uri: str
) -> None:
    start_canary(client, "0.25")
    router = PromptRouter(NAME, tracking_uri=sqlite_uri, ttl_s=0.0)  # every call wants a refresh
    expected = served(router, KEYS[:50])
    read = router._read
    active, most, reads = 0, 0, 0
    guard = threading.Lock()

    def slow_read():  # type: ignore[no-untyped-def]
        nonlocal active, most, reads
        with guard:
            active += 1
            reads += 1
            most = max(most, active)
        try:
            time.sleep(0.02)
            return read()
        finally:
            with guard:
                active -= 1

    router._read = slow_read  # type: ignore[method-assign]  # counts the real reads, MLflow untouched
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            results.append(served(router, KEYS[:50]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=serve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(results) == 8 and all(result == expected for result in results)
    assert most == 1 and reads >= 1


def test_a_registry_outage_keeps_the_last_table_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A real tracking server, stopped after the router's first read: requests keep their arms, the
    outage is logged once, and the router reads the registry again once the server is back."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast (a deployer may set it too)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    server = MlflowServer(tmp_path).start().wait_ready()
    try:
        client = MlflowClient(tracking_uri=server.uri)
        register_two_versions(client)
        start_canary(client, "0.25")
        clock = Clock()
        router = PromptRouter(NAME, tracking_uri=server.uri, ttl_s=30.0, clock=clock)
        before = served(router)
        assert set(before.values()) == {1, 2}

        server.stop()
        with caplog.at_level(logging.WARNING, logger="optimization.routing"):
            with pytest.raises(RoutingUnavailable, match="cannot read prompt"):
                router.refresh()  # an explicit refresh says it failed ...
            assert served(router) == before  # ... and choose keeps serving the last table
            for _ in range(3):  # past the TTL: each choose that refreshes fails, quietly
                clock.now += 31
                assert served(router, KEYS[:500]) == {key: before[key] for key in KEYS[:500]}
        outage = [r for r in caplog.records if "serving the last routing table" in r.getMessage()]
        assert len(outage) == 1, [r.getMessage() for r in caplog.records]

        server.start().wait_ready()  # the same port and store
        client.set_prompt_version_tag(NAME, 2, TRAFFIC_SHARE_TAG, "0.5")
        clock.now += 31
        after = served(router)
        assert router.table().share == 0.5
        assert {key for key, v in before.items() if v == 2} < {key for key, v in after.items() if v == 2}
    finally:
        server.stop()
