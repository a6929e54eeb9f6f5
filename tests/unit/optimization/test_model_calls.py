"""The model-call policy as pure logic: a fake `send` raising the OpenAI SDK's exceptions, a fake
clock and sleep (no network, no waiting)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest

from optimization.model_calls import (
    CallPolicy,
    ModelCallFailed,
    ModelCalls,
    Price,
    UsageLedger,
    call_cost,
    classify,
    retry_after_seconds,
    role_of,
    role_scope,
    token_counts,
)

REQUEST = httpx.Request("POST", "http://provider/v1/chat/completions")


def status_error(code: int, retry_after: str | None = None) -> openai.APIStatusError:
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    response = httpx.Response(
        code, headers=headers, request=REQUEST, json={"error": {"message": f"status {code}"}}
    )
    cls = {
        429: openai.RateLimitError,
        500: openai.InternalServerError,
        503: openai.InternalServerError,
        401: openai.AuthenticationError,
    }.get(code, openai.APIStatusError)
    return cls(f"status {code}", response=response, body=None)


def answer(prompt_tokens: int = 10, completion_tokens: int = 2) -> Any:
    return SimpleNamespace(
        usage=SimpleNamespace(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    )


class Clock:
    """A monotonic clock that `sleep` advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Provider:
    """`send` that raises the scripted errors in turn, then answers."""

    def __init__(self, *errors: BaseException, clock: Clock | None = None, takes: float = 0.0) -> None:
        self.errors = list(errors)
        self.calls: list[dict[str, Any]] = []
        self.clock = clock
        self.takes = takes

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if self.clock is not None:
            self.clock.now += self.takes
        if self.errors:
            raise self.errors.pop(0)
        return answer()


def governor(
    clock: Clock,
    policy: CallPolicy = CallPolicy(max_retries=4, prices={"openai/m": Price(1.0, 2.0)}),
    deadline: float | None = None,
) -> ModelCalls:
    return ModelCalls(policy, deadline, sleep=clock.sleep, clock=lambda: clock.now)


def test_a_429_is_retried_after_the_seconds_its_retry_after_names() -> None:
    clock = Clock()
    provider = Provider(status_error(429, "7"))
    calls = governor(clock)
    calls.complete(provider, "task", "openai/m", {"model": "openai/m", "messages": []})
    assert clock.sleeps == [7.0]
    assert len(provider.calls) == 2
    usage = calls.ledger.snapshot()["task"]
    assert (usage.calls, usage.failed_attempts, usage.prompt_tokens, usage.completion_tokens) == (1, 1, 10, 2)


def test_each_attempt_gets_the_timeout_and_no_library_retries() -> None:
    clock = Clock()
    provider = Provider()
    governor(clock, CallPolicy(timeout=12.5)).complete(
        provider, "task", "openai/m", {"model": "openai/m", "num_retries": 3, "timeout": 600}
    )
    assert (
        provider.calls[0]["timeout"],
        provider.calls[0]["num_retries"],
        provider.calls[0]["max_retries"],
    ) == (12.5, 0, 0)


def test_without_retry_after_the_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    clock = Clock()
    provider = Provider(*[status_error(503) for _ in range(4)])
    governor(clock, CallPolicy(max_retries=4, backoff=1.0, max_backoff=3.0)).complete(
        provider, "judge", "openai/m", {}
    )
    bounds = [(0.8, 1.0), (1.6, 2.0), (2.4, 3.0), (2.4, 3.0)]
    assert len(clock.sleeps) == 4 and all(low <= s <= high for s, (low, high) in zip(clock.sleeps, bounds)), (
        clock.sleeps
    )


def test_a_provider_that_stays_down_fails_naming_role_model_and_error() -> None:
    clock = Clock()
    provider = Provider(*[status_error(503) for _ in range(10)])
    calls = governor(clock)
    with pytest.raises(ModelCallFailed) as failure:
        calls.complete(provider, "reflection", "openai/reflector", {})
    assert str(failure.value).startswith("reflection model openai/reflector: 5 consecutive 503 responses")
    assert len(provider.calls) == 5
    assert calls.ledger.snapshot()["reflection"].failed_attempts == 5


def test_after_a_final_failure_every_call_fails_at_once_without_sending() -> None:
    clock = Clock()
    provider = Provider(*[status_error(503) for _ in range(5)])
    calls = governor(clock)
    with pytest.raises(ModelCallFailed):
        calls.complete(provider, "reflection", "openai/reflector", {})
    sent = len(provider.calls)
    with pytest.raises(ModelCallFailed, match="reflection model openai/reflector"):
        calls.complete(provider, "task", "openai/task", {})
    assert len(provider.calls) == sent
    with pytest.raises(ModelCallFailed, match="503"):
        calls.raise_if_failed()


def test_a_retry_after_beyond_the_deadline_gives_up_at_once_and_says_why() -> None:
    clock = Clock()
    provider = Provider(status_error(429, "120"))
    with pytest.raises(
        ModelCallFailed,
        match=r"task model openai/m: a 429 response; asked to retry after 120s would pass the run's deadline",
    ):
        governor(clock, deadline=60.0).complete(provider, "task", "openai/m", {})
    assert clock.sleeps == [] and len(provider.calls) == 1


def test_timeouts_are_retried_and_an_attempt_never_outlives_the_deadline() -> None:
    clock = Clock()
    timeout = openai.APITimeoutError(request=REQUEST)
    provider = Provider(timeout, timeout, timeout, clock=clock, takes=5.0)
    calls = governor(
        clock, CallPolicy(timeout=5.0, max_retries=10, backoff=1.0, max_backoff=1.0), deadline=14.0
    )
    with pytest.raises(ModelCallFailed, match="judge model openai/j: 3 consecutive timeouts"):
        calls.complete(provider, "judge", "openai/j", {})
    assert [c["timeout"] for c in provider.calls] == [
        5.0,
        5.0,
        pytest.approx(14.0 - 10.0 - sum(clock.sleeps[:2])),
    ]


def test_connection_errors_are_retried() -> None:
    clock = Clock()
    provider = Provider(openai.APIConnectionError(request=REQUEST))
    governor(clock).complete(provider, "task", "openai/m", {})
    assert len(provider.calls) == 2


def test_an_authentication_error_fails_for_good_at_once() -> None:
    clock = Clock()
    provider = Provider(status_error(401))
    calls = governor(clock)
    with pytest.raises(ModelCallFailed, match="task model openai/m: a 401 response"):
        calls.complete(provider, "task", "openai/m", {})
    assert len(provider.calls) == 1 and calls.failure is not None


def test_other_client_errors_propagate_unchanged_and_are_not_final() -> None:
    clock = Clock()
    provider = Provider(status_error(400))
    calls = governor(clock)
    with pytest.raises(openai.APIStatusError):
        calls.complete(provider, "task", "openai/m", {})
    assert calls.failure is None and len(provider.calls) == 1


def test_classify_reads_retry_after_in_every_form() -> None:
    assert classify(status_error(429, "3")).retry_after == 3.0
    assert classify(status_error(503)).retry_after is None
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "1500"})) == 1.5
    assert (
        8
        <= retry_after_seconds(
            httpx.Headers(
                {
                    "retry-after": __import__("email.utils").utils.formatdate(
                        __import__("time").time() + 10, usegmt=True
                    )
                }
            )
        )
        <= 10
    )
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None


def test_policy_prices_beat_the_cost_map_and_unknown_models_cost_nothing_but_say_so() -> None:
    assert call_cost(1_000_000, 500_000, "openai/m", {"openai/m": Price(1.0, 2.0)}) == pytest.approx(2.0)
    assert call_cost(1000, 1000, "openai/no-such-model-anywhere", {}) is None
    priced = call_cost(1_000_000, 0, "openai/gpt-4o-mini", {})
    assert priced is not None and priced > 0  # litellm's bundled cost map, no network
    ledger = UsageLedger()
    ledger.record("judge", prompt_tokens=5, completion_tokens=1, cost=None)
    ledger.record("judge", prompt_tokens=5, completion_tokens=1, cost=0.5)
    usage = ledger.snapshot()["judge"]
    assert (usage.calls, usage.prompt_tokens, usage.cost_usd, usage.cost_unknown) == (2, 10, 0.5, True)
    assert ledger.cost_usd == 0.5


def test_the_role_is_the_tag_else_the_scope_else_judge() -> None:
    assert role_of({"gepa_stream_role": "reflection"}) == "reflection"
    assert role_of(None) == "judge"
    with role_scope("task"):
        assert role_of({}) == "task"
        assert role_of({"gepa_stream_role": "reflection"}) == "reflection"


def test_the_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="timeout"):
        CallPolicy(timeout=0)
    with pytest.raises(ValueError, match="max_retries"):
        CallPolicy(max_retries=-1)


def test_tokens_are_read_from_litellm_responses_and_provider_json_alike() -> None:
    assert token_counts(answer(7, 3)) == (7, 3)
    assert token_counts({"usage": {"prompt_tokens": 7, "completion_tokens": 3}}) == (7, 3)
    assert token_counts({"usage": {"input_tokens": 5, "output_tokens": 2}}) == (5, 2)
    assert token_counts({}) == (0, 0)
