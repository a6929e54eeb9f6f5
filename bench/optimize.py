"""Benchmark: the same GEPA optimization with a simulated 50 ms per model call, at 1 and at 8 threads.

Two providers side by side: the offline demo models (`offline/support-router`,
`offline/reflector` with `latency_ms`, no litellm) and the fake OpenAI-compatible
provider (`openai/support-router`, `openai/reflector` through litellm, served by
`python -m optimization.offline.provider` in its own process with a 50 ms latency
fault). Also measures the project's per-call overhead over a raw `litellm.completion`
against that provider. Prints wall times and speedups measured in one run.

    .venv/bin/python bench/optimize.py [--backend dspy|mlflow|both] [--provider offline|fake|both]
                                       [--latency-ms 50] [--threads 8] [--calls 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from schemas.third_parties import quiet_third_parties  # noqa: E402

quiet_third_parties()

import dspy  # noqa: E402
import mlflow  # noqa: E402

from optimization import (  # noqa: E402
    RunLimits,
    complete_text,
    convert_to_dspy_examples,
    make_lm,
    make_template_agent,
    run_dspy_gepa,
    run_mlflow_gepa,
)
from optimization.model_calls import governed  # noqa: E402
from optimization.offline.datasets import SEED_ROUTER_PROMPT, support_tickets  # noqa: E402
from optimization.results import HeldOutScores  # noqa: E402

N_TRAIN, N_VAL, BUDGET = 24, 40, 400


def timed(run: Callable[[], HeldOutScores]) -> tuple[HeldOutScores, float]:
    """Run the optimization (progress bars silenced) and return its result and wall seconds."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        result = run()
    return result, time.perf_counter() - start


def models(provider: str, latency_ms: float) -> tuple[str, str]:
    """(task model, reflection model) litellm strings of `provider`; the fake one adds its latency itself."""
    if provider == "offline":
        return (
            f"offline/support-router?latency_ms={latency_ms:g}",
            f"offline/reflector?latency_ms={latency_ms:g}",
        )
    return "openai/support-router", "openai/reflector"


def run_dspy(provider: str, threads: int, latency_ms: float) -> tuple[HeldOutScores, float]:
    """DSPy backend: dspy.GEPA on a one-predictor router program."""
    task, reflection = models(provider, latency_ms)
    records = support_tickets(N_TRAIN + N_VAL)
    examples = convert_to_dspy_examples(records, ["ticket"], "category")
    instructions = SEED_ROUTER_PROMPT.rsplit("\n", 1)[0]
    program = dspy.Predict(dspy.Signature("ticket -> category", instructions))
    with dspy.context(lm=make_lm(task, cache=False)):  # (offline models never cache)
        return timed(
            lambda: run_dspy_gepa(
                program,
                examples[:N_TRAIN],
                examples[N_TRAIN:],
                reflection_model=make_lm(reflection, cache=False),
                limits=RunLimits(max_metric_calls=BUDGET, num_threads=threads),
            )
        )


def run_mlflow(provider: str, threads: int, latency_ms: float) -> tuple[HeldOutScores, float]:
    """MLflow backend: optimize_prompts + GEPA on the built-in template agent (fresh sqlite store per run, set up untimed)."""
    task, reflection = models(provider, latency_ms)
    mlflow.set_tracking_uri(f"sqlite:///{tempfile.mkdtemp(prefix='bench-mlflow-')}/mlflow.db")
    prompt = mlflow.genai.register_prompt(name="support_router", template=SEED_ROUTER_PROMPT)
    records = support_tickets(N_TRAIN + N_VAL)
    agent = make_template_agent(prompt.uri, task)
    return timed(
        lambda: run_mlflow_gepa(
            agent,
            records[:N_TRAIN],
            records[N_TRAIN:],
            [prompt.uri],
            ["exact_match"],
            reflection_model=reflection.replace("/", ":/", 1) if provider == "fake" else reflection,
            limits=RunLimits(max_metric_calls=BUDGET, num_threads=threads),
        )
    )


class ProviderProcess:
    """`python -m optimization.offline.provider` in its own process (its CPU is not the optimizer's)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "optimization.offline.provider", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None  # stdout=PIPE
        self.base_url = self.process.stdout.readline().split()[3]  # "fake provider at <url> (...)"
        os.environ["OPENAI_BASE_URL"] = self.base_url
        os.environ["OPENAI_API_KEY"] = "sk-fake-gepa"

    def control(self, method: str, path: str, body: dict | None = None) -> dict:
        """Call the provider's `/_fake/...` control endpoints."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url.removesuffix("/v1") + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def latency(self, ms: float) -> None:
        """Every later request waits `ms` at the provider."""
        self.control("DELETE", "/_fake/faults")
        if ms:
            self.control("POST", "/_fake/faults", {"kind": "latency", "ms": ms, "times": None})

    def stop(self) -> None:
        """End the provider process."""
        self.process.terminate()
        self.process.wait(timeout=30)


def per_call_overhead(calls: int) -> list[tuple[str, float]]:
    """Median ms per call at 0 provider latency: raw litellm, then the project's `complete_text`
    outside and inside a run's model-call scope (timeouts, retries, usage accounting)."""
    import litellm

    messages = [{"role": "user", "content": "Route the ticket.\nTicket: I was charged twice"}]

    def median_ms(call: Callable[[], object]) -> float:
        call()  # warm-up (connection, lazy imports)
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            call()
            samples.append((time.perf_counter() - start) * 1000)
        return statistics.median(samples)

    raw = median_ms(
        lambda: litellm.completion(model="openai/support-router", messages=messages)
    )  # before the project wraps litellm
    project = median_ms(lambda: complete_text("openai/support-router", messages[0]["content"]))
    with governed():
        in_run = median_ms(lambda: complete_text("openai/support-router", messages[0]["content"]))
    return [
        ("raw litellm.completion", raw),
        ("complete_text", project),
        ("complete_text in a run scope", in_run),
    ]


def main() -> None:
    """Run each provider and backend at 1 and N threads and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["dspy", "mlflow", "both"], default="both")
    parser.add_argument("--provider", choices=["offline", "fake", "both"], default="both")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=200, help="calls per per-call overhead figure")
    args = parser.parse_args()
    runners = {"dspy": run_dspy, "mlflow": run_mlflow}
    backends = list(runners) if args.backend == "both" else [args.backend]
    providers = ["offline", "fake"] if args.provider == "both" else [args.provider]
    fake = ProviderProcess() if "fake" in providers else None
    try:
        if fake is not None:
            fake.latency(0)
            print(f"per-call time against the fake provider (0 ms latency, median of {args.calls})")
            figures = per_call_overhead(args.calls)
            for name, ms in figures:
                print(f"  {name:30} {ms:7.2f} ms  (+{ms - figures[0][1]:.2f} ms over raw)")
            fake.latency(args.latency_ms)
        print(
            f"{N_TRAIN} train / {N_VAL} held-out tickets, budget {BUDGET} metric calls, {args.latency_ms:g} ms per model call"
        )
        print(f"{'provider':8} {'backend':8} {'threads':>7} {'wall s':>8} {'held-out':>13} {'calls':>6}")
        for provider in providers:
            for backend in backends:
                walls = {}
                for threads in (1, args.threads):
                    result, walls[threads] = runners[backend](provider, threads, args.latency_ms)
                    scores = f"{result.initial_score:.2f} -> {result.final_score:.2f}"
                    print(
                        f"{provider:8} {backend:8} {threads:>7} {walls[threads]:>8.2f} {scores:>13} {result.metric_calls:>6}",
                        flush=True,
                    )
                print(
                    f"{provider:8} {backend:8} speedup {walls[1] / walls[args.threads]:.2f}x at {args.threads} threads",
                    flush=True,
                )
        if fake is not None:
            print(f"fake provider served {fake.control('GET', '/_fake/stats')['requests']} requests")
    finally:
        if fake is not None:
            fake.stop()


if __name__ == "__main__":
    main()
