"""What removing repeated instructions saves (optimization/rule_dedup.py), on GEPA's real output.

Two tasks, each optimized with the library's `GepaOptimizer` (MLflow GEPA) on the offline models
with a verbose reflection model (`offline/reflector?notes=N`: every rule it adds comes with the
same N-word reminder, as a model restating its guidance does), then GEPA's template before and
after `remove_repeated_rules`: lines, tokens (litellm's bundled cl100k) and what was removed.
1. the demo's task: the support-ticket router (`offline/support-router`, 80 tickets);
2. a second task: arithmetic questions (`offline/math`, which adds unless a rule names the
   operation; 40 questions over four operations).
The plain reflector (`--notes 0`) repeats nothing: the same run then removes nothing.

    python bench/rule_dedup.py [--notes 30] [--calls 120]

Measured (one run each):

    GEPA (120 metric calls) with offline/reflector?notes=30
      support router (the demo's task)    11 ->   8 lines,   314 ->   215 tokens: 32% saved (3 repeated lines removed)
      arithmetic (a second task)           7 ->   5 lines,   164 ->    98 tokens: 40% saved (2 repeated lines removed)
    GEPA (120 metric calls) with offline/reflector
      support router (the demo's task)     7 ->   7 lines,   182 ->   182 tokens: 0% saved (0 repeated lines removed)
      arithmetic (a second task)           4 ->   4 lines,    65 ->    65 tokens: 0% saved (0 repeated lines removed)
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from schemas.third_parties import quiet_third_parties  # noqa: E402

quiet_third_parties()

import mlflow  # noqa: E402

from optimization import GepaOptimizer  # noqa: E402
from optimization.model_calls import template_tokens  # noqa: E402
from optimization.offline.datasets import SEED_ROUTER_PROMPT, support_tickets  # noqa: E402
from optimization.rule_dedup import remove_repeated_rules  # noqa: E402
from optimization.template_agent import make_template_agent  # noqa: E402

OPERATIONS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
}


def math_questions(n: int) -> list[dict[str, dict[str, str]]]:
    """`What is A op B?` with the exact answer, spread over the four operations."""
    rng = random.Random(7)
    records = []
    for i in range(n):
        op = "+-*/"[i % 4]
        a, b = rng.randint(2, 40), rng.randint(2, 12)
        value = OPERATIONS[op](a, b)
        answer = str(int(value)) if float(value).is_integer() else f"{value:g}"
        records.append(
            {"inputs": {"question": f"What is {a} {op} {b}?"}, "expectations": {"expected_response": answer}}
        )
    return records


TASKS = {
    "support router (the demo's task)": (
        "bench_router",
        SEED_ROUTER_PROMPT,
        "offline/support-router",
        support_tickets(80),
    ),
    "arithmetic (a second task)": (
        "bench_math",
        "Answer the question: {{question}}",
        "offline/math",
        math_questions(40),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=30, help="words of the reflector's note after each rule")
    parser.add_argument("--calls", type=int, default=120, help="GEPA's max_metric_calls per task")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
        reflector = f"offline/reflector?notes={args.notes}" if args.notes else "offline/reflector"
        print(
            f"GEPA ({args.calls} metric calls) with {reflector}; template lines / tokens before -> after removing repeats"
        )
        for task, (name, seed, model, records) in TASKS.items():
            prompt = mlflow.genai.register_prompt(name=name, template=seed)
            result = GepaOptimizer(reflection_model=reflector, max_metric_calls=args.calls).optimize(
                predict_fn=make_template_agent(prompt.uri, model),
                train_data=records,
                prompt_uris=[prompt.uri],
                scorers=["exact_match"],
            )
            template = result.optimized_prompts[0].template
            done = remove_repeated_rules(template)
            before, after = template_tokens(template), template_tokens(done.template)
            saved = (before - after) / before if before else 0.0
            print(
                f"  {task:<34} {len(template.splitlines()):>3} -> {len(done.template.splitlines()):>3} lines, "
                f"{before:>5} -> {after:>5} tokens: {saved:.0%} saved ({len(done.removed)} repeated lines removed)",
                flush=True,
            )


if __name__ == "__main__":
    main()
