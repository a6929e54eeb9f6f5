"""The pieces of the gate's limits a job uses: the offline reflector's `notes` option (its prompts
grow), the task-call meter of the held-out evaluation (offline calls counted in tokens, priced only
when the policy prices them), a version's cost figures and tags, and the choice of the best
candidate within `max_template_tokens`."""

from __future__ import annotations

from pathlib import Path

import dspy
import pytest

from daemon.jobs.usage import version_cost
from optimization.backends import longest_template, within_template_limit
from optimization.model_calls import (
    CallPolicy,
    Price,
    UsageTally,
    governed,
    metered_task_calls,
    template_tokens,
)
from optimization.models import complete_text, make_lm, parse_model
from optimization.offline.datasets import SEED_ROUTER_PROMPT
from optimization.offline.reflector import propose_instruction
from optimization.offline.rules import format_expected, parse_rules
from optimization.registry import cost_tags
from optimization.results import Candidate
from schemas.events import VersionCost

FAILED_REFUND = {
    "inputs": {"ticket": "I want a refund"},
    "outputs": "account",
    "score": 0.0,
    "rationales": {"exact_match": format_expected("billing")},
}


def test_a_verbose_reflector_writes_a_note_after_each_rule_and_the_router_ignores_it() -> None:
    plain = propose_instruction(SEED_ROUTER_PROMPT, [FAILED_REFUND])
    verbose = propose_instruction(SEED_ROUTER_PROMPT, [FAILED_REFUND], notes=60)
    lines = verbose.splitlines()
    assert lines[-1] == "Ticket: {{ticket}}"
    [note] = [line for line in lines if line.startswith("Note: ")]
    assert len(note.split()) == 61 and lines[lines.index(note) - 1].startswith("Rule: ")
    assert parse_rules(verbose) == parse_rules(plain)
    assert template_tokens(verbose) > template_tokens(plain) + 60
    prompt = verbose.replace("{{ticket}}", "I was charged twice, please refund")
    assert complete_text("offline/support-router", prompt) == "billing"


def test_the_notes_option() -> None:
    assert parse_model("offline/reflector?notes=60").notes == 60
    assert parse_model("offline/reflector").notes == 0
    for bad in (
        "offline/reflector?notes=-1",
        "offline/reflector?notes=many",
        "offline/support-router?notes=3",
    ):
        with pytest.raises(ValueError, match="notes"):
            parse_model(bad, "reflection_model")
    lm = make_lm("offline/reflector?notes=5", role="reflection")
    assert lm.engine.notes == 5  # type: ignore[attr-defined]


def test_the_meter_counts_offline_task_calls_in_tokens_and_prices_them_only_when_priced() -> None:
    prompt = SEED_ROUTER_PROMPT.replace("{{ticket}}", "my app crashes")
    complete_text("offline/support-router", prompt)  # no meter: nothing counted anywhere
    with metered_task_calls() as tally:
        answer = complete_text("offline/support-router", prompt)
        complete_text("offline/support-router", prompt)
    assert (tally.calls, tally.prompt_tokens) == (2, 2 * template_tokens(prompt))
    assert tally.completion_tokens == 2 * template_tokens(answer)
    assert tally.cost_usd == 0.0 and tally.cost_unknown
    priced = CallPolicy(prices={"offline/support-router": Price(input=1.0, output=2.0)})
    with governed(priced), metered_task_calls() as tally:
        complete_text("offline/support-router", prompt)
    expected = (template_tokens(prompt) * 1.0 + template_tokens(answer) * 2.0) / 1_000_000
    assert tally.cost_usd == pytest.approx(expected) and not tally.cost_unknown


def test_the_meter_counts_dspy_task_calls_of_offline_models_but_not_reflections() -> None:
    program = dspy.Predict(dspy.Signature("ticket -> category", "Route tickets."))
    with metered_task_calls() as tally, dspy.context(lm=make_lm("offline/support-router")):
        program(ticket="I was charged twice")
    assert tally.calls == 1 and tally.prompt_tokens > 10 and tally.completion_tokens > 0
    reflection = dspy.Predict("current_instruction, examples_with_feedback -> new_instruction")
    with metered_task_calls() as tally, dspy.context(lm=make_lm("offline/reflector")):
        reflection(current_instruction="Route.", examples_with_feedback="[]")
    assert tally.calls == 0


def test_version_cost_and_its_tags() -> None:
    templates = {"a": "short {{x}}", "b": "a much longer template for the other predictor {{y}}"}
    tally = UsageTally(calls=4, prompt_tokens=400, completion_tokens=20, cost_usd=0.002)
    cost = version_cost(templates, tally)
    assert cost == VersionCost(
        template_tokens=longest_template(templates), calls=4, tokens_per_call=105.0, cost_per_call_usd=0.0005
    )
    assert version_cost(templates, UsageTally()).tokens_per_call is None
    baseline = VersionCost(template_tokens=10)
    assert cost_tags(baseline, cost) == {
        "gepa_stream.template_tokens": str(cost.template_tokens),
        "gepa_stream.tokens_per_call": "105.0",
        "gepa_stream.cost_per_call_usd": "0.0005",
        "gepa_stream.cost_unknown": "false",
        "gepa_stream.baseline_template_tokens": "10",
    }
    assert cost_tags(None, None) == {}


def _candidates(*sizes_and_scores: tuple[int, float]) -> list[Candidate]:
    return [Candidate({"p": " ".join(["word"] * size)}, score) for size, score in sizes_and_scores]


def test_gepas_best_is_kept_within_the_limit_or_without_one() -> None:
    candidates = _candidates((10, 0.1), (100, 0.7), (300, 0.9))
    best = candidates[2].texts
    assert within_template_limit(best, candidates, None) == (best, None)
    assert within_template_limit(best, candidates, 400) == (best, None)


def test_the_best_candidate_within_the_limit_is_chosen() -> None:
    candidates = _candidates((10, 0.1), (100, 0.7), (150, 0.8), (120, 0.8), (300, 0.9))
    templates, why = within_template_limit(candidates[4].texts, candidates, 200)
    assert templates == candidates[2].texts  # 0.8 twice: the earlier
    assert why is not None
    assert why.startswith(
        "chose candidate 2 of GEPA's 5 (validation score 0.800, 150 tokens): the best within"
    )
    assert why.endswith("GEPA's best (validation score 0.900) has 300 tokens")


def test_only_the_seed_within_the_limit_keeps_gepas_best_for_the_gate() -> None:
    candidates = _candidates((10, 0.1), (100, 0.7), (300, 0.9))
    templates, why = within_template_limit(candidates[2].texts, candidates, 50)
    assert templates == candidates[2].texts
    assert why == (
        "none of the 2 candidates GEPA proposed is within max_template_tokens 50 (GEPA's best has 300 tokens): "
        "GEPA's best is kept"
    )


def test_candidates_are_renamed_as_the_backend_names_its_templates() -> None:
    candidates = _candidates((10, 0.1), (100, 0.7), (300, 0.9))
    templates, _ = within_template_limit(
        {"prog_p": candidates[2].texts["p"]},
        candidates,
        200,
        lambda texts: {f"prog_{k}": v for k, v in texts.items()},
    )
    assert templates == {"prog_p": candidates[1].texts["p"]}


def test_dspy_gepas_candidate_list_is_read_for_the_choice(tmp_path: Path) -> None:
    """dspy.GEPA's `detailed_results` holds every candidate with its validation aggregate, keyed
    like the optimized program's instructions: the DSPy backend chooses from it the same way."""
    from examples.router_program import make_program
    from optimization import RunLimits, run_dspy_gepa
    from optimization.offline.datasets import support_tickets

    examples = [
        dspy.Example(
            ticket=r["inputs"]["ticket"], category=r["expectations"]["expected_response"]
        ).with_inputs("ticket")
        for r in support_tickets(40)
    ]
    with dspy.context(lm=make_lm("offline/support-router")):
        result = run_dspy_gepa(
            make_program(),
            examples[:20],
            examples[20:],
            reflection_model="offline/reflector?notes=60",
            limits=RunLimits(max_metric_calls=150, run_dir=str(tmp_path / "gepa")),
        )
    sizes = [longest_template(c.texts) for c in result.candidates]
    assert len(sizes) >= 3 and sizes == sorted(sizes)  # every reflection adds rules and notes
    assert longest_template(result.instructions) == sizes[-1]
    limit = (sizes[1] + sizes[-1]) // 2
    templates, why = within_template_limit(result.instructions, result.candidates, limit)
    assert longest_template(templates) <= limit < sizes[-1]
    assert why is not None and f"the best within max_template_tokens {limit}" in why


def test_a_held_out_checkpoint_older_than_the_measurement_still_gets_the_template_lengths(
    tmp_path: Path,
) -> None:
    """A job resumed on a `scores.json` written before costs were measured: the scores stay frozen,
    the templates' lengths are filled in (the per-call figures stay unknown), so the template limit
    still holds."""
    from daemon.jobs.execute import ProgressFile, _evaluate
    from daemon.jobs.run_dir import RunDir
    from daemon.jobs.spec import CandidateCheckpoint, HeldOut
    from optimization.prompt_version import Version

    run = RunDir(tmp_path)
    run.checkpoint_scores(lambda: HeldOut(baseline=[0.0, 1.0], candidate=[1.0, 1.0]))
    baseline = {"p": Version("p", 1, "short {{x}}", {})}
    candidate = CandidateCheckpoint(templates={"p": " ".join(["word"] * 50) + " {{x}}"}, metric_calls=3)
    held = _evaluate(run, None, [], baseline, candidate, ProgressFile(run, "p", 1))  # type: ignore[arg-type]
    assert held.candidate == [1.0, 1.0]
    assert held.baseline_cost == VersionCost(template_tokens=template_tokens("short {{x}}"))
    assert held.candidate_cost is not None and held.candidate_cost.template_tokens > 50
    assert held.candidate_cost.tokens_per_call is None
