"""A job's run directory: its files' names and formats stay what older versions wrote (a resumed job
reads them), and only `daemon/jobs/run_dir.py` knows them — the tree is read for a file name of the
directory (a string or f-string holding one) or a path joined onto a run directory anywhere else."""

from __future__ import annotations

import ast
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from daemon.jobs.run_dir import RunDir
from daemon.jobs.spec import HeldOut, JobResult, JobSpec, Progress
from schemas.config import PromptPolicy
from schemas.events import Example

ROOT = Path(__file__).resolve().parents[3]
HOME = ROOT / "daemon" / "jobs" / "run_dir.py"
# a path joined onto a run directory: `run_dir / ...`, `run.path / ...`, `RunDir(...).path / ...`,
# or a name constant joined onto any path: `... / PROGRESS_FILE`, `... / GEPA_DIR`
RUN_DIR_OPERAND = re.compile(r"\brun_dirs?\b|\brun\.path\b|\bRunDir\(")
NAME_CONSTANT = re.compile(r"^[A-Z][A-Z0-9_]*_(FILE|DIR|DB|LOG)$")


def _names(home: Path = HOME) -> set[str]:
    """The module-level strings of run_dir.py: every name in a run directory."""
    return {
        node.value.value
        for node in ast.parse(home.read_text()).body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes in `tree` (they may name the files they document)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _run_dir_sites(path: Path, names: set[str], root: Path = ROOT) -> list[str]:
    """`file:line` of every run-directory file name and every join onto a run directory in `path`."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = _docstrings(tree)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value in names or any("." in name and name in node.value for name in names):
                found.add(node.lineno)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            if RUN_DIR_OPERAND.search(ast.unparse(node.left)) or NAME_CONSTANT.match(ast.unparse(node.right)):
                found.add(node.lineno)
    return [f"{path.relative_to(root)}:{line}" for line in sorted(found)]


def test_only_run_dir_py_knows_the_files_of_a_run_directory() -> None:
    names = _names()
    assert {"job.json", "result.json", "attempts.json", "run.lock", "gepa"} <= names
    sites = [
        site
        for path in sorted((ROOT / "daemon").rglob("*.py"))
        if path != HOME
        for site in _run_dir_sites(path, names)
    ]
    assert sites == [], "run-directory files named or joined outside daemon/jobs/run_dir.py"


def test_the_reader_finds_names_and_joins_elsewhere(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    source = (
        '"""Reads `result.json` (a docstring may name it)."""\n'
        'a = run_dir / "anything"\n'
        'b = read(path, "progress.json")\n'
        "c = run.path / name\n"
        'd = f"{x}/job.log"\n'
        "e = RunDir(p).path / NAME\n"
        "f = self.jobs_dir / request_id / PROGRESS_FILE\n"
        'g = jobs_dir / request_id / "x"\n'
        'h = "gepa-stream"\n'
    )
    module.write_text(source)
    names = {"result.json", "progress.json", "job.log", "gepa"}
    assert _run_dir_sites(module, names, tmp_path) == [f"probe.py:{line}" for line in range(2, 8)]


SPEC = JobSpec(
    request_id="r1",
    prompt="p",
    policy=PromptPolicy.model_validate({"name": "p", "input_keys": ["q"]}),
    tracking_uri="sqlite:///unused.db",
    window_size=1,
)


def test_the_files_keep_their_names_and_formats(tmp_path: Path) -> None:
    """What older versions wrote and a resumed job reads: indented JSON models, the window as a
    compact list, checkpoints computed once, retryable results and working state set aside by attempt."""
    run = RunDir(tmp_path)
    assert not run.inputs_frozen() and run.spec_if_frozen() is None and run.result() is None
    example = Example(trace_id="t1", inputs={"q": "x"}, time=datetime(2026, 1, 1, tzinfo=UTC))
    run.freeze_inputs(SPEC, [example])
    assert run.inputs_frozen() and run.spec() == run.spec_if_frozen() == SPEC
    assert (tmp_path / "job.json").read_text() == SPEC.model_dump_json(indent=2)
    assert (tmp_path / "examples.json").read_text() == json.dumps([example.model_dump(mode="json")])
    assert run.examples() == [example]

    run.write_progress(Progress(stage="plan", pid=7))
    assert json.loads((tmp_path / "progress.json").read_text())["stage"] == "plan"
    (tmp_path / "progress.json").write_text('{"stage": "pl')  # half-written
    assert run.progress() is None

    calls: list[int] = []
    held = HeldOut(baseline=[0.0], candidate=[1.0])
    for _ in range(2):
        assert run.checkpoint_scores(lambda: calls.append(1) or held) == held
    assert calls == [1] and HeldOut.model_validate_json((tmp_path / "scores.json").read_bytes()) == held

    run.write_result(JobResult(status="failed", outage="MLflow"))
    run.set_result_aside(2)
    assert run.result() is None
    assert JobResult.model_validate_json((tmp_path / "result.attempt-2.json").read_bytes()).outage == "MLflow"

    run.gepa_dir.mkdir()
    run.scratch_db.write_bytes(b"db")
    run.set_working_state_aside(3)
    assert (tmp_path / "gepa.attempt-3").is_dir() and (tmp_path / "scratch-mlflow.db.attempt-3").exists()

    run.record_holder("start")
    what, pid, ns = (tmp_path / "holders.log").read_text().split()
    assert what == "start" and int(pid) > 0 and int(ns) > 0
    assert run.job_log == tmp_path / "job.log" and run.lock_file == tmp_path / "run.lock"
    assert not list(tmp_path.glob("*.tmp")), "every write is renamed into place"
