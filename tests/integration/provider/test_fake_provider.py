"""The fake OpenAI-compatible provider seen through the real `openai` and litellm clients:
offline-model answers, usage, API keys, every fault kind as a client observes it, and control over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import dspy
import litellm
import openai
import pytest

from optimization.models import make_lm
from optimization.offline import respond_to_prompt
from optimization.offline.provider import FakeProvider

ROUTER_PROMPT = 'Route the ticket.\nRule: if the ticket mentions "refund", the category is billing.\nTicket: I want a refund'


def client(provider: FakeProvider, timeout: float = 10.0, api_key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=provider.base_url, api_key=api_key or provider.api_key, max_retries=0, timeout=timeout
    )


def ask(provider: FakeProvider, model: str = "support-router", **options) -> openai.types.chat.ChatCompletion:
    return client(provider, **options).chat.completions.create(
        model=model, messages=[{"role": "user", "content": ROUTER_PROMPT}]
    )


def test_answers_like_the_offline_model_with_usage_and_counts_tokens(fake_provider) -> None:
    first = ask(fake_provider)
    second = litellm.completion(
        model="openai/support-router", messages=[{"role": "user", "content": "Ticket: my app crashed"}]
    )
    assert first.choices[0].message.content == "billing" == respond_to_prompt("support-router", ROUTER_PROMPT)
    assert second.choices[0].message.content == respond_to_prompt("support-router", "Ticket: my app crashed")
    assert (
        first.usage.prompt_tokens > 0
        and first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    )
    served = fake_provider.stats()["by_model"]["support-router"]
    assert fake_provider.stats()["requests"] == 2 and served["requests"] == 2 and served["faults"] == 0
    assert served["prompt_tokens"] == first.usage.prompt_tokens + second.usage.prompt_tokens
    assert served["completion_tokens"] == first.usage.completion_tokens + second.usage.completion_tokens


class Route(dspy.Signature):
    """Route the ticket.
    Rule: if the ticket mentions "invoice", the category is billing."""

    ticket: str = dspy.InputField()
    category: str = dspy.OutputField()


@pytest.mark.parametrize("adapter", [dspy.ChatAdapter, dspy.JSONAdapter])
def test_dspy_program_gets_the_same_answers_as_through_the_offline_engine(fake_provider, adapter) -> None:
    tickets = ["Please send the invoice", "My parcel is late", "hello"]

    def answers(lm: dspy.BaseLM) -> list[str]:
        with dspy.context(lm=lm, adapter=adapter()):
            return [dspy.Predict(Route)(ticket=t).category for t in tickets]

    remote = dspy.LM(
        "openai/support-router", api_base=fake_provider.base_url, api_key=fake_provider.api_key, cache=False
    )
    offline = answers(make_lm("offline/support-router"))
    assert answers(remote) == offline and offline[0] == "billing"


REFUND_FEEDBACK = [
    {
        "inputs": {"ticket": "I want a refund"},
        "outputs": "general",
        "score": 0.0,
        "rationales": {"exact_match": "Got 'general'. Expected answer: \"billing\""},
    }
]


def reflection_prompt() -> str:
    """GEPA's own reflection prompt for the router instruction and one piece of feedback."""
    from gepa.strategies.instruction_proposal import InstructionProposalSignature

    return InstructionProposalSignature.prompt_renderer(
        {
            "current_instruction_doc": "Route the ticket.\nTicket: {{ticket}}",
            "dataset_with_feedback": REFUND_FEEDBACK,
        }
    )


def test_reflector_answers_dspy_json_adapter_and_gepa_reflection_prompt(fake_provider) -> None:
    from gepa.lm import LM
    from gepa.strategies.instruction_proposal import InstructionProposalSignature

    prompt = reflection_prompt()
    new = InstructionProposalSignature.output_extractor(LM("openai/reflector")(prompt))["new_instruction"]
    assert (
        new.startswith("Route the ticket.\nRule: if the ticket mentions")
        and "billing" in new
        and new.endswith("Ticket: {{ticket}}")
    )

    class Improve(dspy.Signature):
        """Improve the instruction."""

        current_instruction: str = dspy.InputField()
        examples_with_feedback: str = dspy.InputField()
        new_instruction: str = dspy.OutputField()

    lm = dspy.LM("openai/reflector", cache=False)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        proposed = dspy.Predict(Improve)(
            current_instruction="Route the ticket.", examples_with_feedback=json.dumps(REFUND_FEEDBACK)
        ).new_instruction
    assert proposed == new.replace("\nTicket: {{ticket}}", "")
    raw = litellm.completion(
        model="openai/reflector", messages=lm.history[-1]["messages"], response_format={"type": "json_object"}
    )
    assert json.loads(raw.choices[0].message.content) == {"new_instruction": proposed}


def test_a_verbose_reflector_answers_as_the_offline_one_with_notes() -> None:
    """`reflector_notes`: model `reflector` answers as `offline/reflector?notes=N` (its prompts grow);
    other models are unchanged."""
    messages = [{"role": "user", "content": reflection_prompt()}]
    answers = {}
    for notes in (0, 20):
        with FakeProvider(reflector_notes=notes) as provider:
            answers[notes] = [
                client(provider)
                .chat.completions.create(model=model, messages=messages)
                .choices[0]
                .message.content
                for model in ("reflector", "support-router")
            ]
    offline = make_lm("offline/reflector?notes=20")(messages=messages)[0]
    assert answers[20][0] == offline and "Note: " in offline
    assert "Note: " not in answers[0][0] and len(answers[20][0]) > len(answers[0][0])
    assert answers[20][1] == answers[0][1]
    with pytest.raises(ValueError, match="^reflector_notes:"):
        FakeProvider(reflector_notes=-1)
    standalone = subprocess.run(
        [sys.executable, "-m", "optimization.offline.provider", "--reflector-notes", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert standalone.returncode == 2 and standalone.stderr.strip().endswith(
        "error: reflector_notes: a whole number of words >= 0, got -1"
    )


def test_judge_answers_mlflow_builtin_judges_like_the_offline_scorers(fake_provider) -> None:
    from mlflow.genai.scorers import Correctness, Guidelines

    correctness = Correctness(model="openai:/judge")
    right = correctness(
        inputs={"q": "refund?"},
        outputs="You get a refund within 30 days",
        expectations={"expected_response": "refund within 30 days"},
    )
    wrong = correctness(
        inputs={"q": "refund?"},
        outputs="No idea",
        expectations={"expected_response": "refund within 30 days"},
    )
    assert (right.value, wrong.value) == (
        "yes",
        "no",
    ) and 'Expected answer: "refund within 30 days"' in wrong.rationale
    guideline = Guidelines(guidelines='The answer must say "30 days"', model="openai:/judge")
    assert guideline(inputs={"q": "refund?"}, outputs="Within 30 days.").value == "yes"
    assert guideline(inputs={"q": "refund?"}, outputs="Soon.").value == "no"


def test_wrong_or_missing_api_key_is_401(fake_provider) -> None:
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
        ask(fake_provider, api_key="sk-wrong")
    with pytest.raises(litellm.AuthenticationError):
        litellm.completion(
            model="openai/support-router", api_key="sk-wrong", messages=[{"role": "user", "content": "hi"}]
        )


def test_unknown_model_is_404_and_failing_model_is_500(fake_provider) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        ask(fake_provider, model="gpt-imaginary")
    with pytest.raises(openai.InternalServerError, match="simulated provider outage"):
        ask(fake_provider, model="failing")


def test_status_faults_carry_retry_after_and_are_consumed_per_model(fake_provider) -> None:
    fake_provider.inject("status", code=429, retry_after=2, model="support-router")
    fake_provider.inject("status", code=503, times=2, model="support-router")
    with pytest.raises(openai.RateLimitError) as limited:
        ask(fake_provider)
    assert limited.value.response.headers["retry-after"] == "2"
    assert ask(fake_provider, model="math").choices[0].message.content  # another model is untouched
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as unavailable:
            ask(fake_provider)
        assert unavailable.value.status_code == 503
    assert ask(fake_provider).choices[0].message.content == "billing"  # the faults are used up
    assert fake_provider.stats()["by_model"]["support-router"] == {
        **fake_provider.stats()["by_model"]["support-router"],
        "requests": 4,
        "faults": 3,
    }


def test_litellm_sees_each_fault_as_its_named_exception(fake_provider) -> None:
    def call(**options):
        return litellm.completion(
            model="openai/support-router",
            messages=[{"role": "user", "content": "hi"}],
            num_retries=0,
            max_retries=0,
            **options,
        )

    fake_provider.inject("status", code=429, retry_after=1)
    with pytest.raises(litellm.RateLimitError):
        call()
    fake_provider.inject("status", code=500)
    with pytest.raises(litellm.InternalServerError):
        call()
    fake_provider.inject("status", code=503)
    with pytest.raises(litellm.ServiceUnavailableError):
        call()
    fake_provider.inject("reset")
    with pytest.raises(
        litellm.InternalServerError, match="Connection error"
    ):  # litellm 1.110 names a reset so
        call()
    fake_provider.inject("malformed")
    with pytest.raises(
        litellm.InternalServerError, match="Unterminated string"
    ):  # the JSON error, as litellm wraps it
        call()
    fake_provider.inject("hang")
    started = time.monotonic()
    with pytest.raises(litellm.Timeout):
        call(timeout=1)
    assert time.monotonic() - started < 10
    assert call().choices[0].message.content == "general"


def test_reset_hang_malformed_and_latency_through_openai(fake_provider) -> None:
    fake_provider.inject("reset")
    with pytest.raises(openai.APIConnectionError):
        ask(fake_provider)
    fake_provider.inject("malformed")
    with pytest.raises((openai.APIResponseValidationError, json.JSONDecodeError)):
        ask(fake_provider)
    fake_provider.inject("hang", times=None, model="support-router")
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        ask(fake_provider, timeout=0.5)
    assert 0.4 < time.monotonic() - started < 10
    fake_provider.clear_faults()
    fake_provider.inject("latency", ms=300, times=None)
    started = time.monotonic()
    assert ask(fake_provider).choices[0].message.content == "billing"
    assert time.monotonic() - started >= 0.3


def test_hung_requests_end_when_the_provider_stops() -> None:
    provider = FakeProvider().start()
    provider.inject("hang", times=None)
    started = time.monotonic()
    with pytest.raises(openai.APIConnectionError):
        import threading

        threading.Timer(0.3, provider.stop).start()
        ask(provider, timeout=30)
    assert time.monotonic() - started < 10


def _http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_faults_and_stats_over_http_from_a_standalone_process() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "optimization.offline.provider", "--port", "0", "--api-key", "sk-other"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = process.stdout.readline().split()[3]
        root = base_url.removesuffix("/v1")
        assert (
            _http(
                "POST",
                f"{root}/_fake/faults",
                {"kind": "status", "code": 503, "times": None, "model": "math"},
            )[0]
            == 200
        )
        status, error = _http("POST", f"{root}/_fake/faults", {"kind": "status", "code": 418})
        assert status == 400 and error["error"]["message"].startswith("code:")
        assert _http("POST", f"{root}/_fake/faults", {"kind": "explode"})[1]["error"]["message"].startswith(
            "kind: unknown fault 'explode'"
        )
        remote = openai.OpenAI(base_url=base_url, api_key="sk-other", max_retries=0)
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                remote.chat.completions.create(
                    model="math", messages=[{"role": "user", "content": "What is 2 + 2?"}]
                )
        assert _http("DELETE", f"{root}/_fake/faults")[0] == 200
        assert (
            remote.chat.completions.create(
                model="math", messages=[{"role": "user", "content": "What is 2 + 2?"}]
            )
            .choices[0]
            .message.content
        )
        stats = _http("GET", f"{root}/_fake/stats")[1]
        assert (
            stats["requests"] == 4
            and stats["by_model"]["math"]["faults"] == 3
            and stats["by_model"]["math"]["completion_tokens"] > 0
        )
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_bad_fault_fields_are_named() -> None:
    provider = FakeProvider()
    with pytest.raises(ValueError, match="^times:"):
        provider.inject("reset", times=0)
    with pytest.raises(ValueError, match="^ms:"):
        provider.inject("latency")
    with pytest.raises(ValueError, match="^retry_after:"):
        provider.inject("status", code=429, retry_after="soon")
    with pytest.raises(ValueError, match="^code: not a parameter"):
        provider.inject("hang", code=500)
