"""`gepa-stream compare` and `optimization.ab_test` on a sqlite MLflow with the offline router:
a version pair with a known difference passes the gate, identical versions do not, and
`--promote` moves `production` (and emits the promotion event) only when it passes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from daemon import prompt_versions
from daemon.admin import ensure_topics
from daemon.cli import app as cli
from daemon.settings import load_settings
from optimization import ab_test
from optimization.offline.datasets import SEED_ROUTER_PROMPT, support_tickets
from tests.daemon_harness import read_topic
from tests.mlflow_app import PROMPT, RULED_ROUTER_PROMPT, ProductionApp

pytestmark = pytest.mark.integration

CONFIG = f"""
prompts:
  - name: {PROMPT}
    task_model: offline/support-router
    input_keys: [ticket]
    scorers: [exact_match]
    promotion: {{min_improvement: 0.05, confidence: 0.95, min_eval_examples: 20}}
"""


@pytest.fixture
def versions(tmp_path: Path) -> ProductionApp:
    """v1 = the seed router prompt (production), v2 = every routing rule stated, v3 = v1's text again."""
    app = ProductionApp(tmp_path)
    mlflow.genai.register_prompt(name=PROMPT, template=RULED_ROUTER_PROMPT)
    mlflow.genai.register_prompt(name=PROMPT, template=SEED_ROUTER_PROMPT)
    return app


def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, app: ProductionApp, bootstrap: str) -> str:
    prefix = f"c{uuid.uuid4().hex[:8]}."
    (tmp_path / "gepa-stream.yaml").write_text(CONFIG)
    for name, value in {
        "BOOTSTRAP_SERVERS": bootstrap,
        "TOPIC_PREFIX": prefix,
        "MLFLOW_TRACKING_URI": app.tracking_uri,
        "CONFIG": str(tmp_path / "gepa-stream.yaml"),
        "STATE_DIR": str(tmp_path / "state"),
    }.items():
        monkeypatch.setenv(f"GEPA_STREAM_{name}", value)
    ensure_topics(load_settings())
    return prefix


def alias_version(prompt: str) -> int | None:
    current = prompt_versions.production(prompt)
    return current.version if current else None


def test_ab_test_library_call(versions: ProductionApp) -> None:
    examples = support_tickets(40)
    result = ab_test(
        PROMPT, 1, 2, examples, ["exact_match"], model="offline/support-router", min_eval_examples=20
    )
    assert result.passed and not result.promoted
    assert len(result.scores_a) == len(result.scores_b) == 40 and sum(result.scores_b) == 40
    assert result.comparison.ci_low > 0 and result.comparison.candidate_score == 1.0
    same = ab_test(PROMPT, 1, 3, examples, ["exact_match"], model="offline/support-router", promote=True)
    assert same.comparison.decision == "inconclusive" and not same.promoted
    assert alias_version(PROMPT) == 1


def test_compare_command_promotes_only_a_passing_candidate(
    versions: ProductionApp, tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = _env(monkeypatch, tmp_path, versions, kafka_bootstrap)
    data = tmp_path / "tickets.jsonl"
    data.write_text("\n".join(json.dumps(example) for example in support_tickets(40)))
    runner = CliRunner()

    same = runner.invoke(
        cli, ["compare", "--prompt", PROMPT, "--a", "1", "--b", "3", "--data", str(data), "--promote"]
    )
    assert same.exit_code == 0, same.output
    assert "decision     inconclusive" in same.output and "not promoted" in same.output
    assert alias_version(PROMPT) == 1

    better = runner.invoke(
        cli, ["compare", "--prompt", PROMPT, "--a", "1", "--b", "2", "--data", str(data), "--promote"]
    )
    assert better.exit_code == 0, better.output
    assert "decision     promoted" in better.output and "mean B       1.000" in better.output
    assert alias_version(PROMPT) == 2
    (event,) = read_topic(kafka_bootstrap, f"{prefix}promotions", idle_s=1.0)
    assert (event.data.decision, event.data.from_version, event.data.to_version) == ("promoted", 1, 2)
    assert event.data.n_eval == 40 and event.data.ci_low > 0
    assert prompt_versions.registry(PROMPT).previous == 1, "a rollback command can undo the move"


def test_compare_reads_examples_from_an_experiment(
    versions: ProductionApp, tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, tmp_path, versions, kafka_bootstrap)
    versions.review(versions.serve(24)[:22])
    result = CliRunner().invoke(
        cli, ["compare", "--prompt", PROMPT, "--a", "1", "--b", "2", "--experiment", versions.experiment_id]
    )
    assert result.exit_code == 0, result.output
    assert "on 22 example(s)" in result.output and "decision     promoted" in result.output
    assert alias_version(PROMPT) == 1


def test_compare_needs_a_configured_prompt_and_one_data_source(
    versions: ProductionApp, tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, tmp_path, versions, kafka_bootstrap)
    runner = CliRunner()
    both_missing = runner.invoke(cli, ["compare", "--prompt", PROMPT, "--a", "1", "--b", "2"])
    unknown = runner.invoke(cli, ["compare", "--prompt", "nope", "--a", "1", "--b", "2", "--experiment", "1"])
    assert (both_missing.exit_code, unknown.exit_code) == (2, 2)
    assert "'nope' is not configured" in unknown.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"inputs": {"ticket": "x"}}\nnot json\n')
    bad_line = runner.invoke(cli, ["compare", "--prompt", PROMPT, "--a", "1", "--b", "2", "--data", str(bad)])
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps(example) for example in support_tickets(2)))
    no_version = runner.invoke(
        cli, ["compare", "--prompt", PROMPT, "--a", "1", "--b", "99", "--data", str(good)]
    )
    assert (bad_line.exit_code, no_version.exit_code) == (1, 1)
    assert bad_line.output.startswith(f"error: compare failed: {bad}:2: not JSON")
    assert no_version.output.startswith("error: compare failed: ") and "version=99" in no_version.output
    assert "Traceback" not in bad_line.output + no_version.output
