"""Event ids: deterministic, distinct per fact, and formatted only in `schemas/event_ids.py` — the
tree is read for an id built anywhere else (an f-string or concatenation passed as `id=` or
`event_id=`, an f-string carrying one of the ids' markers or extending another id, a uuid5)."""

from __future__ import annotations

import ast
from pathlib import Path

from schemas import event_ids

ROOT = Path(__file__).resolve().parents[3]
ROOMS = ("schemas", "optimization", "handlers", "daemon")
HOME = ROOT / "schemas" / "event_ids.py"
# the fixed parts of the ids event_ids.py formats: within an f-string, and at its start
MARKERS = (
    ":requested",
    ":started",
    ":retrying:",
    ":snapshot:",
    ":registered:",
    ":promotion:",
    ":guard:",
    ":eval:",
)
PREFIXES = ("dlq:", "skipped:", "mlflow:", "otel:")


def _extends_an_id(node: ast.JoinedStr) -> bool:
    """`f"{event.id}:..."`, `f"{data.request_id}:..."`: an id that starts with another one."""
    if len(node.values) < 2 or not isinstance(node.values[0], ast.FormattedValue):
        return False
    name, following = ast.unparse(node.values[0].value), node.values[1]
    return (
        name.endswith((".id", "_id"))
        and isinstance(following, ast.Constant)
        and str(following.value).startswith(":")
    )


def _built_ids(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line` of every id formatted in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.keyword) and node.arg in ("id", "event_id"):
            if isinstance(node.value, ast.JoinedStr | ast.BinOp) or (
                isinstance(node.value, ast.BoolOp)
                and any(isinstance(v, ast.JoinedStr | ast.BinOp) for v in node.value.values)
            ):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
        elif isinstance(node, ast.JoinedStr):
            text = "".join(
                v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
            )
            first = node.values[0] if node.values else None
            prefixed = isinstance(first, ast.Constant) and str(first.value).startswith(PREFIXES)
            if prefixed or any(marker in text for marker in MARKERS) or _extends_an_id(node):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("uuid5", "uuid.uuid5"):
            found.append(f"{path.relative_to(root)}:{node.lineno}")
    return sorted(found, key=lambda site: int(site.rsplit(":", 1)[1]))


def test_every_event_id_is_formatted_in_one_module() -> None:
    built = [
        site
        for room in ROOMS
        for path in sorted((ROOT / room).rglob("*.py"))
        if path != HOME
        for site in _built_ids(path)
    ]
    assert built == [], "event ids formatted outside schemas/event_ids.py"


def test_the_reader_finds_ids_built_elsewhere(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    source = (
        'build(x, id=f"{a}:{b}")\nsend(event_id=prefix + name)\nemit(event_id=given or f"{r}:{s}")\n'
        'key = f"dlq:{t}"\nannounce(f"{event.id}:{name}")\nrid = uuid.uuid5(NS, text)\nlog(f"{a}:{b}")\n'
    )
    module.write_text(source)
    assert _built_ids(module, tmp_path) == [f"probe.py:{line}" for line in range(1, 7)]


def test_request_ids_are_deterministic_per_generation() -> None:
    assert event_ids.request_id("app", "p", 1, "d") == event_ids.request_id("app", "p", 1, "d")
    assert event_ids.request_id("app", "p", 1, "d") != event_ids.request_id("app", "p", 2, "d")
    assert event_ids.request_id("app", "p", 1, "d") != event_ids.request_id("app", "q", 1, "d")
    assert event_ids.request_id("app", "p", 1, "d") != event_ids.request_id("app", "p", 1, "e")


def test_ids_of_different_facts_differ() -> None:
    ids = [
        event_ids.job_status("r", "started"),
        event_ids.job_retrying("r", 1),
        event_ids.snapshot_chunk("r", 1),
        event_ids.registered("r", "p"),
        event_ids.job_promotion("r", "p"),
        event_ids.command_outcome("r", "p"),
        event_ids.guard_verdict("r", "confirmed"),
        event_ids.command_skipped("r"),
        event_ids.dead_letter("r", 1, 1),
        event_ids.mlflow_trace("r", "p", ""),
        event_ids.mlflow_rating("r", "p", "a", 1),
        event_ids.otel_span("r", "s"),
        event_ids.otel_evaluation("r", "s", "e", 1),
    ]
    assert len(set(ids)) == len(ids)
