"""The import contract: the rooms import downwards only, and the ingest role stays light.

Layers: `schemas` <- `optimization` <- `handlers` <- `daemon` (a room imports only the rooms to its
left; lazy imports inside functions count too). Weight: `handlers/`, the light part of
`optimization` that handlers use, and an ingest-only daemon load no dspy, MLflow or litellm.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("schemas", "optimization", "handlers", "daemon")
ALLOWED = {
    "schemas": set(),
    "optimization": {"schemas"},
    "handlers": {"schemas", "optimization"},
    "daemon": {"schemas", "optimization", "handlers"},
}
HEAVY = ("dspy", "mlflow", "litellm")


def project_imports(path: Path) -> set[tuple[str, int]]:
    """(room, line) of every import of another project room in a module, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found.update((name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in ROOMS)
    return found


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_imports_only_the_rooms_below_it(room: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {other}"
        for path in sorted((ROOT / room).rglob("*.py"))
        for other, line in sorted(project_imports(path))
        if other != room and other not in ALLOWED[room]
    ]
    assert not wrong, "\n".join(wrong)


def _loaded_heavy(code: str) -> list[str]:
    """Run `code` in a fresh interpreter; the heavy libraries it left in sys.modules."""
    probe = textwrap.dedent(code) + f"\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


def test_handlers_and_what_they_use_of_optimization_load_no_dspy_mlflow_or_litellm() -> None:
    assert (
        _loaded_heavy(
            """
            import importlib, pkgutil
            import handlers, schemas
            for package in (schemas, handlers):
                for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
                    importlib.import_module(module.name)
            import optimization
            optimization.OptimizationFailed, optimization.RatedExample
            """
        )
        == []
    )


def test_an_ingest_only_daemon_loads_no_dspy_mlflow_or_litellm(tmp_path: Path) -> None:
    config = tmp_path / "gepa-stream.yaml"
    config.write_text("prompts: [{name: a}, {name: b, backend: dspy, program: 'mypkg.agent:make'}]")
    assert (
        _loaded_heavy(
            f"""
            import os
            os.environ["GEPA_STREAM_STATE_DIR"] = {str(tmp_path / "state")!r}
            from pathlib import Path
            import daemon.cli
            from daemon.settings import load_config
            from daemon.worker import Daemon
            settings, policies = load_config(Path({str(config)!r}))
            daemon = Daemon(settings, policies, "ingest")
            assert daemon.ingest is not None and daemon.runner is None
            """
        )
        == []
    )


def test_the_optimizer_library_still_exports_the_design_guide_names_lazily() -> None:
    import optimization

    tree = ast.parse((ROOT / "optimization" / "__init__.py").read_text())
    typed = {
        (node.module, alias.name)
        for block in tree.body
        if isinstance(block, ast.If)
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    lazy = {(module, name) for module, names in optimization._MODULES.items() for name in names}
    assert typed == lazy and sorted(optimization.__all__) == sorted(name for _, name in lazy)
    submodules = {path.stem for path in (ROOT / "optimization").iterdir()}
    assert not submodules & set(optimization.__all__), "importing that submodule would shadow the name"
    for name in optimization.__all__:
        assert getattr(optimization, name) is not None
    from optimization import DSPyGepaOptimizer, GepaOptimizer, HumanFeedbackOptimizer, PromptOptimizer

    assert all(
        isinstance(c, type)
        for c in (DSPyGepaOptimizer, GepaOptimizer, HumanFeedbackOptimizer, PromptOptimizer)
    )
