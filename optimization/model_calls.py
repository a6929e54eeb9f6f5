"""Every call to a real model provider, governed: a per-request timeout, retries of transient
faults (429, 5xx, timeouts, connection errors) with backoff that honours `Retry-After` inside
the run's deadline, a named failure when the retries run out, and tokens and USD per role.

litellm is the one door all real calls take: the template agent, `dspy.LM` (built with the
litellm engine by `make_lm`), GEPA's reflection LM and MLflow's judges. Those libraries each
bring their own retry settings (GEPA: 3 retries without waiting, MLflow judges: 10 with
exponential backoff, dspy: its own loop), none bounded by a deadline and none naming what
failed. While installed, `litellm.completion` is wrapped so that a call that carries our role
tag (`metadata={"gepa_stream_role": ...}`) or runs inside an active `ModelCalls` scope follows
this module's policy instead; other calls pass through unchanged.

Roles: the tag, else the role set by `role_scope` around user code (the predict_fn is the
task), else `judge` (the only untagged callers inside a run are MLflow's judges).
"""

from __future__ import annotations

import contextvars
import email.utils
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import tenacity

from optimization.errors import OptimizationFailed
from schemas.events import ModelRole

ROLES: tuple[ModelRole, ...] = ("task", "reflection", "judge")
ROLE_KEY = "gepa_stream_role"
"""Key in litellm's `metadata` argument naming the role of a call (removed before sending)."""

_ROLE: contextvars.ContextVar[ModelRole | None] = contextvars.ContextVar(
    "gepa_stream_model_role", default=None
)
_FATAL_STATUS = {401: "unauthorized", 403: "forbidden", 404: "not found"}
"""Answers no retry can change: the key or the model name is wrong, so every later call fails too."""


@dataclass(frozen=True)
class Price:
    """USD per million prompt (input) and completion (output) tokens."""

    input: float
    output: float


@dataclass(frozen=True)
class CallPolicy:
    """How one model request is made: `timeout` (s) per attempt, up to `max_retries` retries of a
    transient fault, waiting `Retry-After` when the provider says, else `backoff` doubling up to
    `max_backoff` (s); `prices` for models litellm's cost map lacks (litellm model string -> Price)."""

    timeout: float = 60.0
    max_retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 30.0
    prices: dict[str, Price] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"timeout: must be > 0 seconds, got {self.timeout}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries: must be >= 0, got {self.max_retries}")
        if self.backoff < 0 or self.max_backoff < self.backoff:
            raise ValueError(
                f"backoff: need 0 <= backoff <= max_backoff, got {self.backoff} and {self.max_backoff}"
            )


@dataclass
class UsageTally:
    """What one role's calls used: completed calls, failed attempts, tokens, estimated USD.
    `cost_unknown`: some call's model has no price (litellm's map nor the policy), counted as 0."""

    calls: int = 0
    failed_attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_unknown: bool = False

    def add(self, other: UsageTally) -> None:
        """Add `other`'s figures to these."""
        self.calls += other.calls
        self.failed_attempts += other.failed_attempts
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        self.cost_unknown = self.cost_unknown or other.cost_unknown


class UsageLedger:
    """Thread-safe usage per role (GEPA evaluates in several threads)."""

    def __init__(self, initial: dict[str, UsageTally] | None = None) -> None:
        self._lock = threading.Lock()
        self._roles: dict[str, UsageTally] = {}
        for role, usage in (initial or {}).items():
            self._roles.setdefault(role, UsageTally()).add(usage)

    def record(
        self,
        role: ModelRole,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost: float | None = 0.0,
        failed_attempts: int = 0,
    ) -> None:
        """One completed call of `role` (cost None: the model has no price)."""
        with self._lock:
            usage = self._roles.setdefault(role, UsageTally())
            usage.calls += 1
            usage.prompt_tokens += prompt_tokens
            usage.completion_tokens += completion_tokens
            usage.cost_usd += cost or 0.0
            usage.cost_unknown = usage.cost_unknown or cost is None

    def failed_attempt(self, role: ModelRole) -> None:
        """An attempt of `role` that failed (it is retried, or it was the last)."""
        with self._lock:
            self._roles.setdefault(role, UsageTally()).failed_attempts += 1

    @property
    def cost_usd(self) -> float:
        """Estimated USD of every role so far."""
        with self._lock:
            return sum(u.cost_usd for u in self._roles.values())

    def snapshot(self) -> dict[str, UsageTally]:
        """A copy of the figures per role, in role order."""
        with self._lock:
            return {role: UsageTally(**vars(self._roles[role])) for role in ROLES if role in self._roles}


class ModelCallFailed(OptimizationFailed):
    """A model call failed for good: its retries ran out, its deadline passed, or the provider
    refused it (401/403/404). The message names the role, the model and the error."""

    def __init__(self, role: str, model: str, reason: str) -> None:
        RuntimeError.__init__(self, f"{role} model {model}: {reason}")
        self.cause = reason
        self.role, self.model, self.reason = role, model, reason


@dataclass(frozen=True)
class FailedAttempt:
    """A failed attempt: a short label (`503 response`, `timeout`), whether a retry can help,
    and the provider's `Retry-After` in seconds, if it sent one."""

    label: str
    transient: bool
    retry_after: float | None = None
    detail: str = ""


def retry_after_seconds(headers: Any) -> float | None:
    """`Retry-After` (seconds or an HTTP date) or `retry-after-ms` of a response's headers."""
    if headers is None:
        return None
    try:
        milliseconds = headers.get("retry-after-ms")
        if milliseconds is not None:
            return max(0.0, float(milliseconds) / 1000)
        value = headers.get("retry-after")
    except (AttributeError, TypeError, ValueError):
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify(error: BaseException) -> FailedAttempt:
    """What a litellm, OpenAI SDK or `requests` exception (or any with a `status_code` and a
    `response`) means for a retry."""
    import openai
    import requests

    detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    unreadable = _unreadable_answer(error)
    if unreadable is not None:  # litellm reports a 200 whose body is not JSON as a 500
        return FailedAttempt(
            "malformed response", True, detail=f"a 200 answer that is not valid JSON: {unreadable}"
        )
    if isinstance(error, openai.APITimeoutError | requests.Timeout):
        return FailedAttempt("timeout", True, detail=detail)
    if isinstance(error, requests.ConnectionError):
        return FailedAttempt("connection error", True, detail=detail)
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and (status == 429 or status >= 500 or status == 408):
        headers = getattr(error, "litellm_response_headers", None) or getattr(
            getattr(error, "response", None), "headers", None
        )
        return FailedAttempt(f"{status} response", True, retry_after_seconds(headers), detail)
    if isinstance(error, openai.APIConnectionError):
        return FailedAttempt("connection error", True, detail=detail)
    if isinstance(status, int):
        return FailedAttempt(f"{status} response", False, detail=detail)
    return FailedAttempt(type(error).__name__, False, detail=detail)


def _unreadable_answer(error: BaseException) -> str | None:
    """The JSON error behind `error` if the provider's answer could not be parsed, else None."""
    import openai

    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, json.JSONDecodeError | openai.APIResponseValidationError):
            return str(cause)[:200]
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def failure_reason(faults: list[FailedAttempt], gave_up: str = "") -> str:
    """`5 consecutive 503 responses (last: ...)`, `3 failed attempts, the last a timeout`, ..."""
    last = faults[-1]
    if len(faults) == 1:
        text = f"{'an' if last.label[0] in 'aeiouAEIOU' else 'a'} {last.label}"
    elif all(f.label == last.label for f in faults):
        text = f"{len(faults)} consecutive {last.label}s"
    else:
        text = f"{len(faults)} failed attempts, the last a {last.label}"
    if gave_up:
        text += f"; {gave_up}"
    return f"{text} (last: {last.detail})" if last.detail else text


def role_of(metadata: Any) -> ModelRole:
    """The role of a call: its metadata tag, else the role scope around it, else `judge`."""
    tagged = metadata.get(ROLE_KEY) if isinstance(metadata, dict) else None
    if tagged in ROLES:
        return tagged
    return _ROLE.get() or "judge"


@contextmanager
def role_scope(role: ModelRole) -> Iterator[None]:
    """Calls made in this thread while active are `role`'s (used around the user's predict_fn)."""
    token = _ROLE.set(role)
    try:
        yield
    finally:
        _ROLE.reset(token)


def token_counts(response: Any) -> tuple[int, int]:
    """(prompt, completion) tokens of a litellm response or a provider's JSON answer (OpenAI or
    Anthropic field names)."""
    usage = response.get("usage") if isinstance(response, dict) else getattr(response, "usage", None)

    def field_value(*names: str) -> int:
        for name in names:
            value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
            if value:
                return int(value)
        return 0

    return field_value("prompt_tokens", "input_tokens"), field_value("completion_tokens", "output_tokens")


def call_cost(
    prompt_tokens: int, completion_tokens: int, model: str, prices: dict[str, Price]
) -> float | None:
    """USD of one call: the policy's price for `model`, else litellm's bundled cost map;
    None when neither knows the model."""
    price = prices.get(model)
    if price is not None:
        return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000
    import litellm

    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:  # litellm raises several types for a model missing from its map
        return None
    return float(prompt_cost) + float(completion_cost)


def template_tokens(text: str) -> int:
    """Length of `text` in tokens: OpenAI's `cl100k_base` BPE, the encoding litellm bundles (its
    `default_encoding` points tiktoken at the BPE file shipped inside litellm, so nothing is
    downloaded). One tokenizer for every model: the figure measures a template's growth and is
    compared against `promotion.max_template_tokens`, not billed (bills use the provider's
    `usage`); other tokenizers differ by some 10-20 %. Special-token text counts as plain text."""
    from litellm.litellm_core_utils.default_encoding import encoding

    return len(encoding.encode(text, disallowed_special=()))


class ModelCalls:
    """The governor of a run's model calls: policy, deadline (monotonic seconds), usage ledger,
    the run's judge model (litellm form: MLflow's judge requests carry only the bare name), and
    (with `latch`) the first final failure, after which every call fails at once with it."""

    def __init__(
        self,
        policy: CallPolicy = CallPolicy(),
        deadline: float | None = None,
        ledger: UsageLedger | None = None,
        *,
        judge_model: str | None = None,
        latch: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.deadline = deadline
        self.ledger = ledger or UsageLedger()
        self.failure: ModelCallFailed | None = None
        self.judge_model = judge_model
        self.latch = latch
        self._sleep = sleep
        self._clock = clock

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline)."""
        return None if self.deadline is None else self.deadline - self._clock()

    def complete(self, send: Callable[..., Any], role: ModelRole, model: str, kwargs: dict[str, Any]) -> Any:
        """Send one request through `send` (litellm's completion) under the policy; record its usage.

        1. fail at once if a call of the run failed for good or the deadline passed;
        2. each attempt gets `timeout` (at most the time left) and no library retries;
        3. a transient fault is retried after `Retry-After` or the backoff, unless that wait
           would pass the deadline or the retries are used up: then ModelCallFailed;
        4. a 401/403/404 fails for good at once; any other error propagates unchanged.
        """
        if self.failure is not None:
            raise self.failure
        faults: list[FailedAttempt] = []

        def attempt() -> Any:
            if self.failure is not None:  # another thread's call failed for good meanwhile
                raise self.failure
            left = self.remaining()
            if left is not None and left <= 0:
                raise self._fail(role, model, faults, "the run's deadline has passed") from None
            timeout = self.policy.timeout if left is None else min(self.policy.timeout, left)
            try:
                return send(**{**kwargs, "timeout": timeout, "num_retries": 0, "max_retries": 0})
            except Exception as error:
                fault = classify(error)
                faults.append(fault)
                if fault.transient:
                    self.ledger.failed_attempt(role)
                    raise
                status = getattr(error, "status_code", None)
                if isinstance(status, int) and status in _FATAL_STATUS:
                    raise self._fail(role, model, faults) from error
                raise

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda error: not isinstance(error, ModelCallFailed) and faults[-1].transient
            ),
            wait=lambda state: self._wait(faults[-1], state.attempt_number),
            stop=lambda state: (
                state.attempt_number > self.policy.max_retries or self._past_deadline(state.upcoming_sleep)
            ),
            sleep=self._sleep,
            retry_error_callback=lambda state: self._give_up(role, model, faults, state),
        )
        response = retrying(attempt)
        prompt_tokens, completion_tokens = token_counts(response)
        cost = call_cost(prompt_tokens, completion_tokens, model, self.policy.prices)
        self.ledger.record(role, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost=cost)
        if role == "task":
            _meter(prompt_tokens, completion_tokens, cost)
        return response

    def _wait(self, fault: FailedAttempt, attempt_number: int) -> float:
        if fault.retry_after is not None:
            return fault.retry_after
        backoff = min(self.policy.max_backoff, self.policy.backoff * 2 ** (attempt_number - 1))
        return backoff * random.uniform(0.8, 1.0)  # jitter: parallel callers do not retry in step

    def _past_deadline(self, wait: float) -> bool:
        left = self.remaining()
        return left is not None and wait >= left

    def _give_up(
        self, role: ModelRole, model: str, faults: list[FailedAttempt], state: tenacity.RetryCallState
    ) -> Any:
        gave_up = ""
        if self._past_deadline(state.upcoming_sleep):
            asked = (
                f"asked to retry after {faults[-1].retry_after:g}s"
                if faults[-1].retry_after is not None
                else "the next retry"
            )
            gave_up = f"{asked} would pass the run's deadline"
        raise self._fail(role, model, faults, gave_up)

    def _fail(
        self, role: ModelRole, model: str, faults: list[FailedAttempt], gave_up: str = ""
    ) -> ModelCallFailed:
        failure = ModelCallFailed(role, model, failure_reason(faults, gave_up) if faults else gave_up)
        if self.latch and self.failure is None:
            self.failure = failure
        return failure

    def raise_if_failed(self) -> None:
        """Raise the run's final model-call failure, if any (libraries may have swallowed it)."""
        if self.failure is not None:
            raise self.failure


_ACTIVE: list[ModelCalls] = []
_STATE_LOCK = threading.Lock()
_DEFAULT = ModelCalls(latch=False)
"""Governs tagged calls made outside any run scope (e.g. `complete_text` in a user's script)."""


def current() -> ModelCalls | None:
    """The innermost active run scope's governor, if any."""
    try:
        return _ACTIVE[-1]
    except IndexError:  # no scope (or the last one just closed in another thread)
        return None


def install() -> None:
    """Wrap `litellm.completion` and MLflow's judge requests once per process (idempotent)."""
    import litellm

    with _STATE_LOCK:
        if getattr(litellm.completion, "_gepa_stream_governed", False):
            return
        _install_judge_requests()
        original = litellm.completion

        def completion(*args: Any, **kwargs: Any) -> Any:
            metadata = kwargs.get("metadata")
            tags = metadata if isinstance(metadata, dict) else {}
            tagged = ROLE_KEY in tags
            governor = current() or (_DEFAULT if tagged else None)
            if governor is None:
                return original(*args, **kwargs)
            role = role_of(metadata)
            if tagged:
                kwargs["metadata"] = {k: v for k, v in tags.items() if k != ROLE_KEY} or None
            if args:
                kwargs.update(zip(("model", "messages"), args))
            for library_retry in ("retry_policy", "retry_strategy"):
                kwargs.pop(library_retry, None)
            return governor.complete(original, role, str(kwargs.get("model")), kwargs)

        completion._gepa_stream_governed = True  # type: ignore[attr-defined]
        litellm.completion = completion


def _install_judge_requests() -> None:
    """MLflow's judges reach OpenAI-style providers through their own HTTP call (the gateway
    adapter's `send_chat_request`, with its own retries and a 300 s timeout), not litellm; inside
    a run scope that request follows the policy too and counts as the judge's."""
    import requests
    from mlflow.genai.judges.adapters import gateway_adapter
    from mlflow.genai.judges.adapters.utils import (
        ChatCompletionError,
        _safe_parse_error,
        is_context_window_error,
    )

    original = gateway_adapter.send_chat_request

    def send_chat_request(
        endpoint: str, headers: dict[str, str], payload: dict[str, Any], num_retries: int
    ) -> dict[str, Any]:
        governor = current()
        if governor is None:
            return original(endpoint=endpoint, headers=headers, payload=payload, num_retries=num_retries)

        def send(timeout: float, **_: Any) -> dict[str, Any]:
            response = requests.post(
                endpoint,
                headers={"Content-Type": "application/json", **headers},
                json=payload,
                timeout=timeout,
            )
            if response.status_code >= 400:
                body = _safe_parse_error(response)
                error = ChatCompletionError(
                    response.status_code,
                    body,
                    is_context_window_error=response.status_code == 400 and is_context_window_error(body),
                )
                error.response = response  # type: ignore[attr-defined]  # classify() reads Retry-After from it
                raise error
            return response.json()

        return governor.complete(send, "judge", governor.judge_model or str(payload.get("model")), {})

    gateway_adapter.send_chat_request = send_chat_request


_METERS: list[UsageTally] = []


@contextmanager
def metered_task_calls() -> Iterator[UsageTally]:
    """The task model's calls made anywhere in the process while active, tallied apart from the run's
    ledger: the held-out evaluation of one version measures its tokens and USD per call this way.
    Real calls count the provider's `usage`; offline models (which never reach litellm and are
    not in the ledger) count `template_tokens` of their prompt and answer (`meter_offline_call`)."""
    tally = UsageTally()
    with _STATE_LOCK:
        _METERS.append(tally)
    try:
        yield tally
    finally:
        with _STATE_LOCK:
            _METERS.remove(tally)


def _meter(prompt_tokens: int, completion_tokens: int, cost: float | None) -> None:
    with _STATE_LOCK:
        for tally in _METERS:
            tally.calls += 1
            tally.prompt_tokens += prompt_tokens
            tally.completion_tokens += completion_tokens
            tally.cost_usd += cost or 0.0
            tally.cost_unknown = tally.cost_unknown or cost is None


def meter_offline_call(model: str, prompt: str, answer: str) -> None:
    """An offline task model's call, for an active meter only (no-op otherwise): tokens counted with
    `template_tokens`, USD from the run's `prices` for `model` (`offline/<name>`), else unknown."""
    if not _METERS:
        return
    prompt_tokens, completion_tokens = template_tokens(prompt), template_tokens(answer)
    governor = current()
    price = (governor.policy.prices if governor is not None else {}).get(model)
    cost = (
        None
        if price is None
        else (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000
    )
    _meter(prompt_tokens, completion_tokens, cost)


@contextmanager
def governed(
    policy: CallPolicy = CallPolicy(),
    deadline: float | None = None,
    ledger: UsageLedger | None = None,
    judge_model: str | None = None,
) -> Iterator[ModelCalls]:
    """A run scope: every litellm call of the process follows `policy` until `deadline` and is
    counted in `ledger`. Inside an active scope, the outer scope's governor is reused (a job's
    stages share one ledger and one deadline)."""
    outer = current()
    if outer is not None:
        yield outer
        return
    install()
    governor = ModelCalls(policy, deadline, ledger, judge_model=judge_model)
    with _STATE_LOCK:
        _ACTIVE.append(governor)
    try:
        yield governor
    finally:
        with _STATE_LOCK:
            _ACTIVE.remove(governor)
