"""The DSPy backend's held-out evaluation on `dspy.Evaluate`: the per-example scores of a plain loop
over the examples, on any number of threads; a failed prediction scores 0; if every prediction
failed (a provider that is down), the evaluation fails with a clear error instead of all zeros."""

from __future__ import annotations

import dspy
import pytest

from examples.router_program import Router
from optimization.backends import DspyBackend
from optimization.errors import OptimizationFailed
from optimization.model_calls import CallPolicy, ModelCallFailed, governed
from optimization.offline.datasets import support_tickets
from optimization.offline.provider import FakeProvider
from optimization.prompt_version import Version
from schemas.config import PromptPolicy

RULE = 'Rule: if the ticket mentions "crash", the category is technical.'
PROMPT = "router"
PREDICTOR_PROMPT = "router_route"
RECORDS = support_tickets(16)


class FlakyRouter(Router):
    """The example router, failing on every ticket that mentions a refund."""

    def forward(self, ticket: str) -> dspy.Prediction:
        if "refund" in ticket:
            raise RuntimeError("the provider refused this ticket")
        return super().forward(ticket)


def make_flaky_router() -> dspy.Module:
    return FlakyRouter()


def backend(
    task_model: str, num_threads: int = 1, program: str = "examples.router_program:make_program"
) -> DspyBackend:
    """A DspyBackend whose baseline is the program's own instruction (no registry)."""
    policy = PromptPolicy(
        name=PROMPT, backend="dspy", program=program, task_model=task_model, input_keys=["ticket"]
    )
    return DspyBackend(
        policy, lambda name, initial: Version(name, 1, initial or "", {}), num_threads=num_threads
    )


def loop_scores(backend: DspyBackend, templates: dict[str, str]) -> list[float]:
    """The scores of a plain sequential loop over the examples (the backend's former evaluation)."""
    program = backend.program(templates)
    with dspy.context(lm=backend.lm):
        return [float(backend.metric(e, program(**e.inputs())).score) for e in backend.examples(RECORDS)]


@pytest.mark.parametrize("num_threads", [1, 4])
def test_the_scores_are_those_of_a_loop_over_the_examples(num_threads: int) -> None:
    router = backend("offline/support-router", num_threads)
    plain = {PREDICTOR_PROMPT: router.baseline()[PREDICTOR_PROMPT].template}
    ruled = {PREDICTOR_PROMPT: f"{plain[PREDICTOR_PROMPT]}\n{RULE}"}
    for templates in (plain, ruled):
        scores = router.evaluate(RECORDS, templates)
        assert scores == loop_scores(router, templates)
    assert 0 < sum(scores) < len(scores), "a mix of right and wrong answers"


def test_a_failed_prediction_scores_zero_and_the_others_count() -> None:
    router = backend("offline/support-router", 4, program=f"{__name__}:make_flaky_router")
    plain = backend("offline/support-router")
    templates = {PREDICTOR_PROMPT: plain.baseline()[PREDICTOR_PROMPT].template}
    refused = ["refund" in r["inputs"]["ticket"] for r in RECORDS]
    assert any(refused) and not all(refused)
    scores = router.evaluate(RECORDS, templates)
    expected = [
        0.0 if no else score for no, score in zip(refused, loop_scores(plain, templates), strict=True)
    ]
    assert scores == expected


def test_every_prediction_failing_fails_the_evaluation() -> None:
    router = backend("offline/failing", 4)
    with pytest.raises(OptimizationFailed, match="every prediction failed during evaluation") as failed:
        router.evaluate(RECORDS, {})
    assert "simulated provider outage" in str(failed.value)


def test_a_provider_down_fails_the_evaluation_naming_the_model(fake_provider: FakeProvider) -> None:
    router = backend("openai/support-router", 2)
    fake_provider.inject("status", code=503, times=None)
    with governed(CallPolicy(max_retries=1, backoff=0.01)):
        with pytest.raises(ModelCallFailed, match="task model openai/support-router: .*503"):
            router.evaluate(RECORDS, {})
