"""The import contract: the rooms import downwards only, and the ingest role stays light.

Layers: `schemas` <- `optimization` <- `handlers` <- `daemon` (a room imports only the rooms to its
left; lazy imports inside functions count too), and no module reaches itself through its imports,
inside a room either. Weight: `handlers/`, the light part of
`optimization` that handlers use, and an ingest-only daemon load no dspy, MLflow, litellm or scipy.
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
HEAVY = ("dspy", "mlflow", "litellm", "scipy")  # scipy.stats: ~64 MB, only the gate needs it


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


def module_name(path: Path) -> str:
    """`optimization/offline/judge.py` -> `optimization.offline.judge` (a package is its folder's name)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports at any depth (`from a.b import c` imports `a.b`, and
    `a.b.c` if that is a module; the packages above an imported module are not counted: a package
    that re-exports its modules lazily is a facade, not a dependency)."""
    modules = {module_name(path): path for room in ROOMS for path in (ROOT / room).rglob("*.py")}

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(known(node.module))
                found.update(
                    f"{node.module}.{alias.name}"
                    for alias in node.names
                    if f"{node.module}.{alias.name}" in modules
                )
        graph[name] = {module for module in found if module is not None and module != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: each strongly connected set of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            members = []
            while not members or members[-1] != module:
                members.append(stack.pop())
            if len(members) > 1:
                found.append(sorted(members))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_through_others() -> None:
    assert circles(import_graph()) == []


def test_a_circle_is_found_inside_a_room_and_across_rooms() -> None:
    graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "b.p": {"c.q"}, "c.q": {"b.p"}, "d.r": {"a.x"}}
    assert sorted(circles(graph)) == [["a.x", "a.y", "a.z"], ["b.p", "c.q"]]


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
