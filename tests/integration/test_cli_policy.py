"""`gepa-stream policy explain` as its own process: the effective policy of a matched prompt with
each setting's source, and a clear error (exit 2) for a name the file does not manage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POLICY = """
defaults: {task_model: openai/gpt-4.1-mini}
patterns:
  - match: "support_*"
    input_keys: [ticket]
"""


def explain(name: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "policy", "explain", name, "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


def test_policy_explain_prints_each_setting_and_its_source(tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text(POLICY)
    done = explain("support_fr", config)
    assert done.returncode == 0, done.stderr
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if line.count("│") >= 3}
    assert "openai/gpt-4.1-mini" in rows["task_model"] and "defaults" in rows["task_model"]
    assert "['ticket']" in rows["input_keys"] and "patterns (support_*)" in rows["input_keys"]
    assert "built-in" in rows["window.max_examples"]
    missing = explain("billing", config)
    assert missing.returncode == 2
    assert "'billing' is neither listed in the policy file nor matched" in missing.stderr
    assert "Traceback" not in missing.stderr
