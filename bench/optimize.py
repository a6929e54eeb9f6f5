"""Benchmark: the same GEPA optimization with a simulated 50 ms per model call, at 1 and at 8 threads.

Uses the offline demo models (`offline/support-router`, `offline/reflector`) with
`latency_ms` to stand in for a real provider; both backends by default. Prints
wall times and the speedup measured side by side in one run.

    .venv/bin/python bench/optimize.py [--backend dspy|mlflow|both] [--latency-ms 50] [--threads 8]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dspy  # noqa: E402
import mlflow  # noqa: E402

from optimization import RunLimits, convert_to_dspy_examples, make_lm, make_template_agent, run_dspy_gepa, run_mlflow_gepa  # noqa: E402
from optimization.offline.datasets import SEED_ROUTER_PROMPT, support_tickets  # noqa: E402
from optimization.results import HeldOutScores  # noqa: E402

N_TRAIN, N_VAL, BUDGET = 24, 40, 400


def timed(run: Callable[[], HeldOutScores]) -> tuple[HeldOutScores, float]:
    """Run the optimization (progress bars silenced) and return its result and wall seconds."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        result = run()
    return result, time.perf_counter() - start


def run_dspy(threads: int, latency_ms: float) -> tuple[HeldOutScores, float]:
    """DSPy backend: dspy.GEPA on a one-predictor router program."""
    records = support_tickets(N_TRAIN + N_VAL)
    examples = convert_to_dspy_examples(records, ["ticket"], "category")
    instructions = SEED_ROUTER_PROMPT.rsplit("\n", 1)[0]
    program = dspy.Predict(dspy.Signature("ticket -> category", instructions))
    with dspy.context(lm=make_lm("offline/support-router", latency_ms=latency_ms)):
        return timed(lambda: run_dspy_gepa(
            program, examples[:N_TRAIN], examples[N_TRAIN:], reflection_model=f"offline/reflector?latency_ms={latency_ms:g}",
            limits=RunLimits(max_metric_calls=BUDGET, num_threads=threads),
        ))


def run_mlflow(threads: int, latency_ms: float) -> tuple[HeldOutScores, float]:
    """MLflow backend: optimize_prompts + GEPA on the built-in template agent (fresh sqlite store per run, set up untimed)."""
    mlflow.set_tracking_uri(f"sqlite:///{tempfile.mkdtemp(prefix='bench-mlflow-')}/mlflow.db")
    prompt = mlflow.genai.register_prompt(name="support_router", template=SEED_ROUTER_PROMPT)
    records = support_tickets(N_TRAIN + N_VAL)
    agent = make_template_agent(prompt.uri, f"offline/support-router?latency_ms={latency_ms:g}")
    return timed(lambda: run_mlflow_gepa(
        agent, records[:N_TRAIN], records[N_TRAIN:], [prompt.uri], ["exact_match"],
        reflection_model=f"offline/reflector?latency_ms={latency_ms:g}", limits=RunLimits(max_metric_calls=BUDGET, num_threads=threads),
    ))


def main() -> None:
    """Run each backend at 1 and N threads and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["dspy", "mlflow", "both"], default="both")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    runners = {"dspy": run_dspy, "mlflow": run_mlflow}
    backends = list(runners) if args.backend == "both" else [args.backend]
    print(f"{N_TRAIN} train / {N_VAL} held-out tickets, budget {BUDGET} metric calls, {args.latency_ms:g} ms per model call")
    print(f"{'backend':8} {'threads':>7} {'wall s':>8} {'held-out':>13} {'calls':>6}")
    for backend in backends:
        walls = {}
        for threads in (1, args.threads):
            result, walls[threads] = runners[backend](threads, args.latency_ms)
            scores = f"{result.initial_score:.2f} -> {result.final_score:.2f}"
            print(f"{backend:8} {threads:>7} {walls[threads]:>8.2f} {scores:>13} {result.metric_calls:>6}")
        print(f"{backend:8} speedup {walls[1] / walls[args.threads]:.2f}x at {args.threads} threads")


if __name__ == "__main__":
    main()
